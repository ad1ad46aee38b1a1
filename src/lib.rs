//! switchyard: a load balancer and API gateway. The library holds everything; `main.rs` only
//! parses the command line and wires signals. Tests, benches and fuzz targets use this crate.
pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod etcd;
pub mod fdlimit;
pub mod fleet;
pub mod health;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod registry;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
