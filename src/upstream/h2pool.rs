//! The HTTP/2 connections of one backend address (`protocol = "h2c" | "h2"`): a few
//! connections, each carrying many streams, each driven by its own task. A request takes the
//! least busy live connection that has room under the peer's `MAX_CONCURRENT_STREAMS`; when
//! all are full a new one is opened, up to [`MAX_CONNS`] (past that the h2 crate queues the
//! stream until the peer lets it open). A connection that got GOAWAY or failed is dropped from
//! the set at its next use and replaced by a new one. Readers take no lock: the set is an
//! `ArcSwap`; only opening a connection is serialized (an async mutex), so a burst of requests
//! to a cold backend opens one connection, not one each.
use crate::proxy::stream::BackendStream;
use crate::registry::self_target::OwnListeners;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Connections per address at most. HTTP/2 needs one; a few spread the work of a busy backend
/// over its cores and keep a GOAWAY from stalling everything.
pub const MAX_CONNS: usize = 4;

/// Flow-control windows we offer a backend: large enough that a response stream is not
/// throttled on a LAN, bounded so that what a slow client leaves unread stays small.
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 4 << 20;

/// What a connection's driver task and its users share.
#[derive(Debug)]
struct State {
    /// Streams open on it through us.
    in_flight: AtomicUsize,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` as the h2 crate last saw it.
    max: AtomicUsize,
    /// GOAWAY received, an error, or the connection closed.
    dead: AtomicBool,
    /// When its last stream ended (unix ms; 0 while streams are open or before the first).
    idle_since: AtomicU64,
}

struct Conn {
    send: SendRequest<Bytes>,
    state: Arc<State>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.state.dead.load(Relaxed)
    }
    fn has_room(&self) -> bool {
        self.state.in_flight.load(Relaxed) < self.state.max.load(Relaxed).max(1)
    }
}

/// One stream's claim on a connection; releases its place when dropped.
pub struct Lease {
    state: Arc<State>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.state.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.state
                .idle_since
                .store(crate::clock::unix_ms(), Relaxed);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

#[derive(Default)]
pub struct H2Pool {
    conns: ArcSwap<Vec<Arc<Conn>>>,
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool")
            .field("conns", &self.conns.load().len())
            .finish()
    }
}

/// A stream's handle: ready to send one request. `reused`: on a connection that already
/// carried streams (a failure before any answer may then be retried on a new one).
pub struct Ready {
    pub send: SendRequest<Bytes>,
    pub lease: Lease,
    pub reused: bool,
}

impl Ready {
    /// A handle outside any pool (unit tests over an in-memory connection).
    #[cfg(test)]
    pub fn detached(send: SendRequest<Bytes>) -> Ready {
        let state = Arc::new(State {
            in_flight: AtomicUsize::new(1),
            max: AtomicUsize::new(100),
            dead: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
        });
        Ready {
            send,
            lease: Lease { state },
            reused: false,
        }
    }
}

impl H2Pool {
    /// Live connections now.
    pub fn len(&self) -> usize {
        self.conns.load().iter().filter(|c| c.usable()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget(&self, dead: &Arc<Conn>) {
        self.conns.rcu(|v| {
            v.iter()
                .filter(|c| !Arc::ptr_eq(c, dead) && c.usable())
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Drops connections without streams for longer than `idle` (as the HTTP/1.1 pool does
    /// after `idle_timeout`): a connection quiet that long may have been dropped by the
    /// backend or a middlebox without a word. Dropping the handle closes it (GOAWAY) once
    /// any stream a racing request just put on it is done.
    fn expire(&self, idle: Duration) {
        let list = self.conns.load();
        if !list.iter().any(|c| c.state.in_flight.load(Relaxed) == 0) {
            return;
        }
        let now = crate::clock::unix_ms();
        let stale = |c: &Arc<Conn>| {
            let since = c.state.idle_since.load(Relaxed);
            c.state.in_flight.load(Relaxed) == 0
                && since > 0
                && now.saturating_sub(since) > idle.as_millis() as u64
        };
        if list.iter().any(stale) {
            self.conns.rcu(|v| {
                v.iter()
                    .filter(|c| c.usable() && !stale(c))
                    .cloned()
                    .collect::<Vec<_>>()
            });
        }
    }

    fn least_busy(&self, with_room: bool) -> Option<Arc<Conn>> {
        self.conns
            .load()
            .iter()
            .filter(|c| c.usable() && (!with_room || c.has_room()))
            .min_by_key(|c| c.state.in_flight.load(Relaxed))
            .cloned()
    }

    /// A stream on a live connection, opening one when none has room (or when `idle` is
    /// None: the retry after a failure on a reused one). Connections idle longer than `idle`
    /// are not used again.
    pub async fn checkout(
        &self,
        u: &Upstream,
        connect_timeout: Duration,
        own: &OwnListeners,
        idle: Option<Duration>,
    ) -> std::io::Result<Ready> {
        let fresh = idle.is_none();
        if let Some(t) = idle {
            self.expire(t);
        }
        // A dead connection is found at most once per entry; the bound keeps a backend that
        // GOAWAYs every connection at once from looping us.
        for _ in 0..MAX_CONNS + 2 {
            let pick = if fresh { None } else { self.least_busy(true) };
            let (conn, reused) = match pick {
                Some(c) => (c, true),
                None => {
                    let _g = self.opening.lock().await;
                    // Someone may have opened one while this request waited for the lock.
                    match (!fresh).then(|| self.least_busy(true)).flatten() {
                        Some(c) => (c, true),
                        None if self.len() < MAX_CONNS => {
                            let c = Arc::new(open(u, connect_timeout, own).await?);
                            self.conns.rcu(|v| {
                                let mut v: Vec<_> =
                                    v.iter().filter(|c| c.usable()).cloned().collect();
                                v.push(c.clone());
                                v
                            });
                            (c, false)
                        }
                        // All full and at the bound: the least busy one queues the stream.
                        None => match self.least_busy(false) {
                            Some(c) => (c, true),
                            None => continue,
                        },
                    }
                }
            };
            conn.state.in_flight.fetch_add(1, Relaxed);
            let lease = Lease {
                state: conn.state.clone(),
            };
            match conn.send.clone().ready().await {
                Ok(send) => {
                    return Ok(Ready {
                        send,
                        lease,
                        reused,
                    })
                }
                Err(e) => {
                    // GOAWAY or a connection error: never used again.
                    log::debug!(
                        "{}: HTTP/2 connection not usable ({e}); replacing it",
                        u.label
                    );
                    conn.state.dead.store(true, Relaxed);
                    self.forget(&conn);
                }
            }
        }
        Err(std::io::Error::other(
            "every HTTP/2 connection was refused (GOAWAY) as it was opened",
        ))
    }
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A new connection: TCP (never to one of our own listeners), TLS with ALPN h2 for `h2`, the
/// HTTP/2 handshake, all within `connect_timeout`; its driver runs on its own task.
async fn open(
    u: &Upstream,
    connect_timeout: Duration,
    own: &OwnListeners,
) -> std::io::Result<Conn> {
    let tcp = crate::proxy::upstream::connect_tcp(u, connect_timeout, own).await?;
    let started = tokio::time::Instant::now();
    let (send, driver, state) =
        tokio::time::timeout(connect_timeout, handshake(u, tcp, MAX_HEADER_LIST))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP/2 handshake timed out")
            })??;
    log::debug!(
        "{}: new HTTP/2 connection ({:?} handshake)",
        u.label,
        started.elapsed()
    );
    tokio::spawn(driver);
    Ok(Conn { send, state })
}

/// The largest response header list we accept from a backend.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// TLS (for `h2`) and the HTTP/2 handshake over a connected socket; returns the request
/// handle, the connection's driver (to be spawned) and its shared state. Health checks use
/// it too, for connections of their own.
async fn handshake(
    u: &Upstream,
    tcp: tokio::net::TcpStream,
    max_header_list: u32,
) -> std::io::Result<(SendRequest<Bytes>, Driver, Arc<State>)> {
    let io = match (&u.tls, u.protocol) {
        (Some(t), crate::upstream::protocol::Protocol::H2) => {
            BackendStream::Tls(Box::new(t.handshake_h2(tcp, &u.address).await?))
        }
        _ => BackendStream::Plain(tcp),
    };
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(max_header_list)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| std::io::Error::other(format!("HTTP/2 handshake: {e}")))?;
    let state = Arc::new(State {
        in_flight: AtomicUsize::new(0),
        max: AtomicUsize::new(conn.max_concurrent_send_streams()),
        dead: AtomicBool::new(false),
        idle_since: AtomicU64::new(crate::clock::unix_ms()),
    });
    let st = state.clone();
    let label = u.label.clone();
    let driver = Box::pin(async move {
        let r = std::future::poll_fn(|cx| {
            let p = Pin::new(&mut conn).poll(cx);
            st.max.store(conn.max_concurrent_send_streams(), Relaxed);
            p
        })
        .await;
        st.dead.store(true, Relaxed);
        match r {
            Ok(()) => log::debug!("{label}: HTTP/2 connection closed"),
            Err(e) => log::debug!("{label}: HTTP/2 connection ended: {e}"),
        }
    });
    Ok((send, driver, state))
}

/// A connection of its own for a health check (closed when the handle drops).
pub async fn connect_for_check(
    u: &Upstream,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<SendRequest<Bytes>> {
    let (send, driver, _) = handshake(u, tcp, MAX_HEADER_LIST).await?;
    tokio::spawn(driver);
    send.ready()
        .await
        .map_err(|e| std::io::Error::other(format!("HTTP/2: {e}")))
}
