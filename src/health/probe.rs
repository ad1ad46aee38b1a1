//! One active health check: `GET <endpoint>` over a fresh connection, success on a 2xx head
//! within the timeout; or, for L4 targets, a bare TCP connect. Failures come with a reason.
//! A TLS backend is checked over TLS, its certificate verified as for traffic.
use crate::http::head::Scan;
use crate::http::response::{self, ResponseHead};
use crate::upstream::Upstream;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe<'a> {
    /// `GET` this path; a 2xx is a success.
    Http(&'a str),
    /// Connect and close; an accepted connection is a success.
    Tcp,
}

impl std::fmt::Display for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http(ep) => f.write_str(ep),
            Probe::Tcp => f.write_str(" (tcp connect)"),
        }
    }
}

/// Runs one check; Ok(response time) on success, Err(reason) on failure.
pub async fn check(u: &Upstream, probe: Probe<'_>, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let attempt = async {
        match probe {
            Probe::Http(endpoint) => attempt(u, endpoint).await,
            Probe::Tcp => connect(u).await.map(drop),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn connect(u: &Upstream) -> Result<tokio::net::TcpStream, String> {
    let addrs = u
        .dns
        .addrs(&u.address)
        .await
        .map_err(|e| format!("resolve: {e}"))?;
    let addr = addrs.first().ok_or("no address")?;
    tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn attempt(u: &Upstream, endpoint: &str) -> Result<(), String> {
    let tcp = connect(u).await?;
    let mut s = match &u.tls {
        None => crate::proxy::stream::BackendStream::Plain(tcp),
        Some(t) => crate::proxy::stream::BackendStream::Tls(Box::new(
            t.handshake(tcp, &u.address)
                .await
                .map_err(|e| e.to_string())?,
        )),
    };
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
