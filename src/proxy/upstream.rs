//! Getting a connection to a backend: an idle pooled one, or a new connect with a timeout,
//! walking the candidate list on failure. Only connect failures are retried.
use crate::registry::self_target::OwnListeners;
use crate::upstream::Upstream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Attempts, and the pause between them, when a connect fails for want of a descriptor.
const LOCAL_RETRIES: u32 = 2;
const LOCAL_RETRY_DELAY: Duration = Duration::from_millis(20);

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

/// Connects one upstream (pool first). An address that leads to one of switchyard's own
/// listeners is never connected to, checked on every connect because a DNS name can start
/// pointing at us after it was configured or registered: a loop would hold a connection per
/// round trip until descriptors run out.
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
        if let Some(l) = own.find(a) {
            last = std::io::Error::other(format!(
                "refused: {a} is one of switchyard's own listeners ({} {}), a loop",
                l.role, l.addr
            ));
            continue;
        }
        let mut local_retries = LOCAL_RETRIES;
        let connected = loop {
            let r = tokio::time::timeout(connect_timeout, TcpStream::connect(a)).await;
            match r {
                // Out of descriptors: ours, not the backend's. Another connection may close in
                // a moment; a short wait beats a 503.
                Ok(Err(e)) if crate::fdlimit::is_exhaustion(&e) && local_retries > 0 => {
                    local_retries -= 1;
                    tokio::time::sleep(LOCAL_RETRY_DELAY).await;
                }
                other => break other,
            }
        };
        match connected {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, false));
            }
            Ok(Err(e)) if crate::fdlimit::is_exhaustion(&e) => return Err(e),
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
            Err(e) if crate::fdlimit::is_exhaustion(&e) => {
                // Every other candidate would fail the same way, and none of them is at fault.
                crate::fdlimit::count(crate::fdlimit::Site::Connect);
                log::warn!(
                    "connect to {} could not start: {e} (local: out of file descriptors)",
                    u.label
                );
                return Err(ConnectError::AllFailed(format!("local: {e}")));
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
