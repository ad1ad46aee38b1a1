//! Getting a connection to a backend: an idle pooled one, or a new connect with a timeout,
//! walking the candidate list on failure. Only connect failures are retried.
use crate::upstream::own::OwnListeners;
use crate::upstream::Upstream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A connection to an upstream and whether it came from the idle pool.
pub struct Checkout {
    pub upstream: Arc<Upstream>,
    pub stream: TcpStream,
    pub reused: bool,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The candidate list was empty: nothing healthy.
    NoCandidates,
    /// Every candidate failed to connect; the last error.
    AllFailed(String),
}

fn own_listener() -> std::io::Error {
    std::io::Error::other("refused: that is one of switchyard's own listeners (a loop)")
}

/// Connects one upstream (pool first). An address that is one of our own listeners is never
/// connected to, or, when only the connection shows it (a wildcard listener reached through
/// one of this host's addresses), dropped at once: a loop would otherwise hold a connection
/// per round trip until file descriptors run out.
pub async fn connect_one(
    u: &Upstream,
    connect_timeout: Duration,
    idle_timeout: Duration,
    own: &OwnListeners,
) -> std::io::Result<(TcpStream, bool)> {
    if let Some(s) = u.idle.checkout(idle_timeout) {
        return Ok((s, true));
    }
    let addrs = u.dns.addrs(&u.address).await?;
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        let suspect = own.has_port(a.port());
        if suspect && own.is_own(None, a) {
            last = own_listener();
            continue;
        }
        match tokio::time::timeout(connect_timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) if suspect && own.is_own(s.local_addr().ok(), a) => last = own_listener(),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, false));
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// Takes the first candidate that connects; each is tried at most once (SPEC §4).
pub async fn checkout<'a>(
    candidates: impl Iterator<Item = &'a Arc<Upstream>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    own: &OwnListeners,
) -> Result<Checkout, ConnectError> {
    let mut last: Option<String> = None;
    for u in candidates {
        match connect_one(u, connect_timeout, idle_timeout, own).await {
            Ok((stream, reused)) => {
                return Ok(Checkout {
                    upstream: u.clone(),
                    stream,
                    reused,
                })
            }
            Err(e) => {
                u.stats.connect_failures.fetch_add(1, Relaxed);
                log::warn!(
                    "connect to {} failed: {e}; trying the next candidate",
                    u.label
                );
                last = Some(format!("{}: {e}", u.label));
            }
        }
    }
    Err(match last {
        None => ConnectError::NoCandidates,
        Some(e) => ConnectError::AllFailed(e),
    })
}
