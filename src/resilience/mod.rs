//! What keeps a misbehaving backend from becoming the client's problem (SPEC §11): passive
//! health (`outlier`), the retry decision (`policy`) and its budget (`budget`), and holding
//! requests through a cold start (`hold`). Pure logic on atomics, no sockets; the proxy calls
//! into it.
pub mod budget;
pub mod hold;
pub mod outlier;
pub mod policy;
pub mod pool_rt;
