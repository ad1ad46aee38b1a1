//! The data plane: listeners, the per-connection session, the phases a request goes through
//! (read → route → connect → send → relay → finish), upstream connections, body streaming and
//! tunnels. It reads shared state (the table, health cells) and never writes it.
pub mod auth_limit;
pub mod body;
pub mod bufpool;
pub(crate) mod connect;
pub(crate) mod counted;
pub(crate) mod downstream;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod finish;
pub(crate) mod h1;
pub mod h2;
pub mod io;
pub mod l4;
pub mod listener;
pub mod proxy_protocol;
pub(crate) mod read;
pub(crate) mod relay;
pub(crate) mod replay;
pub mod request_id;
pub(crate) mod route;
pub(crate) mod send;
pub mod session;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod tunnel;
pub mod upstream;
pub mod upstream_h2;
