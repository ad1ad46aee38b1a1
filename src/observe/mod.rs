//! What switchyard tells operators about its traffic: the access log (`access_log`) and the
//! process figures of `/metrics` (`process`).
pub mod access_log;
pub mod process;
