//! HTTP/2 towards clients (SPEC §10): [`serve`] drives one connection with the `h2` crate —
//! over TLS after ALPN chose `h2`, or cleartext with prior knowledge on the plain listener
//! ([`is_preface`]) — and runs each stream inside the connection's task through the request
//! phases (`stream.rs`). The connection is bounded: `h2_max_concurrent_streams`, header lists of
//! `max_header_bytes`, a 4 KiB HPACK table, and the flood guard (`guard.rs`), which answers a
//! rapid reset, CONTINUATION or control-frame flood with GOAWAY and a close. SIGTERM sends
//! GOAWAY at once and the streams in flight finish; a connection without streams for
//! `idle_timeout` is closed the same way.
pub(crate) mod guard;
pub(crate) mod stream;
pub(crate) mod translate;

use crate::state::DataPlane;
use futures_util::stream::{FuturesUnordered, StreamExt};
use guard::{Flood, Guarded, Limits};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

pub use guard::PREFACE;

/// The HPACK dynamic table we let clients use (the RFC's default, or `max_header_bytes` when
/// that is smaller): compression is kept, and the memory per connection stays small.
const HPACK_TABLE: u32 = 4096;
/// Flow-control windows we offer: large enough for a fast upload on one stream, small enough
/// that a slow backend holds little memory per connection.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes the `h2` crate buffers per stream before a write waits.
const SEND_BUFFER: usize = 256 * 1024;
/// Streams reset by the client before we accepted them (the `h2` crate's own rapid-reset
/// brake; it answers GOAWAY ENHANCE_YOUR_CALM beyond this).
const PENDING_ACCEPT_RESETS: usize = 50;
/// Finished streams' boxes a connection keeps for its next streams (`run_boxed`): as many as a
/// busy client keeps in flight (h2load's 25, a browser's page load), so that a wave of new
/// streams finds one each; with 8, two in three of those streams allocated and copied their
/// ~2.5 KiB future. At most 80 KiB per connection, freed with it.
const FREE_BOXES: usize = 32;
/// Finished streams' timers a connection keeps, still armed, for its next streams.
const TIMERS_KEPT: usize = 32;
/// Streams we reset for protocol errors before the connection is given up.
const LOCAL_ERROR_RESETS: usize = 256;

/// HTTP/2 counters for `/metrics`.
#[derive(Debug, Default)]
pub struct H2Stats {
    pub connections: AtomicU64,
    pub streams: AtomicU64,
    /// Streams refused because the connection already had its maximum in flight.
    pub refused_streams: AtomicU64,
    pub goaway_rapid_reset: AtomicU64,
    pub goaway_continuation: AtomicU64,
    pub goaway_control_flood: AtomicU64,
    /// Connections ended by a protocol error of the client.
    pub protocol_errors: AtomicU64,
}

impl H2Stats {
    fn flood(&self, f: Flood) {
        match f {
            Flood::RapidReset => &self.goaway_rapid_reset,
            Flood::Continuation => &self.goaway_continuation,
            Flood::Control => &self.goaway_control_flood,
        }
        .fetch_add(1, Relaxed);
    }
}

/// What every stream of a connection shares.
pub(crate) struct Conn {
    pub dp: Arc<DataPlane>,
    pub peer_ip: String,
    pub peer: std::net::IpAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The plain listener (ACME challenges and the https redirect are answered first).
    pub plain: bool,
    /// The TLS version, for the access log; None on the plain listener.
    pub tls: Option<&'static str>,
    pub guard: Arc<guard::Shared>,
    /// When (`clock::mono_secs`, 0 for never) an answer last let its `server-timing` into
    /// the HPACK table (`stream::seed_timing`).
    pub timing_seeded: AtomicU64,
}

/// Whether `bytes` (what the client sent first) start the HTTP/2 preface; `None` while too
/// few bytes have come to tell.
pub fn is_preface(bytes: &[u8]) -> Option<bool> {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        return Some(false);
    }
    (n == PREFACE.len()).then_some(true)
}

