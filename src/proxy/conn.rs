//! One client connection: read a head, check it, route it, forward it, stream the answer back,
//! and start over for the next request on the same connection, routed on its own.
use super::body::{self, CopyError};
use super::bufpool;
use super::io::{read_head, write_all, ReadHeadError};
use super::request_id;
use super::upstream::{checkout, ConnectError};
use crate::http::error::{self, ErrorKind};
use crate::http::framing::{self, Body};
use crate::http::head::{self, HeadError, RequestHead};
use crate::http::response::{self, ResponseHead};
use crate::http::rewrite::{self, Forward, Reply};
use crate::http::{list_items, name_is};
use crate::routing::table::KeyInput;
use crate::routing::{Decision, Rule};
use crate::state::Shared;
use crate::upstream::Upstream;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long to wait for a backend's `100 Continue` before sending our own (as curl does).
const EXPECT_WAIT: Duration = Duration::from_secs(1);
/// Body bytes sent in the same write as the head when they are already at hand.
const COALESCE: usize = 16 * 1024;
/// How long a connection closed after an error keeps reading (and discarding) what the client
/// still sends; see [`linger`].
const LINGER: Duration = Duration::from_secs(2);

enum Next {
    KeepAlive,
    Close,
    /// The connection became a tunnel to this upstream stream.
    Tunnel(TcpStream),
}

struct Conn {
    shared: Arc<Shared>,
    client: TcpStream,
    peer_ip: IpText,
    /// Request bytes; lent from [`bufpool`] only while a head or body is being read.
    buf: BytesMut,
    head: RequestHead,
    /// Heads being written; allocated with the first request.
    out: Vec<u8>,
    /// Response bytes; lent from [`bufpool`] for one exchange.
    up_buf: BytesMut,
    resp: ResponseHead,
    rid: Vec<u8>,
    shutdown: watch::Receiver<bool>,
    served: u64,
    /// `METHOD target` for the access log, filled only when it is on.
    line: String,
    /// The current request is a HEAD: answers to it carry no body.
    is_head: bool,
    /// The connection closes after an error, maybe before the request was read whole.
    linger: bool,
    /// `access_log` of the table the current request is served with.
    access_log: bool,
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

/// Serves one accepted client connection until it closes.
pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    // TCP_NODELAY comes from the listening socket (see listener::bind).
    let shutdown = shared.shutdown.subscribe();
    let mut c = Conn {
        shared,
        client,
        peer_ip: IpText::new(peer.ip()),
        buf: BytesMut::new(),
        head: RequestHead::default(),
        out: Vec::new(),
        up_buf: BytesMut::new(),
        resp: ResponseHead::default(),
        rid: Vec::with_capacity(40),
        shutdown,
        served: 0,
        line: String::new(),
        is_head: false,
        linger: false,
        access_log: false,
    };
    loop {
        match c.one().await {
            Next::KeepAlive => c.served += 1,
            Next::Close => break,
            Next::Tunnel(upstream) => {
                let idle = c.shared.table.load().server.idle_timeout;
                if let Err(e) =
                    super::tunnel::splice(c.client, &mut c.buf, upstream, &mut c.up_buf, idle).await
                {
                    log::debug!("tunnel ended: {e}");
                }
                return;
            }
        }
    }
    // A clean close needs no shutdown(): dropping the socket sends the same FIN (and, with
    // unread input, the same reset), one syscall per connection fewer. After an error the FIN
    // goes first so the client reads our answer while we drain what it still sends.
    if c.linger {
        let _ = c.client.shutdown().await;
        linger(&mut c.client, &mut c.buf).await;
    }
}

