//! switchyard: a load balancer and API gateway. The library holds everything; `main.rs` only
//! sets up logging and calls `cli::main`.
//!
//! The public surface is what the binary, `tests/`, `benches/` and `fuzz/` use, and no more:
//! `cli` (the entry point), `server` + `state` + `control` (start, drain, reload a running
//! instance), `config` (parse and the validated model), `http` (the pure wire rules the fuzz
//! targets and benches drive), `routing` (building and querying tables), `registry`
//! (registration documents), `upstream::set`, `proxy::request_id` and `etcd` (the client, for
//! its own tests). Inside those, submodules nobody outside needs are `pub(crate)`; every other
//! module is `pub(crate)` as a whole, so the compiler reports what nothing uses.
pub(crate) mod admin;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod control;
pub(crate) mod demo;
pub mod etcd;
pub(crate) mod fdlimit;
pub(crate) mod fleet;
pub(crate) mod health;
pub mod http;
pub(crate) mod metrics;
pub(crate) mod observe;
pub mod proxy;
pub mod registry;
pub(crate) mod resilience;
pub mod routing;
pub mod server;
pub mod state;
pub(crate) mod tls;
pub mod upstream;
pub(crate) mod workers;
