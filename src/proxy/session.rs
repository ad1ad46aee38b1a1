//! One client connection, whatever carries it (TCP today, TLS once it lands): [`serve`] takes
//! any [`ClientStream`] and drives it request after request: `read` the next head, then one
//! [`Exchange`] through the phases and `finish`, and either the next request (routed on its
//! own), a tunnel, or the close. The session owns the sockets and buffers; each exchange is
//! fresh.
use super::bufpool;
use super::deadline::Timer;
use super::downstream::{Downstream, RequestBody};
use super::error::ProxyError;
use super::exchange::{self, Bufs, Exchange, Request};
use super::finish::{self, LogLine, Next};
use super::h1::{H1Body, H1Out};
use super::read::{self, NoRequest};
use super::splice::AsTcp;
use crate::http::framing::Body;
use crate::http::response::ResponseHead;
use crate::state::DataPlane;
use bytes::BytesMut;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a connection closed after an error keeps reading (and discarding) what the client
/// still sends; see [`Session::linger`].
const LINGER: Duration = Duration::from_secs(2);

/// A client transport the session can serve. `AsTcp`: the plain socket under it, if any, so
/// that long bodies can be spliced.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + AsTcp {
    /// Resolves once a read would not block (bytes, EOF or an error), holding no buffer
    /// meanwhile: idle keep-alive connections wait here. A stream that keeps decrypted bytes
    /// of its own must resolve at once while it holds some.
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Borrowed halves, so that an upload and its answer move at the same time.
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + AsTcp + '_,
        impl AsyncWrite + Unpin + Send + AsTcp + '_,
    ) {
        tokio::io::split(self)
    }
}

impl ClientStream for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }

    /// A plain socket's own halves: no lock, and each gives the socket to splice with.
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + AsTcp + '_,
        impl AsyncWrite + Unpin + Send + AsTcp + '_,
    ) {
        self.split()
    }
}

/// What the transport says about a connection, for the forwarded head and the log.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// Set when the client connection is TLS.
    pub tls: Option<TlsInfo>,
}

/// The TLS side of a connection.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.3` and the like.
    pub version: &'static str,
    /// The server name the client asked for: recorded at the handshake, read by nothing yet.
    #[allow(dead_code)]
    pub sni: Option<String>,
}