/// Closing a socket that still has unread input makes the kernel send a reset, and a client
/// still sending its body then gets a broken pipe instead of our answer (the 404 or 413 it
/// should read). So after an error answer and our FIN, read and discard until the client
/// closes, for at most [`LINGER`] (what HAProxy and nginx call a lingering close).
async fn linger(client: &mut TcpStream, buf: &mut BytesMut) {
    let deadline = Instant::now() + LINGER;
    loop {
        buf.clear();
        match super::io::read_some(client, buf, deadline).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Moves the body bytes already read (up to `left`) behind a head in `out`, so that a small
/// message leaves in one write; larger ones are streamed from `pending` as usual.
fn coalesce(out: &mut Vec<u8>, pending: &mut BytesMut, left: &mut u64) {
    let k = (pending.len() as u64).min(*left) as usize;
    if k > 0 && k <= COALESCE {
        out.extend_from_slice(&pending[..k]);
        pending.advance(k);
        *left -= k as u64;
    }
}

/// Reads and parses a backend's response head into `resp`; returns its length. A stall past
/// `deadline` is a 504; a close, an oversized or an invalid head a 502.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    up_buf: &mut BytesMut,
    resp: &mut ResponseHead,
    s: &crate::config::Server,
    deadline: Instant,
) -> Result<usize, ErrorKind> {
    let n = match read_head(
        stream,
        up_buf,
        s.max_header_bytes,
        deadline,
        s.upstream_timeout,
    )
    .await
    {
        Ok(n) => n,
        Err(ReadHeadError::Timeout) => return Err(ErrorKind::GatewayTimeout),
        Err(_) => return Err(ErrorKind::BadGateway),
    };
    response::parse(up_buf, n, resp).map_err(|_| ErrorKind::BadGateway)?;
    Ok(n)
}

/// The message for a `read_response` failure.
fn describe(kind: ErrorKind, upstream: &Upstream, s: &crate::config::Server) -> String {
    match kind {
        ErrorKind::GatewayTimeout => format!(
            "{} did not answer within {:?}",
            upstream.label, s.upstream_timeout
        ),
        _ => format!(
            "{} closed the connection or sent an invalid response head",
            upstream.label
        ),
    }
}

/// What the access log and metrics hear about a finished exchange.
struct Done<'a> {
    status: u16,
    rule: Option<&'a Rule>,
    upstream: Option<&'a Upstream>,
}

impl Conn {
    fn rid_str(&self) -> String {
        String::from_utf8_lossy(&self.rid).into_owned()
    }

    async fn fail(&mut self, kind: ErrorKind, message: &str, close: bool) -> Next {
        self.fail_in(kind, message, close, None).await
    }

