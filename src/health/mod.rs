//! Health of every address switchyard routes to: a lock-free cell the data plane reads, the
//! pure state machine that decides transitions, and the checker tasks that drive it.
pub mod cell;
pub use cell::{HealthCell, Status};