impl ConnInfo {
    /// The scheme the client used, for `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A client address as text, inline: no allocation per connection for what every forwarded
/// head and log line repeats.
struct IpText {
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    fn new(ip: std::net::IpAddr) -> Self {
        use std::io::Write;
        let mut bytes = [0u8; 45];
        let mut w = &mut bytes[..];
        // 45 bytes hold the longest IPv6 text (v4-mapped with dotted quad).
        let _ = write!(w, "{ip}");
        let len = (45 - w.len()) as u8;
        IpText { bytes, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// One client connection's state across its requests.
pub(crate) struct Session<S> {
    pub dp: Arc<DataPlane>,
    pub client: S,
    peer: std::net::IpAddr,
    peer_ip: IpText,
    info: ConnInfo,
    /// Request bytes; lent from [`bufpool`] only while a head or body is being read.
    pub buf: BytesMut,
    /// The current request; its vectors are kept from one request to the next.
    pub req: Request,
    /// Heads being written; allocated with the first request.
    out: Vec<u8>,
    /// Response bytes; lent from [`bufpool`] for one exchange.
    up_buf: BytesMut,
    resp: ResponseHead,
    /// The timer of every wait on the hot path (keep-alive, request head, answer head).
    pub timer: Timer,
    pub shutdown: watch::Receiver<bool>,
    /// Resolves on drain; made at the first keep-alive wait (see `read::idle_wait`).
    pub drain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Requests served so far.
    pub served: u64,
    /// `access_log` of the table the current request is read with.
    pub access_log: bool,
    /// When the connection was accepted: the first head is due `request_header_timeout`
    /// after this, however long the protocol detection took.
    pub opened: Instant,
}

/// Serves one accepted client connection until it closes: the entry point for every
/// transport (plain TCP from the listener; TLS streams after their handshake).
pub async fn serve<S: ClientStream>(
    dp: Arc<DataPlane>,
    stream: S,
    peer: SocketAddr,
    info: ConnInfo,
) {
    serve_from(dp, stream, peer, info, Instant::now(), BytesMut::new()).await
}

/// [`serve`] for a connection opened at `opened` whose first bytes were read already
/// (`buf`: by the HTTP/2 preface detection).
async fn serve_from<S: ClientStream>(
    dp: Arc<DataPlane>,
    stream: S,
    peer: SocketAddr,
    info: ConnInfo,
    opened: Instant,
    buf: BytesMut,
) {
    let shutdown = dp.shutdown.subscribe();
    let mut s = Session {
        dp,
        client: stream,
        peer: peer.ip(),
        peer_ip: IpText::new(peer.ip()),
        info,
        buf,
        req: Request::default(),
        out: Vec::new(),
        up_buf: BytesMut::new(),
        resp: ResponseHead::default(),
        timer: Timer::default(),
        shutdown,
        drain: None,
        served: 0,
        access_log: false,
        opened,
    };
    loop {
        match s.turn().await {
            Next::KeepAlive => s.served += 1,
            // A clean close needs no shutdown(): dropping the socket sends the same FIN
            // (and, with unread input, the same reset), one syscall per connection fewer.
            Next::Close => return,
            Next::Linger => return s.linger().await,
            // Boxed, as rare paths: their futures would add to every connection's task.
            Next::Tunnel(upstream, log) => return Box::pin(s.tunnel(upstream, log)).await,
        }
    }
}

/// [`serve`] for a plain TCP connection from the listener, or HTTP/2 when it opens with the
/// HTTP/2 preface and `[server] h2c` is on (prior knowledge, SPEC §10). Nearly always the
/// first read already tells (a peek, nothing consumed); a preface that comes in pieces is
/// read until it is complete or proves to be something else.
pub async fn serve_tcp(dp: Arc<DataPlane>, mut stream: TcpStream, peer: SocketAddr) {
    let opened = Instant::now();
    let (h2c, header_timeout) = {
        let t = dp.table.load();
        (t.server.h2c, t.server.request_header_timeout)
    };
    let mut buf = BytesMut::new();
    if h2c {
        // The first bytes are read, not peeked (one syscall per connection fewer), into a
        // buffer taken only once the socket is readable: a silent connection holds none.
        let deadline = opened + header_timeout;
        loop {
            let read = tokio::time::timeout_at(deadline, async {
                stream.readable().await?;
                if buf.capacity() == 0 {
                    buf = bufpool::take();
                } else if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(super::io::READ_CHUNK);
                }
                // A read through AsyncRead, not try_read: a short read clears the socket's
                // readiness, so that the keep-alive wait after this request really waits
                // (and sees a drain) instead of finding stale readiness.
                stream.read_buf(&mut buf).await
            });
            match read.await {
                Ok(Ok(k)) if k > 0 => {}
                // A late or failed first byte, or EOF: the session answers or closes it as it
                // would any other.
                _ => break,
            }
            match super::h2::is_preface(&buf) {
                Some(true) => {
                    // A copy of the few bytes read, so that the pooled buffer goes back.
                    let head = bytes::Bytes::copy_from_slice(&buf);
                    buf.clear();
                    bufpool::release(&mut buf);
                    let io = super::h2::Rewind::new(head, stream);
                    // HTTP/2 connections are boxed: their driver's future would otherwise
                    // add to every HTTP/1 connection's task.
                    return Box::pin(super::h2::serve(dp, io, peer, None)).await;
                }
                Some(false) => break,
                // A preface in pieces so far: read on.
                None => {}
            }
        }
    }
    serve_from(dp, stream, peer, ConnInfo::default(), opened, buf).await
}

impl<S: ClientStream> Session<S> {
    /// One request: read, then the phases, then finish.
    async fn turn(&mut self) -> Next {
        let started = match read::read_request(self).await {
            Ok(t) => t,
            Err(NoRequest::Quiet) => return Next::Close,
            Err(NoRequest::Refused(e)) => return Box::pin(self.refuse(e)).await,
        };
        // The plain listener answers ACME challenges and the redirect to https itself,
        // before any routing.
        if self.info.tls.is_none() {
            let target = self.req.target();
            if let Some(a) = self.dp.tls.plain_answer(target, self.req.header("host")) {
                return Box::pin(self.answer_plain(a, started)).await;
            }
        }
        // The table current when the head arrived, not when the wait for it began: a request
        // on a connection that sat idle across a reload is routed with the new table.
        let table = self.dp.table.load_full();
        let Session {
            dp,
            client,
            buf,
            req,
            out,
            up_buf,
            resp,
            timer,
            peer,
            peer_ip,
            info,
            ..
        } = self;
        let s = &*table.server;
        let mut ex = Exchange::new(
            dp,
            &table,
            req,
            peer_ip.as_str(),
            *peer,
            info.proto(),
            started,
        );
        ex.tls = info.tls.as_ref().map(|t| t.version);
        let mut bufs = Bufs {
            out,
            up: up_buf,
            resp,
            timer,
        };
        let (minor, is_head) = (req.head.minor_version, req.is_head());
        let next = match req.framing.body {
            Body::None => {
                let mut down = H1Out {
                    w: &mut *client,
                    minor,
                    is_head,
                    idle: s.idle_timeout,
                    gateway: &s.gateway_header,
                    sent: 0,
                };
                let mut body = H1Body::none(buf, s.idle_timeout);
                one(&mut ex, &mut bufs, &mut down, &mut body).await
            }
            framing => {
                // The upload and the answer move at the same time: each gets its half.
                let (r, w) = client.halves();
                let mut down = H1Out {
                    w,
                    minor,
                    is_head,
                    idle: s.idle_timeout,
                    gateway: &s.gateway_header,
                    sent: 0,
                };
                let mut body = H1Body::new(r, buf, framing, s.idle_timeout);
                one(&mut ex, &mut bufs, &mut down, &mut body).await
            }
        };
        if !matches!(next, Next::Tunnel(..)) {
            bufs.up.clear();
            bufpool::release(bufs.up);
        }
        next
    }

    /// Writes an answer the plain listener gives without routing (a 308 to https, an ACME
    /// key authorization).
    async fn answer_plain(&mut self, a: crate::tls::PlainAnswer, started: Instant) -> Next {
        use std::fmt::Write;
        let gateway = self.dp.table.load().server.gateway_header.clone();
        let close = self.req.must_close_on_error();
        let (status, mut r, body) = match &a {
            crate::tls::PlainAnswer::Redirect(loc) => (
                308,
                format!("HTTP/1.1 308 Permanent Redirect\r\nLocation: {loc}\r\n"),
                "",
            ),
            crate::tls::PlainAnswer::Challenge(auth) => (
                200,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n".to_string(),
                auth.as_str(),
            ),
        };
        let _ = write!(
            r,
            "Content-Length: {}\r\nX-Gateway: {gateway}\r\nX-Request-Id: {}\r\n{}\r\n",
            body.len(),
            String::from_utf8_lossy(&self.req.rid),
            if close { "Connection: close\r\n" } else { "" },
        );
        if !self.req.is_head() {
            r.push_str(body);
        }
        let sent =
            super::io::write_all(&mut self.client, r.as_bytes(), Duration::from_secs(5)).await;
        let mut log = LogLine::own(
            self.access_log,
            self.peer_ip.as_str(),
            &self.req,
            self.tls(),
        );
        log.bytes_out = if sent.is_ok() { r.len() as u64 } else { 0 };
        finish::record(&self.dp, &log, None, None, status, started);
        match (sent, close) {
            (Err(_), _) => Next::Close,
            (Ok(()), true) => Next::Linger,
            (Ok(()), false) => Next::KeepAlive,
        }
    }

    /// Answers a request that never became an exchange (a bad or late head).
    async fn refuse(&mut self, e: ProxyError) -> Next {
        let started = Instant::now();
        let server = self.dp.table.load().server.clone();
        let mut down = H1Out {
            w: &mut self.client,
            minor: 1,
            is_head: self.req.head.len > 0 && self.req.is_head(),
            idle: server.idle_timeout,
            gateway: &server.gateway_header,
            sent: 0,
        };
        let Some((status, next)) = finish::answer(&mut down, &e, &self.req.rid, true).await else {
            return Next::Close;
        };
        let sent = down.sent;
        let tls = self.tls();
        let mut log = LogLine::own(self.access_log, self.peer_ip.as_str(), &self.req, tls);
        log.bytes_out = sent;
        finish::record(&self.dp, &log, None, None, status, started);
        next
    }

    /// Closing a socket that still has unread input makes the kernel send a reset, and a
    /// client still sending its body then gets a broken pipe instead of our answer (the 404 or
    /// 413 it should read). So after an error answer, send our FIN, then read and discard
    /// until the client closes, for at most [`LINGER`] (HAProxy's and nginx's lingering
    /// close).
    async fn linger(mut self) {
        let _ = self.client.shutdown().await;
        let deadline = Instant::now() + LINGER;
        loop {
            self.buf.clear();
            match super::io::read_some(&mut self.client, &mut self.buf, deadline).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Splices the client and `upstream` once the exchange became a tunnel; the access log
    /// gets its closing line.
    async fn tunnel(
        mut self,
        upstream: super::stream::BackendStream,
        log: Option<Box<finish::TunnelLog>>,
    ) {
        let idle = self.dp.table.load().server.idle_timeout;
        let flow = match super::tunnel::splice(
            self.client,
            &mut self.buf,
            upstream,
            &mut self.up_buf,
            idle,
        )
        .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                log::debug!("tunnel ended: {e}");
                None
            }
        };
        if let Some(t) = log {
            finish::tunnel_closed(&self.dp, self.peer_ip.as_str(), &self.req, &t, flow);
        }
    }

    fn tls(&self) -> Option<&'static str> {
        self.info.tls.as_ref().map(|t| t.version)
    }
}

/// One exchange through the phases, then finish.
async fn one<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    bufs: &mut Bufs<'_>,
    down: &mut D,
    body: &mut B,
) -> Next {
    let r = exchange::run(ex, bufs, down, body).await;
    finish::finish(ex, r, down, body.bytes_in()).await
}
