//! The data plane: listeners, the per-connection request loop, upstream connections, body
//! streaming and tunnels. It reads shared state (the table, health cells) and never writes it.
pub mod auth_limit;
pub mod body;
pub mod bufpool;
pub mod conn;
pub mod io;
pub mod l4;
pub mod listener;
pub mod proxy_protocol;
pub mod request_id;
pub mod tunnel;
pub mod upstream;
