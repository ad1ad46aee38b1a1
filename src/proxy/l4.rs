//! `[[tcp]]` L4 listeners: accept, pick a healthy target (round robin or by client IP), send
//! an optional PROXY header, then splice bytes both ways, half-closes kept, until both ends close.
//! Each direction copies through a pooled buffer and moves to splice(2) (`splice.rs`) once a
//! read fills that buffer, so short connections never pay for a pipe.
use super::listener;
use super::splice::{AsTcp, Pumped};
use super::upstream::{checkout, ConnectError};
use crate::config::address::Address;
use crate::config::tcp::{Balance, ProxyVersion, Tcp};
use crate::config::Config;
use crate::routing::select::Pool;
use crate::state::{DataPlane, Shared};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a new connection on one listener is routed with. Swapped whole on reload; a
/// connection keeps the one it started with.
pub struct Route {
    listen: Address,
    pool: Pool,
    balance: Balance,
    send_proxy: Option<ProxyVersion>,
    idle_timeout: Duration,
}

/// A listener is the same across reloads when its `listen` is, in file order among equals
/// (several `127.0.0.1:0` listeners are distinct).
type Key = (Address, usize);

struct Active {
    key: Key,
    local: SocketAddr,
    route: Arc<ArcSwap<Route>>,
    task: JoinHandle<()>,
}

/// The running L4 listeners and the upstreams they route to. Its own upstream index, apart
/// from the HTTP table's: a table rebuild for a registration must not forget L4 targets.
#[derive(Default)]
pub struct L4Listeners {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    active: Vec<Active>,
    upstreams: HashMap<(Address, bool), Arc<Upstream>>,
}

impl L4Listeners {
    /// Binds every `[[tcp]]` listener of `cfg`; a listener that cannot bind is an error, as
    /// the HTTP one is at start.
    pub fn start(&self, shared: &Arc<Shared>, cfg: &Config) -> std::io::Result<()> {
        self.apply_inner(shared, cfg, true)
    }

    /// Applies a reloaded config (from `control::reload`, under the control lock): new listeners are bound, removed ones stop accepting (their
    /// connections go on), kept ones route new connections with the new targets. A listener
    /// that cannot bind is logged and retried at the next reload.
    pub fn apply(&self, shared: &Arc<Shared>, cfg: &Config) {
        let _ = self.apply_inner(shared, cfg, false);
    }

    /// The addresses the listeners are bound to, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.active.iter().map(|a| a.local).collect()
    }

    fn apply_inner(&self, shared: &Arc<Shared>, cfg: &Config, strict: bool) -> std::io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut used: Vec<Arc<Upstream>> = Vec::new();
        let mut wanted: Vec<(Key, Route)> = Vec::new();
        for (i, t) in cfg.tcp.iter().enumerate() {
            let nth = cfg.tcp[..i].iter().filter(|o| o.listen == t.listen).count();
            let ups: Vec<Arc<Upstream>> = t
                .targets
                .iter()
                .map(|a| {
                    let u = inner
                        .upstreams
                        .entry((a.clone(), t.health_check))
                        .or_insert_with(|| Arc::new(Upstream::l4(a.clone(), t.health_check)))
                        .clone();
                    used.push(u.clone());
                    u
                })
                .collect();
            wanted.push(((t.listen.clone(), nth), route(t, ups)));
        }

        let mut kept = Vec::new();
        for a in inner.active.drain(..) {
            if wanted.iter().any(|(k, _)| *k == a.key) {
                kept.push(a);
            } else {
                a.task.abort();
                log::info!(
                    "tcp listener on {} removed: no longer accepting; open connections go on",
                    a.local
                );
            }
        }
        let mut result = Ok(());
        for (key, r) in wanted {
            if let Some(a) = kept.iter().find(|a| a.key == key) {
                let (before, after) = (a.route.load().describe(), r.describe());
                a.route.store(Arc::new(r));
                if before != after {
                    log::info!("tcp listener on {} now -> {after}", a.local);
                }
                continue;
            }
            let bound = listener::bind(&key.0).and_then(|s| Ok((s.local_addr()?, s)));
            let (local, sock) = match bound {
                Ok(x) => x,
                Err(e) => {
                    let e = std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on {} (tcp): {e}", key.0),
                    );
                    if strict {
                        result = Err(e);
                        break;
                    }
                    log::error!("{e}; retried at the next reload");
                    continue;
                }
            };
            log::info!("tcp listener on {local} -> {}", r.describe());
            let route = Arc::new(ArcSwap::from_pointee(r));
            let per_conn = route.clone();
            let task = tokio::spawn(listener::accept_loop(
                shared.dp.clone(),
                sock,
                cfg.server.max_connections,
                true,
                move |sh, s, p| serve(sh, per_conn.load_full(), s, p),
            ));
            kept.push(Active {
                key,
                local,
                route,
                task,
            });
        }
        shared.l4_view.store(Arc::new(
            kept.iter()
                .map(|a| (a.local.to_string(), a.route.load().pool.upstreams.clone()))
                .collect(),
        ));
        inner.active = kept;
        inner
            .upstreams
            .retain(|_, u| used.iter().any(|x| Arc::ptr_eq(x, u)));
        // Starts checkers for new targets, and again for those whose checking had stopped.
        crate::health::checker::spawn_for(&shared.dp, &used, &cfg.gateway);
        result
    }
}

