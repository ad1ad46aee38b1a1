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
use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub mod connect;

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
}
