//! One active health check: `GET <endpoint>` over a fresh connection, success on a 2xx head
//! within the timeout. Every failure comes back with a reason for the log.
use crate::http::head::Scan;
use crate::http::response::{self, ResponseHead};
use crate::upstream::Upstream;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Runs one check; Ok(response time) on success, Err(reason) on failure.
pub async fn check(u: &Upstream, endpoint: &str, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, attempt(u, endpoint)).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn attempt(u: &Upstream, endpoint: &str) -> Result<(), String> {
    let addrs = u
        .dns
        .addrs(&u.address)
        .await
        .map_err(|e| format!("resolve: {e}"))?;
    let addr = addrs.first().ok_or("no address")?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "GET {endpoint} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n",
        u.address
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    let len = loop {
        match crate::http::head::scan(&buf, 0, 16 * 1024) {
            Ok(Scan::Complete(n)) => break n,
            Ok(Scan::Partial) => {}
            Err(_) => return Err("invalid response head".into()),
        }
        match tokio::io::AsyncReadExt::read_buf(&mut s, &mut buf).await {
            Ok(0) => return Err("connection closed before a response".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let mut head = ResponseHead::default();
    response::parse(&buf, len, &mut head).map_err(|_| "invalid response head".to_string())?;
    if (200..300).contains(&head.status) {
        Ok(())
    } else {
        Err(format!("status {}", head.status))
    }
}