impl Route {
    /// For the log: targets, balance, PROXY version.
    fn describe(&self) -> String {
        format!(
            "{} ({}{})",
            self.pool
                .upstreams
                .iter()
                .map(|u| &*u.label)
                .collect::<Vec<_>>()
                .join(", "),
            self.balance.as_str(),
            match self.send_proxy {
                Some(ProxyVersion::V1) => ", PROXY v1",
                Some(ProxyVersion::V2) => ", PROXY v2",
                None => "",
            }
        )
    }
}

fn route(t: &Tcp, ups: Vec<Arc<Upstream>>) -> Route {
    Route {
        listen: t.listen.clone(),
        pool: Pool::new(format!("tcp {}", t.listen), ups),
        balance: t.balance,
        send_proxy: t.send_proxy,
        idle_timeout: t.idle_timeout,
    }
}

/// FNV-1a over the client's IP: stable across restarts and replicas (unlike `RandomState`),
/// so every switchyard sends one client to the same target.
pub fn source_hash(ip: IpAddr) -> u64 {
    let bytes: Vec<u8> = match ip.to_canonical() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Serves one accepted L4 connection with the route current when it was accepted.
async fn serve(shared: Arc<DataPlane>, r: Arc<Route>, client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    // TCP_NODELAY comes from the listening socket (see listener::bind).
    let connect_timeout = shared.table.load().server.connect_timeout;
    let candidates = match r.balance {
        Balance::RoundRobin => r.pool.candidates(),
        Balance::SourceHash => {
            let n = r.pool.upstreams.len().max(1) as u64;
            r.pool
                .candidates_from((source_hash(peer.ip()) % n) as usize)
        }
    };
    let own = shared.own_listeners.load();
    let co = match checkout(candidates, connect_timeout, r.idle_timeout, &own).await {
        Ok(c) => c,
        Err(ConnectError::NoCandidates) => {
            log::warn!("tcp {}: no healthy target for {peer}; closing", r.listen);
            return;
        }
        Err(e @ (ConnectError::AllFailed { .. } | ConnectError::Local(_))) => {
            log::warn!(
                "tcp {}: no target could be reached for {peer} ({e}); closing",
                r.listen
            );
            return;
        }
    };
    let mut upstream = co.stream;
    co.upstream.count_request();
    if let Some(v) = r.send_proxy {
        let local = client.local_addr().unwrap_or(peer);
        let h = super::proxy_protocol::header(v, peer, local);
        if let Err(e) = super::io::write_all(&mut upstream, &h, r.idle_timeout).await {
            log::warn!(
                "tcp {}: PROXY header to {} failed: {e}",
                r.listen,
                co.upstream.label
            );
            return;
        }
    }
    let flow = match upstream {
        super::stream::BackendStream::Plain(u) => splice(client, u, r.idle_timeout).await,
        // L4 targets are never TLS (no [[tcp]] key asks for it); spliced all the same.
        tls => splice_any(client, tls, r.idle_timeout).await,
    };
    if shared.table.load().server.access_log {
        log::info!(
            target: "access",
            "{peer} tcp {} -> {} sent={} received={} spliced={} {:.1}ms {}",
            r.listen,
            co.upstream.label,
            flow.up,
            flow.down,
            flow.spliced,
            started.elapsed().as_secs_f64() * 1000.0,
            flow.end.as_str(),
        );
    }
}

/// How a spliced connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their sending half.
    Closed,
    /// A read or write failed (a reset); both sides are closed at once.
    Error,
    /// Nothing moved either way for `idle_timeout`.
    Idle,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error => "reset",
            End::Idle => "idle-timeout",
        }
    }
}

