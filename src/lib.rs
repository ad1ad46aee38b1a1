//! switchyard: a load balancer and API gateway. The library holds everything; `main.rs` only
//! parses the command line and wires signals. Tests, benches and fuzz targets use this crate.
pub mod config;
pub mod health;
pub mod http;
pub mod routing;
pub mod upstream;
