//! Health of every address switchyard routes to: a lock-free cell the data plane reads, the
//! pure state machine that decides transitions, and the checker tasks that drive it.
pub mod cell;
pub mod checker;
pub mod grpc;
pub mod probe;
pub mod state;
pub use cell::{HealthCell, Status};

/// Why a check did not succeed (here, not in `probe.rs`: the HTTP/1 and the gRPC checks
/// both return it, and the HTTP/1 one calls the gRPC one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The backend failed the check: it counts.
    Failed(String),
    /// This process could not run the check (out of file descriptors): says nothing about
    /// the backend, so it must not count against it.
    Local(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Failed(m) | CheckError::Local(m) => f.write_str(m),
        }
    }
}