/// Byte counts of a spliced connection: client to target (`up`) and back (`down`).
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub up: u64,
    pub down: u64,
    /// Of `up + down`, the bytes moved by splice(2) rather than copied.
    pub spliced: u64,
    pub end: End,
}

struct Meter {
    start: Instant,
    /// Milliseconds after `start` of the last byte moved, either way.
    last_ms: AtomicU64,
    /// Directions that have seen their EOF.
    ended: AtomicU8,
    up: Counts,
    down: Counts,
}

/// Bytes one direction moved, and how many of them went through splice(2).
#[derive(Default)]
struct Counts {
    moved: AtomicU64,
    spliced: AtomicU64,
}

impl Meter {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

/// Copies `a` ⇄ `b` until both directions have ended. An EOF on one side is passed on as a
/// FIN (shutdown of the write half) and the other direction keeps going, which protocols that
/// half-close (a client that sends, shuts down, then reads the answer) rely on. Unlike
/// `copy_bidirectional` it also ends a connection that is idle both ways.
pub async fn splice(a: TcpStream, b: TcpStream, idle: Duration) -> Flow {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    splice_halves(ar, aw, br, bw, idle).await
}

/// [`splice`] for any pair of streams (a TLS client in front of an upgraded HTTP exchange).
pub async fn splice_any<A, B>(a: A, b: B, idle: Duration) -> Flow
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    splice_halves(ar, aw, br, bw, idle).await
}

async fn splice_halves<AR, AW, BR, BW>(ar: AR, aw: AW, br: BR, bw: BW, idle: Duration) -> Flow
where
    AR: AsyncRead + Unpin + AsTcp,
    AW: AsyncWrite + Unpin + AsTcp,
    BR: AsyncRead + Unpin + AsTcp,
    BW: AsyncWrite + Unpin + AsTcp,
{
    let meter = Meter {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        ended: AtomicU8::new(0),
        up: Counts::default(),
        down: Counts::default(),
    };
    let mut up = pin!(one_way(ar, bw, &meter, &meter.up));
    let mut down = pin!(one_way(br, aw, &meter, &meter.down));
    let mut watch = pin!(idle_watch(&meter, idle));
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(_) => break End::Error,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(_) => break End::Error,
            },
            _ = &mut watch => break End::Idle,
        }
        if up_done && down_done {
            break End::Closed;
        }
    };
    Flow {
        up: meter.up.moved.load(Relaxed),
        down: meter.down.moved.load(Relaxed),
        spliced: meter.up.spliced.load(Relaxed) + meter.down.spliced.load(Relaxed),
        end,
    }
}

