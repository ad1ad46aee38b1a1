//! Opening the HTTP/2 connections of an address: checkout (a stream on a live connection,
//! opening one when none has room), TCP + TLS + the HTTP/2 handshake, and a connection of its
//! own for a health check. Apart from the set itself (`h2pool.rs`), which `Upstream` holds, so
//! that the set does not depend on the upstream that holds it.
use super::*;
use crate::upstream::Upstream;

impl H2Pool {
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
