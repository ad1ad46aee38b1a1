//! After a 101 (or a 2xx to CONNECT) the connection stops being HTTP: bytes are spliced both
//! ways until either side closes (half-closes are passed on) or the tunnel has been idle both
//! ways for an hour, HAProxy's `timeout tunnel` idea with the L4 listeners' default.
use super::io::write_all;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Splices `client` and `upstream`, first delivering bytes each side already sent that were
/// read past the heads.
pub async fn splice<
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
>(
    mut client: C,
    client_pending: &mut BytesMut,
    mut upstream: U,
    upstream_pending: &mut BytesMut,
    write_timeout: Duration,
) -> std::io::Result<super::l4::Flow> {
    let (early_up, early_down) = (client_pending.len() as u64, upstream_pending.len() as u64);
    if !client_pending.is_empty() {
        write_all(&mut upstream, client_pending, write_timeout).await?;
        client_pending.clear();
    }
    if !upstream_pending.is_empty() {
        write_all(&mut client, upstream_pending, write_timeout).await?;
        upstream_pending.clear();
    }
    // WebSockets idle far longer than a request does; an hour without a byte either way is
    // a dead peer, not a quiet one.
    let mut flow = super::l4::splice_any(client, upstream, crate::config::tcp::DEFAULT_IDLE).await;
    flow.up += early_up;
    flow.down += early_down;
    Ok(flow)
}