async fn one_way<R, W>(mut r: R, mut w: W, meter: &Meter, count: &Counts) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + AsTcp,
    W: AsyncWrite + Unpin + AsTcp,
{
    // From the per-thread pool: a fresh zeroed 16 KiB per direction cost more than the bytes
    // a short connection moves.
    let mut buf = super::bufpool::take();
    let mut may_splice = true;
    let result = async {
        loop {
            buf.clear();
            let n = r.read_buf(&mut buf).await?;
            if n == 0 {
                return pass_eof(w, meter).await;
            }
            meter.touch();
            w.write_all(&buf[..n]).await?;
            count.moved.fetch_add(n as u64, Relaxed);
            meter.touch();
            // A read that filled the whole buffer: a bulk transfer, which splice(2) moves
            // without the two copies through user space. Short exchanges never get here.
            if may_splice && n == buf.capacity() {
                if let (Some(from), Some(to)) = (r.tcp(), w.tcp()) {
                    may_splice = false;
                    if let Ok(pipe) = super::splice::Pipe::new() {
                        // The pipe holds the bytes from here on: the buffer goes back now.
                        buf.clear();
                        super::bufpool::release(&mut buf);
                        // Unbounded, and no timeout of its own: the idle watch ends the
                        // connection when neither direction moves.
                        let pumped = super::splice::pump(from, to, &pipe, u64::MAX, None, |k| {
                            count.moved.fetch_add(k as u64, Relaxed);
                            count.spliced.fetch_add(k as u64, Relaxed);
                            meter.touch();
                        })
                        .await?;
                        if pumped == Pumped::Eof {
                            return pass_eof(w, meter).await;
                        }
                        buf = super::bufpool::take();
                    }
                }
            }
        }
    }
    .await;
    buf.clear();
    super::bufpool::release(&mut buf);
    result
}

/// Passes an EOF on as a FIN. When the other direction has ended already, both sockets are
/// about to be closed, and the close sends that FIN (nothing is left unread on either, so no
/// reset): a plain socket is not shut down first, one syscall per connection fewer.
async fn pass_eof<W: AsyncWrite + Unpin + AsTcp>(w: W, meter: &Meter) -> std::io::Result<()> {
    if meter.ended.fetch_add(1, Relaxed) == 0 {
        let mut w = w;
        return w.shutdown().await;
    }
    match w.drop_quietly() {
        Ok(()) => Ok(()),
        Err(mut w) => w.shutdown().await,
    }
}

