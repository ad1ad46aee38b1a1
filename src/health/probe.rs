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
    /// The gRPC health protocol (`health_check_endpoint = "grpc"`, HTTP/2 backends).
    Grpc,
}

impl std::fmt::Display for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http(ep) => f.write_str(ep),
            Probe::Tcp => f.write_str(" (tcp connect)"),
            Probe::Grpc => f.write_str(" (grpc.health.v1.Health/Check)"),
        }
    }
}

/// How `u` is actively checked; None: not at all (always UP). Here rather than on `Upstream`,
/// so that the upstream module does not depend on the checks that depend on it.
pub fn of(u: &Upstream) -> Option<Probe<'_>> {
    match &u.health_endpoint {
        Some(ep) if u.protocol.is_h2() && ep == super::grpc::ENDPOINT => Some(Probe::Grpc),
        Some(ep) => Some(Probe::Http(ep)),
        None if u.tcp_check => Some(Probe::Tcp),
        None => None,
    }
}

pub use super::CheckError;

/// Runs one check; Ok(response time) on success.
pub async fn check(
    u: &Upstream,
    probe: Probe<'_>,
    timeout: Duration,
) -> Result<Duration, CheckError> {
    let start = Instant::now();
    let attempt = async {
        match probe {
            Probe::Http(endpoint) if u.protocol.is_h2() => {
                super::grpc::check(u, connect(u).await?, Some(endpoint)).await
            }
            Probe::Http(endpoint) => attempt(u, endpoint).await,
            Probe::Tcp => connect(u).await.map(drop),
            Probe::Grpc => super::grpc::check(u, connect(u).await?, None).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CheckError::Failed(format!("no answer within {timeout:?}"))),
    }
}

/// EMFILE/ENFILE are ours, anything else the backend's.
fn classify(what: &str, e: std::io::Error) -> CheckError {
    if crate::fdlimit::is_exhaustion(&e) {
        CheckError::Local(format!("{what}: {e} (local: out of file descriptors)"))
    } else {
        CheckError::Failed(format!("{what}: {e}"))
    }
}

async fn connect(u: &Upstream) -> Result<tokio::net::TcpStream, CheckError> {
    let addrs = u
        .dns
        .addrs(&u.address)
        .await
        .map_err(|e| classify("resolve", e))?;
    let addr = addrs
        .first()
        .ok_or_else(|| CheckError::Failed("no address".into()))?;
    tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| classify("connect", e))
}

async fn attempt(u: &Upstream, endpoint: &str) -> Result<(), CheckError> {
    let tcp = connect(u).await?;
    let fail = |m: String| CheckError::Failed(m);
    let mut s = match &u.tls {
        None => crate::proxy::stream::BackendStream::Plain(tcp),
        Some(t) => crate::proxy::stream::BackendStream::Tls(Box::new(
            t.handshake(tcp, &u.address)
                .await
                .map_err(|e| fail(e.to_string()))?,
        )),
    };
    let req = format!(
        "GET {endpoint} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n",
        u.address
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| fail(format!("send: {e}")))?;
    let mut buf = BytesMut::with_capacity(1024);
    let len = loop {
        match crate::http::head::scan(&buf, 0, 16 * 1024) {
            Ok(Scan::Complete(n)) => break n,
            Ok(Scan::Partial) => {}
            Err(_) => return Err(fail("invalid response head".into())),
        }
        match tokio::io::AsyncReadExt::read_buf(&mut s, &mut buf).await {
            Ok(0) => return Err(fail("connection closed before a response".into())),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("read: {e}"))),
        }
    };
    let mut head = ResponseHead::default();
    response::parse(&buf, len, &mut head).map_err(|_| fail("invalid response head".into()))?;
    if (200..300).contains(&head.status) {
        Ok(())
    } else {
        Err(fail(format!("status {}", head.status)))
    }
}
