//! Health of every address switchyard routes to: a lock-free cell the data plane reads, the
//! pure state machine that decides transitions, and the checker tasks that drive it.
pub mod cell;
pub mod checker;
pub mod grpc;
pub mod probe;
pub mod state;
pub use cell::{HealthCell, Status};
