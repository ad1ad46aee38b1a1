//! Getting a connection to a backend: an idle pooled one, or a new connect with a timeout,
//! walking the candidate list on failure. Only connect failures are retried; for a TLS
//! backend the handshake (and the verification of its certificate) is part of the connect.
use super::stream::BackendStream;
use crate::registry::self_target::OwnListeners;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
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
    pub stream: BackendStream,
    pub reused: bool,
    /// Candidates tried, this one included.
    pub attempts: u32,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The candidate list was empty: nothing healthy.
    NoCandidates,
    /// Every candidate failed to connect: how many, and the last one's error.
    AllFailed {
        attempts: u32,
        last: Arc<Upstream>,
        error: std::io::Error,
    },
    /// This process ran out of file descriptors: no candidate is at fault.
    Local(std::io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoCandidates => f.write_str("no healthy address"),
            ConnectError::AllFailed { last, error, .. } => write!(f, "{}: {error}", last.label),
            ConnectError::Local(e) => write!(f, "local: {e}"),
        }
    }
}

/// Connects one upstream: from the idle pool first when `idle_timeout` is given, else always
/// a new connection (the retry of a stale pooled one). An address that leads to one of
/// switchyard's own listeners is never connected to, checked on every connect because a DNS
/// name can start pointing at us after it was configured or registered: a loop would hold a
/// connection per round trip until descriptors run out (`own` is loaded only then). `now`
/// dates the idle pool's check.
pub async fn connect_fresh_or_idle(
    u: &Upstream,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    own: &ArcSwap<OwnListeners>,
    now: std::time::Instant,
) -> std::io::Result<(BackendStream, bool)> {
    if let Some(s) = idle_timeout.and_then(|t| u.idle.checkout(t, now)) {
        return Ok((s, true));
    }
    // Loaded only here: a pooled connection was checked when it was made.
    let own = own.load();
    let own: &OwnListeners = &own;
    if u.protocol.is_h2() {
        // An HTTP/2 backend's idle pool stays empty: a stream on one of its connections.
        let r = Box::pin(u.h2.checkout(u, connect_timeout, own, idle_timeout)).await?;
        let reused = r.reused;
        let s = super::upstream_h2::H2Upstream::new(r, u.tls.is_some(), &u.label);
        return Ok((BackendStream::H2(Box::new(s)), reused));
    }
    // Boxed: the DNS lookup, connect and TLS handshake make a large future, which would
    // otherwise sit in every connection task's state (copied on spawn, held while idle).
    Box::pin(connect_new(u, connect_timeout, own)).await
}

/// A new connection to `u`, with its TLS handshake when it has one.
async fn connect_new(
    u: &Upstream,
    connect_timeout: Duration,
    own: &OwnListeners,
) -> std::io::Result<(BackendStream, bool)> {
    let tcp = connect_tcp(u, connect_timeout, own).await?;
    let Some(tls) = &u.tls else {
        return Ok((BackendStream::Plain(tcp), false));
    };
    // The handshake gets its own connect_timeout: a backend that accepts and never answers
    // the ClientHello is as unreachable as one that never accepts.
    match tokio::time::timeout(connect_timeout, tls.handshake(tcp, &u.address)).await {
        Ok(Ok(s)) => Ok((BackendStream::Tls(Box::new(s)), false)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// A connect refused because the address is one of switchyard's own listeners (a forwarding
/// loop): typed, so the client can be told what is wrong without the address.
#[derive(Debug)]
pub struct OwnListenerLoop(pub String);

impl std::fmt::Display for OwnListenerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OwnListenerLoop {}

/// A new TCP connection to the first resolved address that accepts and is not one of our own
/// listeners.
pub async fn connect_tcp(
    u: &Upstream,
    connect_timeout: Duration,
    own: &OwnListeners,
) -> std::io::Result<TcpStream> {
    let addrs = u.dns.addrs(&u.address).await?;
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        if let Some(l) = own.find(a) {
            last = std::io::Error::other(OwnListenerLoop(format!(
                "refused: {a} is one of switchyard's own listeners ({} {}), a loop",
                l.role, l.addr
            )));
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
                return Ok(s);
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
    own: &ArcSwap<OwnListeners>,
) -> Result<Checkout, ConnectError> {
    checkout_with(
        candidates,
        connect_timeout,
        Some(idle_timeout),
        own,
        std::time::Instant::now(),
        &|_| {},
    )
    .await
}

/// [`checkout`] with a hook called for each address whose connect failed (outlier
/// detection), and no idle pool when `idle_timeout` is None.
pub async fn checkout_with<'a>(
    candidates: impl Iterator<Item = &'a Arc<Upstream>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    own: &ArcSwap<OwnListeners>,
    now: std::time::Instant,
    on_failure: &(dyn Fn(&Upstream) + Sync),
) -> Result<Checkout, ConnectError> {
    let mut last: Option<(Arc<Upstream>, std::io::Error)> = None;
    let mut attempts = 0;
    for u in candidates {
        attempts += 1;
        match connect_fresh_or_idle(u, connect_timeout, idle_timeout, own, now).await {
            Ok((stream, reused)) => {
                return Ok(Checkout {
                    upstream: u.clone(),
                    stream,
                    reused,
                    attempts,
                })
            }
            Err(e) if crate::fdlimit::is_exhaustion(&e) => {
                // Every other candidate would fail the same way, and none of them is at fault.
                crate::fdlimit::count(crate::fdlimit::Site::Connect);
                log::warn!(
                    "connect to {} could not start: {e} (local: out of file descriptors)",
                    u.label
                );
                return Err(ConnectError::Local(e));
            }
            Err(e) => {
                u.stats.connect_failures.fetch_add(1, Relaxed);
                on_failure(u);
                log::warn!(
                    "connect to {} failed: {e}; trying the next candidate",
                    u.label
                );
                last = Some((u.clone(), e));
            }
        }
    }
    Err(match last {
        None => ConnectError::NoCandidates,
        Some((last, error)) => ConnectError::AllFailed {
            attempts,
            last,
            error,
        },
    })
}