async fn idle_watch(meter: &Meter, idle: Duration) {
    loop {
        let deadline = meter.start + Duration::from_millis(meter.last_ms.load(Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_hash_is_stable_and_mapped_equals_v4() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_hash(a), source_hash(m));
        // Fixed value: replicas and later versions must agree.
        assert_eq!(source_hash(a), {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in [10u8, 1, 2, 3] {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
            h
        });
        let spread: std::collections::HashSet<u64> = (0..64u8)
            .map(|i| source_hash(IpAddr::from([10, 0, 0, i])) % 4)
            .collect();
        assert_eq!(spread.len(), 4, "64 clients should reach all of 4 targets");
    }

    #[tokio::test]
    async fn splice_keeps_half_close_and_times_out_idle() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let mut flows = Vec::new();
            for _ in 0..2 {
                let (c, _) = front.accept().await.unwrap();
                let b = TcpStream::connect(echo_addr).await.unwrap();
                flows.push(splice(c, b, Duration::from_millis(300)).await);
            }
            flows
        });
        let mut c = TcpStream::connect(front_addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // A second connection that says nothing is closed after the idle timeout.
        let mut quiet = TcpStream::connect(front_addr).await.unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = quiet.read_to_end(&mut rest).await;
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        let flows = proxy.await.unwrap();
        assert_eq!(
            (flows[0].up, flows[0].down, flows[0].end),
            (5, 5, End::Closed)
        );
        assert_eq!(flows[1].end, End::Idle);
    }

    /// A backend that reads the whole request up to the client's FIN, then answers with
    /// `answer` bytes derived from what it got and closes: it only answers if the half-close
    /// was passed on.
    async fn sink_then_answer(answer: usize) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    let seed = got.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                    let out: Vec<u8> = (0..answer).map(|i| seed.wrapping_add(i as u8)).collect();
                    s.write_all(&out).await.unwrap();
                    s.shutdown().await.unwrap();
                });
            }
        });
        addr
    }

    /// One client connection through [`splice`]: sends `up` bytes, half-closes, reads the
    /// answer to EOF. Returns what it read and the proxy's flow.
    async fn through(up: usize, down: usize) -> (Vec<u8>, u8, Flow) {
        let back = sink_then_answer(down).await;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            let b = TcpStream::connect(back).await.unwrap();
            splice(c, b, Duration::from_secs(10)).await
        });
        let data: Vec<u8> = (0..up).map(|i| (i * 31 % 253) as u8).collect();
        let seed = data.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut c = TcpStream::connect(front_addr).await.unwrap();
        let (mut cr, mut cw) = c.split();
        let send = async {
            cw.write_all(&data).await.unwrap();
            cw.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let recv = cr.read_to_end(&mut got);
        let (_, n) = tokio::join!(send, recv);
        n.unwrap();
        (got, seed, proxy.await.unwrap())
    }

    #[tokio::test]
    async fn bulk_transfers_are_spliced_with_half_close_and_exact_counts() {
        let (up, down) = (3 * 1024 * 1024 + 5, 2 * 1024 * 1024 + 7);
        let (got, seed, flow) = through(up, down).await;
        assert_eq!(got.len(), down);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == seed.wrapping_add(i as u8)));
        assert_eq!(
            (flow.up, flow.down, flow.end),
            (up as u64, down as u64, End::Closed)
        );
        // Everything after the first full read of each direction went through the pipe.
        assert!(
            flow.spliced > (up + down) as u64 / 2,
            "spliced {} of {}",
            flow.spliced,
            up + down
        );
    }

    #[tokio::test]
    async fn short_exchanges_are_copied_not_spliced() {
        let (got, _, flow) = through(100, 64).await;
        assert_eq!(got.len(), 64);
        assert_eq!((flow.up, flow.down, flow.spliced), (100, 64, 0));
    }

    #[tokio::test]
    async fn without_a_pipe_bulk_transfers_fall_back_to_copying() {
        super::super::splice::FAIL_PIPE.with(|f| f.set(true));
        let (up, down) = (1024 * 1024 + 3, 1024 * 1024 + 9);
        let (got, seed, flow) = through(up, down).await;
        super::super::splice::FAIL_PIPE.with(|f| f.set(false));
        assert_eq!(got.len(), down);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == seed.wrapping_add(i as u8)));
        assert_eq!(
            (flow.up, flow.down, flow.spliced, flow.end),
            (up as u64, down as u64, 0, End::Closed)
        );
    }

    #[tokio::test]
    async fn backend_closing_first_still_gets_the_clients_later_bytes_and_fin() {
        // The backend speaks and half-closes first; the client answers after reading that EOF
        // and closes. Its FIN then comes from the close, not from a shutdown (`pass_eof`).
        let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back_addr = back.local_addr().unwrap();
        let backend = tokio::spawn(async move {
            let (mut s, _) = back.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            let b = TcpStream::connect(back_addr).await.unwrap();
            splice(c, b, Duration::from_secs(10)).await
        });
        let mut c = TcpStream::connect(front_addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
        c.write_all(b"late words").await.unwrap();
        c.shutdown().await.unwrap();
        let flow = tokio::time::timeout(Duration::from_secs(5), proxy)
            .await
            .expect("proxy ends")
            .unwrap();
        assert_eq!(backend.await.unwrap(), b"late words");
        assert_eq!((flow.up, flow.down, flow.end), (10, 2, End::Closed));
        // The client still reads a clean EOF (no reset) after its own FIN.
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
