//! The data plane: listeners, the per-connection session, the phases a request goes through
//! (read → route → connect → send → relay → finish), upstream connections, body streaming and
//! tunnels. It reads shared state (the table, health cells) and never writes it.
pub(crate) mod auth_limit;
pub(crate) mod body;
pub(crate) mod bufpool;
pub(crate) mod connect;
pub(crate) mod counted;
pub(crate) mod deadline;
pub(crate) mod downstream;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod finish;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod io;
pub(crate) mod l4;
pub(crate) mod listener;
pub(crate) mod proxy_protocol;
pub(crate) mod read;
pub(crate) mod relay;
pub(crate) mod replay;
pub mod request_id;
pub(crate) mod route;
pub(crate) mod send;
pub(crate) mod session;
pub(crate) mod splice;
pub(crate) mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod tunnel;
pub(crate) mod upstream;
pub(crate) mod upstream_h2;
