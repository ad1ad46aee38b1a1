//! After a 101 (or a 2xx to CONNECT) the connection stops being HTTP: bytes are spliced both
//! ways until either side closes; half-closes are passed on.
use super::io::write_all;
use bytes::BytesMut;
use std::time::Duration;
use tokio::net::TcpStream;

/// Splices `client` and `upstream`, first delivering bytes each side already sent that were
/// read past the heads.
pub async fn splice(
    mut client: TcpStream,
    client_pending: &mut BytesMut,
    mut upstream: TcpStream,
    upstream_pending: &mut BytesMut,
    write_timeout: Duration,
) -> std::io::Result<(u64, u64)> {
    if !client_pending.is_empty() {
        write_all(&mut upstream, client_pending, write_timeout).await?;
        client_pending.clear();
    }
    if !upstream_pending.is_empty() {
        write_all(&mut client, upstream_pending, write_timeout).await?;
        upstream_pending.clear();
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await
}