/// Serves one HTTP/2 connection until it closes; `tls` is the TLS version it came over.
pub async fn serve<S>(dp: Arc<DataPlane>, io: S, peer: SocketAddr, tls: Option<&'static str>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let table = dp.table.load_full();
    let s = &*table.server;
    let shared = Arc::new(guard::Shared::default());
    let io = Guarded::new(io, Limits::new(s.max_header_bytes), shared.clone());
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .header_table_size(HPACK_TABLE.min(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX)))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS));
    let stats = &dp.h2;
    let mut conn =
        match tokio::time::timeout(s.request_header_timeout, b.handshake::<_, bytes::Bytes>(io))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                log::debug!("HTTP/2 handshake from {peer} failed: {e}");
                return;
            }
            Err(_) => {
                log::debug!("HTTP/2 handshake from {peer} timed out");
                return;
            }
        };
    stats.connections.fetch_add(1, Relaxed);
    let c = Conn {
        dp: dp.clone(),
        peer_ip: peer.ip().to_string(),
        peer: peer.ip(),
        proto: if tls.is_some() { "https" } else { "http" },
        plain: tls.is_none(),
        tls,
        guard: shared.clone(),
        timing_seeded: AtomicU64::new(0),
    };
    // The streams run inside this task, polled next to the connection (as nginx and HAProxy
    // run a connection's streams in its event handler): no task, no cross-task wake-up per
    // stream, and a stream's frames are flushed by the same poll that queued them. However a
    // client resets streams, it cannot leave more than this many behind. The h2 crate already
    // holds it to max_concurrent_streams open streams; the slack covers one that still records
    // its stream after h2 closed it.
    let max = 2 * s.h2_max_concurrent_streams as usize;
    let mut streams = FuturesUnordered::new();
    // The boxes of finished streams, reused for new ones (see `run_boxed`), and their
    // timers, still armed (see `stream::serve`).
    let mut free = Vec::new();
    let mut timers = Vec::new();
    let idle_timeout = s.idle_timeout;
    let drain_timeout = s.drain_timeout;
    drop(table);
    let mut shutdown = dp.shutdown.subscribe();
    let mut going_away = false;
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    // The deadline the last accepted stream asked of `idle`, kept here rather than moved into
    // the timer (a reset per stream moved it in the timer wheel each time): the timer is left
    // at an earlier deadline, and when it fires there it moves on to this one. It fires when
    // it did, at the deadline set last.
    let mut idle_after: Option<tokio::time::Instant> = None;
    // The flood guard's signal, one registration for the connection rather than one per turn.
    let notified = shared.notify.notified();
    tokio::pin!(notified);
    loop {
        tokio::select! {
            // Streams before the connection: what they queue goes out in the connection's
            // poll right after.
            biased;
            Some((done, timer)) = streams.next(), if !streams.is_empty() => {
                if free.len() < FREE_BOXES {
                    free.push(done);
                }
                if timers.len() < TIMERS_KEPT {
                    timers.push(timer);
                }
            }
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => {
                    // One clock read for the idle deadline and the stream's start.
                    let now = tokio::time::Instant::now();
                    let at = now + idle_timeout;
                    if at < idle.deadline() {
                        idle.as_mut().reset(at);
                        idle_after = None;
                    } else {
                        idle_after = Some(at);
                    }
                    stats.streams.fetch_add(1, Relaxed);
                    if streams.len() >= max {
                        stats.refused_streams.fetch_add(1, Relaxed);
                        let mut respond = respond;
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let (parts, recv) = req.into_parts();
                    let run = stream::serve(&c, parts, recv, respond, now, timers.pop().unwrap_or_default());
                    streams.push(run_boxed(reuse(&mut free, run)));
                }
                Some(Err(e)) => {
                    if e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) && e.is_go_away() {
                        // The h2 crate's own rapid-reset brake (streams reset before accept).
                        stats.flood(Flood::RapidReset);
                        log::warn!("HTTP/2 client {peer} reset streams too fast: GOAWAY");
                    } else if e.is_io() || e.is_remote() {
                        log::debug!("HTTP/2 connection from {peer} ended: {e}");
                    } else {
                        stats.protocol_errors.fetch_add(1, Relaxed);
                        log::debug!("HTTP/2 connection from {peer}: {e}");
                    }
                    break;
                }
                None => break,
            },
            () = &mut notified => {
                notified.set(shared.notify.notified());
                let Some(f) = shared.tripped() else { continue };
                stats.flood(f);
                log::warn!("HTTP/2 client {peer}: {} flood, GOAWAY and close", f.label());
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                let flush = std::future::poll_fn(|cx| conn.poll_closed(cx));
                let _ = tokio::time::timeout(guard::GOAWAY_FLUSH, flush).await;
                break;
            }
            () = drained(&mut shutdown), if !going_away => {
                going_away = true;
                // GOAWAY at once; the streams in flight finish (the drain bounds the wait).
                conn.graceful_shutdown();
                idle.as_mut().reset(tokio::time::Instant::now() + drain_timeout);
                idle_after = None;
            }
            () = &mut idle => {
                if let Some(at) = idle_after.take() {
                    if at > tokio::time::Instant::now() {
                        idle.as_mut().reset(at);
                        continue;
                    }
                }
                if going_away || streams.is_empty() {
                    if going_away {
                        break;
                    }
                    going_away = true;
                    conn.graceful_shutdown();
                    idle.as_mut().reset(tokio::time::Instant::now() + drain_timeout);
                } else {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
            }
        }
    }
    // The connection is done (h2 may close it once the last frame of a stream went out, while
    // that stream still logs). Dropping it fails whatever still waits on it at once, so what
    // is left ends quickly: each stream records itself as it did in a task of its own.
    drop(conn);
    let rest = async { while streams.next().await.is_some() {} };
    let _ = tokio::time::timeout(drain_timeout, rest).await;
}

/// Polls a stream's future, boxed, and gives the box back when it is done: the future holds
/// the phases' state inline (several KiB), too large for the allocator's fast bins, so a
/// connection reuses the boxes of finished streams for new ones (the set's own allocation per
/// stream is then a small one), and only the box's pointer moves into the set.
async fn run_boxed<F: Future>(mut run: Pin<Box<F>>) -> (Pin<Box<F>>, F::Output) {
    let out = run.as_mut().await;
    (run, out)
}

/// `run` in the box of a finished stream when there is one. Inlined where the stream's future
/// is made, so that only its arguments are written into the box: called, it took the whole
/// future (2.5 KiB, mostly room for the states to come) and copied all of it.
#[inline(always)]
fn reuse<F: Future>(free: &mut Vec<Pin<Box<F>>>, run: F) -> Pin<Box<F>> {
    match free.pop() {
        Some(mut b) => {
            b.set(run);
            b
        }
        None => Box::pin(run),
    }
}

/// Resolves once the drain has begun.
async fn drained(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A stream whose first bytes were read already (the preface, read in pieces): they are
/// given back before the rest.
pub struct Rewind<S> {
    head: bytes::Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(head: bytes::Bytes, inner: S) -> Self {
        Rewind { head, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.head.is_empty() {
            let n = me.head.len().min(buf.remaining());
            buf.put_slice(&me.head.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