    /// `fail` for a request that was routed: metrics count the answer under its rule.
    async fn fail_in(
        &mut self,
        kind: ErrorKind,
        message: &str,
        close: bool,
        rule: Option<&Rule>,
    ) -> Next {
        if !close {
            // The connection stays: drop this request's head (it has no body, or we would
            // close), or the next turn of the loop would answer the same request again.
            self.buf.advance(self.head.len.min(self.buf.len()));
        }
        let gateway = self.shared.table.load().server.gateway_header.clone();
        let r = error::response(
            kind,
            message,
            &self.rid_str(),
            &gateway,
            close,
            self.is_head,
        );
        self.linger |= close;
        let sent = write_all(&mut self.client, &r, Duration::from_secs(5)).await;
        self.log(
            Done {
                status: kind.status(),
                rule,
                upstream: None,
            },
            Instant::now(),
        );
        if close || sent.is_err() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    fn log(&self, d: Done<'_>, started: Instant) {
        self.shared
            .metrics
            .observe(d.rule, d.upstream, d.status, started.elapsed());
        if !self.access_log {
            return;
        }
        log::info!(
            target: "access",
            "{} \"{}\" {} rule={} upstream={} {:.1}ms rid={}",
            self.peer_ip.as_str(),
            self.line,
            d.status,
            d.rule.map_or("-", |r| r.label.as_str()),
            d.upstream.map_or("-", |u| &*u.label),
            started.elapsed().as_secs_f64() * 1000.0,
            String::from_utf8_lossy(&self.rid),
        );
    }

    async fn one(&mut self) -> Next {
        // Only what the wait for the head needs; the table used for the request is loaded
        // once the head is here (see below), so this one is a guard, not an Arc clone.
        let (request_header_timeout, idle_timeout, max_header_bytes) = {
            let t = self.shared.table.load();
            self.access_log = t.server.access_log;
            (
                t.server.request_header_timeout,
                t.server.idle_timeout,
                t.server.max_header_bytes,
            )
        };
        self.line.clear();
        self.rid.clear();
        self.is_head = false;
        self.head.len = 0;

        // 1. The head: idle keep-alive waits end quietly; a slow head is a 408.
        let first_wait = if self.served == 0 {
            request_header_timeout
        } else {
            idle_timeout
        };
        let idle_wait = self.buf.is_empty();
        let first_byte = Instant::now() + first_wait;
        // Nothing buffered: wait for the first byte holding no buffer, so that idle
        // connections cost no buffer memory; an idle keep-alive wait also ends on drain.
        let mut read = Ok(0);
        if idle_wait {
            bufpool::release(&mut self.buf);
            let ready = tokio::time::timeout_at(first_byte, self.client.readable());
            let ready = if self.served > 0 {
                if *self.shutdown.borrow() {
                    return Next::Close;
                }
                tokio::select! {
                    r = ready => r,
                    _ = self.shutdown.changed() => return Next::Close,
                }
            } else {
                ready.await
            };
            read = match ready {
                Ok(Ok(())) => Ok(0),
                Ok(Err(e)) => Err(ReadHeadError::Io(e)),
                Err(_) => Err(ReadHeadError::Timeout),
            };
        }
        if read.is_ok() {
            if self.buf.capacity() == 0 {
                self.buf = bufpool::take();
            }
            read = read_head(
                &mut self.client,
                &mut self.buf,
                max_header_bytes,
                first_byte,
                request_header_timeout,
            )
            .await;
        }
        let len = match read {
            Ok(n) => n,
            Err(ReadHeadError::Closed | ReadHeadError::Io(_)) => return Next::Close,
            Err(ReadHeadError::Truncated) => return Next::Close,
            Err(ReadHeadError::Timeout) => {
                if self.buf.is_empty() && self.served > 0 {
                    return Next::Close;
                }
                request_id::generate(&mut self.rid);
                return self
                    .fail(
                        ErrorKind::RequestTimeout,
                        "request head not received in time",
                        true,
                    )
                    .await;
            }
            Err(ReadHeadError::Head(e)) => {
                request_id::generate(&mut self.rid);
                return self.head_error(e).await;
            }
        };
        let started = Instant::now();
        // The table current when the head arrived, not when the wait for it began: a request
        // on a connection that sat idle across a reload is routed with the new table.
        let table = self.shared.table.load_full();
        let s = &*table.server;
        self.access_log = s.access_log;
        if let Err(e) = head::parse(&self.buf, len, &mut self.head) {
            request_id::generate(&mut self.rid);
            return self.head_error(e).await;
        }
        self.is_head = self.head.method(&self.buf) == b"HEAD";
        match self.head.header(&self.buf, "x-request-id") {
            Some(v) if request_id::acceptable(v) => self.rid.extend_from_slice(v),
            _ => request_id::generate(&mut self.rid),
        }
        if s.access_log {
            self.line
                .push_str(&String::from_utf8_lossy(self.head.method(&self.buf)));
            self.line.push(' ');
            self.line
                .push_str(&String::from_utf8_lossy(self.head.target(&self.buf)));
        }

        // 2. Framing and smuggling checks: nothing reaches a backend before these pass.
        let fr = match framing::request(&self.buf, &self.head) {
            Ok(f) => f,
            Err(e) => {
                let kind = if e.status == 417 {
                    ErrorKind::ExpectationFailed
                } else {
                    ErrorKind::BadRequest
                };
                return self.fail(kind, e.message, true).await;
            }
        };
        let method = self.head.method(&self.buf);
        let target = self.head.target(&self.buf);
        let is_head = method == b"HEAD";
        let is_connect = method == b"CONNECT";
        let path = head::route_path(target);
        if path.is_none() && !is_connect && target != b"*" {
            return self
                .fail(ErrorKind::BadRequest, "invalid request target", true)
                .await;
        }
        if path.is_some_and(head::has_dot_segment) {
            return self
                .fail(
                    ErrorKind::BadRequest,
                    "dot segments (. or ..) are not allowed in paths",
                    true,
                )
                .await;
        }
        let minor = self.head.minor_version;
        // An error answered before the body was read must close: the unread body would be
        // taken for the next request.
        let close_on_error = fr.body != Body::None || !fr.keep_alive;

        // 3. Route (shard keys come from the query string or a header). A replica whose
        // store has not loaded yet has no complete table to route with.
        if !table.ready {
            return self
                .fail(
                    ErrorKind::NotReady,
                    "the routing table is not loaded yet",
                    close_on_error,
                )
                .await;
        }
        let decision = {
            let (buf, head) = (&self.buf, &self.head);
            let header = |name: &str| head.header(buf, name);
            let keys = KeyInput {
                query: target
                    .iter()
                    .position(|b| *b == b'?')
                    .map(|i| &target[i + 1..]),
                header: &header,
            };
            let mut host_buf = crate::routing::host::HostBuf::default();
            let host = if table.uses_hosts() {
                let raw = head.header(buf, "host");
                crate::routing::host::of_request(target, raw, &mut host_buf)
            } else {
                None
            };
            table.route(method, host, path, &keys)
        };
        let (rule, candidates) = match decision {
            Decision::Forward { rule, candidates } => (rule, candidates),
            Decision::NotFound => {
                return self
                    .fail(
                        ErrorKind::NoRoute,
                        "no route matches this request",
                        close_on_error,
                    )
                    .await;
            }
            Decision::BadKey { rule, reason } => {
                let msg = format!("{reason} (shard {})", rule.pool.name);
                return self
                    .fail_in(ErrorKind::BadRequest, &msg, true, Some(rule))
                    .await;
            }
        };
        rule.requests.fetch_add(1, Relaxed);

        // 3b. API key: a route with a permission needs a key that holds it.
        let mut key_name: Option<&str> = None;
        if let Some(perm) = &rule.permission {
            let presented = self.head.header(&self.buf, "x-api-key");
            match presented.and_then(|k| crate::registry::rules::find_key(&table.api_keys, k)) {
                None => {
                    let msg = if presented.is_some() {
                        "unknown API key"
                    } else {
                        "this route needs an X-API-Key"
                    };
                    return self
                        .fail_in(ErrorKind::Unauthorized, msg, close_on_error, Some(rule))
                        .await;
                }
                Some(k) if !k.permissions.iter().any(|p| p == perm) => {
                    let msg = format!("API key {} lacks permission {perm}", k.name);
                    return self
                        .fail_in(ErrorKind::Forbidden, &msg, close_on_error, Some(rule))
                        .await;
                }
                Some(k) => key_name = Some(&k.name),
            }
        }

        // 4. Connect: the first candidate that accepts; connect failures move on.
        let mut co = match checkout(candidates, s.connect_timeout, s.idle_timeout).await {
            Ok(c) => c,
            Err(e) => {
                let (kind, label) = (rule.kind.as_str(), &rule.label);
                let msg = match e {
                    ConnectError::NoCandidates => format!("no healthy address for {kind} {label}"),
                    ConnectError::AllFailed(e) => {
                        format!("no address of {kind} {label} could be reached ({e})")
                    }
                };
                return self
                    .fail_in(
                        ErrorKind::ServiceUnavailable,
                        &msg,
                        close_on_error,
                        Some(rule),
                    )
                    .await;
            }
        };
        let upstream = co.upstream.clone();
        upstream.count_request();
        if self.up_buf.capacity() == 0 {
            self.up_buf = bufpool::take();
        }
        if self.out.capacity() == 0 {
            self.out.reserve(1024);
        }

        // 5. The head the backend sees, with the first body bytes when they are here.
        let fwd = Forward {
            client_ip: self.peer_ip.as_str(),
            proto: "http",
            request_id: &self.rid,
            api_key_name: key_name,
            shard: rule
                .shard
                .as_ref()
                .and_then(|_| rule.pool.ordinal_of(&upstream)),
            content_length: match fr.body {
                Body::Length(n) => Some(n),
                // A `Content-Length: 0` the client sent goes on: some servers answer 411 to
                // a POST without one. (Framing passed, so any such header says 0.)
                Body::None if self.head.header(&self.buf, "content-length").is_some() => Some(0),
                _ => None,
            },
            chunked: fr.body == Body::Chunked,
            upgrade: fr.upgrade,
            host_fallback: &upstream.label,
            edits: &rule.edits,
        };
        rewrite::request_head(&self.buf, &self.head, &fwd, &mut self.out);
        self.buf.advance(len);
        let mut body_left = match fr.body {
            Body::Length(n) => n,
            _ => 0,
        };
        if !fr.expect_continue {
            coalesce(&mut self.out, &mut self.buf, &mut body_left);
        }
        if write_all(&mut co.stream, &self.out, s.idle_timeout)
            .await
            .is_err()
        {
            let msg = format!(
                "{} closed the connection before the request was sent",
                upstream.label
            );
            return self
                .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                .await;
        }
        let sent_at = Instant::now();

        // 6. Expect: 100-continue, then the request body.
        let mut client_close = !fr.keep_alive;
        let mut reusable = true;
        let mut have_final = false;
        let mut sent_continue = false;
        if fr.expect_continue {
            let wait = Instant::now() + EXPECT_WAIT.min(s.upstream_timeout);
            match read_head(
                &mut co.stream,
                &mut self.up_buf,
                s.max_header_bytes,
                wait,
                EXPECT_WAIT,
            )
            .await
            {
                Ok(n) => match response::parse(&self.up_buf, n, &mut self.resp) {
                    Ok(()) if (100..200).contains(&self.resp.status) && self.resp.status != 101 => {
                        rewrite::interim_head(&self.up_buf, &self.resp, &mut self.out);
                        self.up_buf.advance(n);
                        if write_all(&mut self.client, &self.out, s.idle_timeout)
                            .await
                            .is_err()
                        {
                            return Next::Close;
                        }
                        sent_continue = true;
                    }
                    Ok(()) => {
                        // A final answer without 100: the body is not sent, and the client
                        // connection cannot be reused since it may send it anyway.
                        have_final = true;
                        client_close = true;
                        reusable = false;
                    }
                    Err(_) => {
                        let msg = format!("{} sent an invalid response", upstream.label);
                        return self
                            .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                            .await;
                    }
                },
                Err(ReadHeadError::Timeout) => {
                    if write_all(
                        &mut self.client,
                        b"HTTP/1.1 100 Continue\r\n\r\n",
                        s.idle_timeout,
                    )
                    .await
                    .is_err()
                    {
                        return Next::Close;
                    }
                    sent_continue = true;
                }
                Err(_) => {
                    let msg = format!("{} closed the connection", upstream.label);
                    return self
                        .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                        .await;
                }
            }
        }
        if !have_final && (body_left > 0 || fr.body == Body::Chunked) {
            // The body goes up while the backend is watched: an answer that comes before the
            // body is all sent (a 413, a backend that closes) ends the upload instead of
            // deadlocking it; an interim answer is relayed and the upload goes on.
            enum Upload {
                Sent(Result<(), CopyError>),
                /// A final answer came first; then the upload ended like this.
                EarlyFinal(Result<(), CopyError>),
                Fail(ErrorKind, String),
                ClientGone,
            }
            let outcome = {
                let Conn {
                    client,
                    buf,
                    up_buf,
                    resp,
                    out,
                    ..
                } = &mut *self;
                let (mut cr, mut cw) = client.split();
                let (mut ur, mut uw) = co.stream.split();
                let idle = s.idle_timeout;
                let send = async {
                    match fr.body {
                        Body::Length(_) => {
                            body::copy_length(&mut cr, buf, &mut uw, body_left, idle).await
                        }
                        _ => body::copy_chunked(&mut cr, buf, &mut uw, idle).await,
                    }
                };
                tokio::pin!(send);
                let first = loop {
                    let mut probe = [0u8; 1];
                    let peeked = tokio::select! {
                        biased;
                        r = &mut send => break Some(Upload::Sent(r)),
                        p = ur.peek(&mut probe) => p,
                    };
                    if !matches!(peeked, Ok(n) if n > 0) {
                        break Some(Upload::Fail(
                            ErrorKind::BadGateway,
                            format!(
                                "{} closed the connection while receiving the body",
                                upstream.label
                            ),
                        ));
                    }
                    let deadline = Instant::now() + s.upstream_timeout;
                    let n = match read_response(&mut ur, up_buf, resp, s, deadline).await {
                        Ok(n) => n,
                        Err(kind) => break Some(Upload::Fail(kind, describe(kind, &upstream, s))),
                    };
                    let st = resp.status;
                    if !(100..200).contains(&st) || st == 101 {
                        break None;
                    }
                    let skip = st == 100 && (sent_continue || !fr.expect_continue) || minor == 0;
                    if !skip {
                        rewrite::interim_head(up_buf, resp, out);
                        if write_all(&mut cw, out, idle).await.is_err() {
                            break Some(Upload::ClientGone);
                        }
                        sent_continue |= st == 100;
                    }
                    up_buf.advance(n);
                };
                // After an early final answer the upload still goes on: a backend that
                // streams its answer while reading (an echo) needs the rest, and one that
                // refuses it (a 413) closes, which ends the upload at once.
                match first {
                    Some(o) => o,
                    None => Upload::EarlyFinal((&mut send).await),
                }
            };
            match outcome {
                Upload::Sent(Ok(())) => {}
                Upload::Sent(Err(CopyError::Invalid(m))) => {
                    return self
                        .upstream_fail(ErrorKind::BadRequest, m, rule, &upstream, started)
                        .await;
                }
                Upload::Sent(Err(CopyError::SourceEof | CopyError::Source(_)))
                | Upload::ClientGone => return Next::Close,
                Upload::Sent(Err(CopyError::Sink(_)))
                    if !self.final_answer_waiting(&mut co.stream, s).await =>
                {
                    let msg = format!(
                        "{} closed the connection while receiving the body",
                        upstream.label
                    );
                    return self
                        .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                        .await;
                }
                Upload::EarlyFinal(Ok(())) => have_final = true,
                // The backend stopped reading after answering (it refused the body).
                Upload::Sent(Err(CopyError::Sink(_)))
                | Upload::EarlyFinal(Err(CopyError::Sink(_))) => {
                    // The backend stopped reading: the rest of the body is never read, and
                    // neither connection can carry another request.
                    have_final = true;
                    client_close = true;
                    reusable = false;
                    // The client may still be sending: drain it after the answer so the
                    // close does not reset the connection under the response.
                    self.linger = true;
                }
                Upload::EarlyFinal(Err(CopyError::Invalid(m))) => {
                    return self
                        .upstream_fail(ErrorKind::BadRequest, m, rule, &upstream, started)
                        .await;
                }
                Upload::EarlyFinal(Err(CopyError::SourceEof | CopyError::Source(_))) => {
                    return Next::Close
                }
                Upload::Fail(kind, msg) => {
                    return self
                        .upstream_fail(kind, &msg, rule, &upstream, started)
                        .await;
                }
            }
        }

        // 7. The response head; interim answers are relayed, a stall is a 504.
        let deadline = sent_at + s.upstream_timeout;
        loop {
            if !have_final {
                if let Err(kind) = read_response(
                    &mut co.stream,
                    &mut self.up_buf,
                    &mut self.resp,
                    s,
                    deadline,
                )
                .await
                {
                    let msg = describe(kind, &upstream, s);
                    return self
                        .upstream_fail(kind, &msg, rule, &upstream, started)
                        .await;
                }
            }
            have_final = false;
            let st = self.resp.status;
            if (100..200).contains(&st) && st != 101 {
                let skip = st == 100 && (sent_continue || !fr.expect_continue) || minor == 0;
                if !skip {
                    rewrite::interim_head(&self.up_buf, &self.resp, &mut self.out);
                    if write_all(&mut self.client, &self.out, s.idle_timeout)
                        .await
                        .is_err()
                    {
                        return Next::Close;
                    }
                }
                self.up_buf.advance(self.resp.len);
                continue;
            }
            break;
        }
        let upstream_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
        let status = self.resp.status;

        // 8. Tunnels: a 101 to an upgrade, a 2xx to CONNECT.
        if (status == 101 && fr.upgrade) || (is_connect && (200..300).contains(&status)) {
            let reply = Reply {
                gateway: &s.gateway_header,
                upstream_ms,
                content_length: None,
                chunked: false,
                close: false,
                keep_alive_1_0: false,
                switching: status == 101,
                edits: &rule.edits.response,
            };
            rewrite::response_head(&self.up_buf, &self.resp, &reply, &mut self.out);
            self.up_buf.advance(self.resp.len);
            if write_all(&mut self.client, &self.out, s.idle_timeout)
                .await
                .is_err()
            {
                return Next::Close;
            }
            self.log(
                Done {
                    status,
                    rule: Some(rule),
                    upstream: Some(&upstream),
                },
                started,
            );
            return Next::Tunnel(co.stream);
        }
        if status == 101 {
            let msg = format!("{} switched protocols without being asked", upstream.label);
            return self
                .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                .await;
        }

        // 9. The response: framing towards the client, then the body.
        let rbody = match framing::response(&self.up_buf, &self.resp.headers, status, is_head) {
            Ok(b) => b,
            Err(m) => {
                let msg = format!("{} sent an invalid response: {m}", upstream.label);
                return self
                    .upstream_fail(ErrorKind::BadGateway, &msg, rule, &upstream, started)
                    .await;
            }
        };
        let backend_close = self.resp.minor_version == 0
            || self.resp.headers.iter().any(|h| {
                name_is(&self.up_buf[h.name.clone()], "connection")
                    && list_items(&self.up_buf[h.value.clone()])
                        .any(|t| t.eq_ignore_ascii_case(b"close"))
            });
        client_close |= self.shared.draining();
        let (content_length, chunked) = match rbody {
            Body::Length(n) => (Some(n), false),
            // The length of the resource a HEAD or 304 describes is kept (RFC 9110 §8.6).
            Body::None if is_head || status == 304 => (
                framing::declared_length(&self.up_buf, &self.resp.headers),
                false,
            ),
            Body::None if status == 204 || status < 200 => (None, false),
            Body::None => (Some(0), false),
            Body::Chunked | Body::UntilClose if minor == 1 => (None, true),
            Body::Chunked | Body::UntilClose => {
                client_close = true;
                (None, false)
            }
        };
        let reply = Reply {
            gateway: &s.gateway_header,
            upstream_ms,
            content_length,
            chunked,
            close: client_close,
            keep_alive_1_0: minor == 0 && !client_close,
            switching: false,
            edits: &rule.edits.response,
        };
        rewrite::response_head(&self.up_buf, &self.resp, &reply, &mut self.out);
        self.up_buf.advance(self.resp.len);
        let mut resp_left = match rbody {
            Body::Length(n) => n,
            _ => 0,
        };
        coalesce(&mut self.out, &mut self.up_buf, &mut resp_left);
        if write_all(&mut self.client, &self.out, s.idle_timeout)
            .await
            .is_err()
        {
            return Next::Close;
        }
        let copied = match rbody {
            Body::Length(_) if resp_left > 0 => {
                body::copy_length(
                    &mut co.stream,
                    &mut self.up_buf,
                    &mut self.client,
                    resp_left,
                    s.idle_timeout,
                )
                .await
            }
            Body::Chunked if minor == 1 => {
                body::copy_chunked(
                    &mut co.stream,
                    &mut self.up_buf,
                    &mut self.client,
                    s.idle_timeout,
                )
                .await
            }
            Body::Chunked => {
                body::copy_chunked_decoded(
                    &mut co.stream,
                    &mut self.up_buf,
                    &mut self.client,
                    s.idle_timeout,
                )
                .await
            }
            Body::UntilClose => {
                reusable = false;
                body::copy_until_close(
                    &mut co.stream,
                    &mut self.up_buf,
                    &mut self.client,
                    s.idle_timeout,
                    minor == 1,
                    &mut self.out,
                )
                .await
            }
            _ => Ok(()),
        };
        if let Err(e) = copied {
            // The head is out: the only honest signal left is closing the connection.
            log::warn!("response body from {} broken off: {e:?}", upstream.label);
            self.log(
                Done {
                    status,
                    rule: Some(rule),
                    upstream: Some(&upstream),
                },
                started,
            );
            return Next::Close;
        }
        if reusable && !backend_close && self.up_buf.is_empty() {
            upstream.idle.release(co.stream);
        }
        self.up_buf.clear();
        bufpool::release(&mut self.up_buf);
        self.log(
            Done {
                status,
                rule: Some(rule),
                upstream: Some(&upstream),
            },
            started,
        );
        if client_close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// After the backend stopped taking the body: whether it left a final answer to relay
    /// (parsed into `self.resp`). It has had to write it before closing, so a short wait is
    /// enough; what it already sent is readable even after its reset.
    async fn final_answer_waiting(
        &mut self,
        up: &mut TcpStream,
        s: &crate::config::Server,
    ) -> bool {
        let wait = Duration::from_millis(200);
        loop {
            let Ok(n) = read_head(
                up,
                &mut self.up_buf,
                s.max_header_bytes,
                Instant::now() + wait,
                wait,
            )
            .await
            else {
                return false;
            };
            if response::parse(&self.up_buf, n, &mut self.resp).is_err() {
                return false;
            }
            if !(100..200).contains(&self.resp.status) || self.resp.status == 101 {
                return true;
            }
            // An interim answer before the refusal: not for a client whose upload failed.
            self.up_buf.advance(n);
        }
    }

    async fn head_error(&mut self, e: HeadError) -> Next {
        match e {
            HeadError::Malformed(m) => self.fail(ErrorKind::BadRequest, m, true).await,
            HeadError::UriTooLong => {
                self.fail(
                    ErrorKind::UriTooLong,
                    "request line longer than max_header_bytes",
                    true,
                )
                .await
            }
            HeadError::TooLarge => {
                self.fail(
                    ErrorKind::HeadersTooLarge,
                    "request head larger than max_header_bytes",
                    true,
                )
                .await
            }
        }
    }

    /// Answers an upstream failure before any of the response reached the client; the
    /// upstream connection is dropped, never pooled.
    async fn upstream_fail(
        &mut self,
        kind: ErrorKind,
        message: &str,
        rule: &Rule,
        upstream: &Upstream,
        started: Instant,
    ) -> Next {
        log::warn!("{message}");
        self.up_buf.clear();
        let gateway = self.shared.table.load().server.gateway_header.clone();
        let r = error::response(kind, message, &self.rid_str(), &gateway, true, self.is_head);
        self.linger = true;
        let _ = write_all(&mut self.client, &r, Duration::from_secs(5)).await;
        self.log(
            Done {
                status: kind.status(),
                rule: Some(rule),
                upstream: Some(upstream),
            },
            started,
        );
        Next::Close
    }
}
