//! A hyper-based test backend: echoes what it received as JSON, serves bodies of any size
//! (fixed length or chunked), sleeps on request, upgrades to a raw echo tunnel, and counts
//! every request, health checks apart; the echo JSON includes the trailers it received. Runs
//! on its own thread and runtime.
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// FNV-1a, so that tests can compare body checksums without a dependency.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The deterministic body of `/bytes/N` and `/chunked/N`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A request head as the backend saw it: method, target, headers (names lowercased).
pub type Seen = (String, String, Vec<(String, String)>);

#[derive(Default)]
pub struct Stats {
    /// Requests other than health checks.
    pub hits: AtomicUsize,
    pub health_hits: AtomicUsize,
    /// Status `/health` and `/healthz` answer.
    pub health_status: AtomicU16,
    /// Requests (health checks apart) whose whole body arrived; a request cut off mid-body
    /// counts in `hits` but not here.
    pub complete: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Heads of the requests received, in order (method, target, headers lowercased).
    pub seen: Mutex<Vec<Seen>>,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Self::start_on(
            name,
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Stats::default()),
        )
    }

    /// Starts on a given address (to bring a stopped backend back on its port).
    pub fn start_on(name: &str, addr: SocketAddr, stats: Arc<Stats>) -> Backend {
        if stats.health_status.load(SeqCst) == 0 {
            stats.health_status.store(200, SeqCst);
        }
        let std_listener = bind_retry(addr);
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = stats.clone();
        let nm = name.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(nm, std_listener, st, rx));
        });
        Backend {
            name: name.to_string(),
            addr,
            stats,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// An HTTP/2 backend with prior knowledge (h2c), hyper's server: the same answers. With
    /// `goaway_after` > 0 each connection is shut down gracefully (GOAWAY, in-flight streams
    /// finish) once it has carried that many requests.
    pub fn start_h2(name: &str, goaway_after: usize) -> Backend {
        Self::start_h2_with(name, goaway_after, None)
    }

    /// `start_h2` announcing `SETTINGS_MAX_CONCURRENT_STREAMS = max_streams`.
    pub fn start_h2_with(name: &str, goaway_after: usize, max_streams: Option<u32>) -> Backend {
        let stats = Arc::new(Stats::default());
        stats.health_status.store(200, SeqCst);
        let std_listener = bind_retry("127.0.0.1:0".parse().unwrap());
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = stats.clone();
        let nm = name.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve_h2(
                nm,
                std_listener,
                st,
                rx,
                goaway_after,
                max_streams,
            ));
        });
        Backend {
            name: name.to_string(),
            addr,
            stats,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.stats.hits.load(SeqCst)
    }

    pub fn complete(&self) -> usize {
        self.stats.complete.load(SeqCst)
    }

    pub fn health_hits(&self) -> usize {
        self.stats.health_hits.load(SeqCst)
    }

    pub fn set_health(&self, status: u16) {
        self.stats.health_status.store(status, SeqCst);
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops and starts again on the same port with the same counters.
    pub fn restart(&mut self) {
        self.stop();
        let b = Backend::start_on(&self.name, self.addr, self.stats.clone());
        *self = b;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_retry(addr: SocketAddr) -> std::net::TcpListener {
    for _ in 0..200 {
        if let Ok(l) = std::net::TcpListener::bind(addr) {
            l.set_nonblocking(true).unwrap();
            return l;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot bind {addr}");
}

async fn serve(
    name: String,
    l: std::net::TcpListener,
    stats: Arc<Stats>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(l).unwrap();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => {
                let Ok((s, _)) = r else { continue };
                stats.connections.fetch_add(1, SeqCst);
                let io = hyper_util::rt::TokioIo::new(s);
                let (nm, st) = (name.clone(), stats.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(nm.clone(), st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn serve_h2(
    name: String,
    l: std::net::TcpListener,
    stats: Arc<Stats>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    goaway_after: usize,
    max_streams: Option<u32>,
) {
    let listener = tokio::net::TcpListener::from_std(l).unwrap();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => {
                let Ok((s, _)) = r else { continue };
                stats.connections.fetch_add(1, SeqCst);
                let io = hyper_util::rt::TokioIo::new(s);
                let (nm, st) = (name.clone(), stats.clone());
                conns.spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let enough = Arc::new(tokio::sync::Notify::new());
                    let (sv, en) = (served.clone(), enough.clone());
                    let svc = hyper::service::service_fn(move |req| {
                        let n = sv.fetch_add(1, SeqCst) + 1;
                        if goaway_after > 0 && n == goaway_after {
                            en.notify_one();
                        }
                        handle(nm.clone(), st.clone(), req)
                    });
                    let mut b = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    b.max_concurrent_streams(max_streams);
                    let conn = b.serve_connection(io, svc);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn handle(
    name: String,
    stats: Arc<Stats>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if path == "/health" || path == "/healthz" {
        stats.health_hits.fetch_add(1, SeqCst);
        let code = stats.health_status.load(SeqCst);
        let mut r = Response::new(full(format!("{{\"status\":{code}}}")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(r);
    }
    stats.hits.fetch_add(1, SeqCst);
    stats
        .seen
        .lock()
        .unwrap()
        .push((req.method().to_string(), target.clone(), headers.clone()));
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or("");
    let arg: usize = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    // Any upgrade request gets the echo tunnel, whatever its path (sharded WebSockets).
    let first = if req.headers().contains_key("upgrade") {
        "upgrade"
    } else {
        first
    };
    let resp = match first {
        "bytes" => Response::new(full(pattern(arg))),
        "chunked" => {
            let data = pattern(arg);
            let pieces: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = data
                .chunks(7919)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let stream = futures_util::stream::iter(pieces);
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg as u64)).await;
            Response::new(full(format!("{{\"backend\":\"{name}\",\"slept\":{arg}}}")))
        }
        "status" => {
            let mut r = Response::new(full(format!("{{\"backend\":\"{name}\"}}")));
            *r.status_mut() = StatusCode::from_u16(arg as u16).unwrap_or(StatusCode::OK);
            r
        }
        "upgrade" => {
            // 101, then echo every byte back on the raw connection.
            let proto = req.headers().get("upgrade").cloned();
            tokio::spawn(async move {
                if let Ok(up) = hyper::upgrade::on(req).await {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            if let Some(p) = proto {
                r.headers_mut().insert("upgrade", p);
            }
            return Ok(r);
        }
        "echo" => {
            // Streams the request body back as it arrives.
            Response::new(
                req.into_body()
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                    .boxed(),
            )
        }
        _ => {
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let authority = req.uri().authority().map(|a| a.to_string());
            let cookies: Vec<String> = req
                .headers()
                .get_all("cookie")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let (body, trailers) = match req.into_body().collect().await {
                Ok(c) => {
                    stats.complete.fetch_add(1, SeqCst);
                    let t: serde_json::Map<String, serde_json::Value> = c
                        .trailers()
                        .iter()
                        .flat_map(|m| m.iter())
                        .map(|(k, v)| {
                            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                            (k.as_str().to_string(), serde_json::Value::from(v))
                        })
                        .collect();
                    (c.to_bytes(), t)
                }
                Err(_) => (Bytes::new(), Default::default()),
            };
            let hdrs: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect();
            let v = serde_json::json!({
                "backend": name, "method": method, "target": target, "headers": hdrs,
                "version": version, "cookies": cookies, "authority": authority,
                "body_len": body.len(), "body_fnv": fnv(&body).to_string(), "trailers": trailers,
            });
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    };
    Ok(resp)
}
