//! One request to an HTTP/2 backend as a [`BackendStream`](super::stream::BackendStream): the
//! phases write the forwarded HTTP/1.1 head and body into it and read an HTTP/1.1 answer out
//! of it, exactly as from an HTTP/1.1 backend, so connect, send, relay and finish (retries,
//! outlier reports, hold, access log, metrics) stay one path for both protocols (Envoy's codec
//! split: the router sees messages, the codec the wire). Here the head becomes an HTTP/2
//! request (`Host` → `:authority`, connection-specific fields out, `te: trailers` for gRPC),
//! body bytes become DATA frames as the stream's flow-control window allows, a chunked body's
//! trailer section becomes a trailing HEADERS frame; the answer becomes a head with its length
//! or `Transfer-Encoding: chunked`, DATA frames become chunks (window released only as the
//! relay takes them), and HTTP/2 trailers the last chunk's trailer section. Dropping it resets
//! the stream (RST_STREAM CANCEL): a client that goes away cancels the backend's work.
use crate::http::chunked::Decoder;
use crate::http::name_is;
use crate::upstream::h2pool::{Lease, Ready};
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most body bytes asked of the flow-control window at once.
const SEND_CHUNK: usize = 64 * 1024;
/// Longest forwarded head accepted (the phases bound it by `max_header_bytes` already).
const MAX_HEAD: usize = 256 * 1024;
/// Header fields per head.
const MAX_FIELDS: usize = 512;

/// A stream to an HTTP/2 backend, before and after its request head.
pub struct H2Upstream {
    send: Option<SendRequest<Bytes>>,
    /// `https` for `h2`, `http` for `h2c`: the request's `:scheme`.
    scheme: &'static str,
    /// `:authority` when the head has no `Host`.
    fallback: Box<str>,
    /// Bytes of the head until its blank line arrived.
    head: Vec<u8>,
    up: Up,
    down: Down,
    /// The client sent `TE: trailers`, which the forwarded head lost as hop-by-hop: HTTP/2
    /// carries that one value (RFC 9113 §8.2.2), so the backend gets it.
    te_trailers: bool,
    _lease: Lease,
}

impl std::fmt::Debug for H2Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H2Upstream")
    }
}

/// The request body going up.
pub struct Up {
    body: UpBody,
    stream: Option<SendStream<Bytes>>,
    /// A chunked body's trailer section while it arrives.
    trailers: Vec<u8>,
    /// The backend refused the stream unprocessed (see [`not_processed`]).
    refused: bool,
}

enum UpBody {
    /// The head has not been sent yet.
    Head,
    /// The head could not be expressed in HTTP/2 and was answered here: body bytes are taken
    /// and dropped.
    Discard,
    Length(u64),
    Chunked(Decoder),
    Done,
}

/// The answer coming down, as HTTP/1.1 bytes.
pub struct Down {
    state: DownState,
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    /// Bytes ready for the reader, in order.
    out: VecDeque<Bytes>,
    /// The client sent `Expect: 100-continue`: its `100` is ours to give (HTTP/2 has no
    /// expectation to forward).
    continue_100: bool,
    grpc: bool,
    /// The backend refused the stream unprocessed before any answer (see [`not_processed`]).
    refused: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DownState {
    /// Before the request head went up.
    Idle,
    Head,
    Length,
    Chunked,
    Trailers,
    Done,
}

fn h2_err(e: h2::Error) -> io::Error {
    let kind = if e.is_go_away() || e.is_io() || e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

/// Whether a stream's error says the backend did not process it (RFC 9113 §8.7), so that
/// sending it again is safe whatever its method: the backend reset it with REFUSED_STREAM,
/// or its GOAWAY named a last stream below this one (the h2 crate fails exactly those
/// streams with the remote GOAWAY; a stream at or below it that dies later sees an I/O
/// error instead). Any other reset may come after the backend acted on the request.
fn not_processed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// [`h2_err`], noting in `refused` when the backend did not process the stream.
fn stream_err(e: h2::Error, refused: &mut bool) -> io::Error {
    *refused |= not_processed(&e);
    h2_err(e)
}

impl H2Upstream {
    pub fn new(r: Ready, tls: bool, label: &str) -> Self {
        H2Upstream {
            send: Some(r.send),
            scheme: if tls { "https" } else { "http" },
            fallback: label.into(),
            head: Vec::new(),
            up: Up {
                body: UpBody::Head,
                stream: None,
                trailers: Vec::new(),
                refused: false,
            },
            down: Down {
                state: DownState::Idle,
                response: None,
                recv: None,
                out: VecDeque::new(),
                continue_100: false,
                grpc: false,
                refused: false,
            },
            te_trailers: false,
            _lease: r.lease,
        }
    }

    /// Sends `te: trailers` with the request (the client asked for trailers).
    pub fn te_trailers(&mut self) {
        self.te_trailers = true;
    }

    /// Whether the backend refused this stream without processing it and before any answer
    /// came (REFUSED_STREAM, or a GOAWAY below it): it may be sent again whatever its method.
    pub fn not_processed(&self) -> bool {
        (self.up.refused || self.down.refused)
            && matches!(self.down.state, DownState::Idle | DownState::Head)
    }

    /// The read half (the answer) and the write half (the body), apart.
    pub fn split(&mut self) -> (&mut Down, &mut Up) {
        (&mut self.down, &mut self.up)
    }

    /// Takes head bytes; once the blank line is in, sends the request. Returns how many of
    /// `buf` belonged to the head.
    fn take_head(&mut self, buf: &[u8]) -> io::Result<usize> {
        let old = self.head.len();
        self.head.extend_from_slice(buf);
        let from = old.saturating_sub(3);
        let Some(end) = memchr::memmem::find(&self.head[from..], b"\r\n\r\n").map(|i| from + i + 4)
        else {
            if self.head.len() > MAX_HEAD {
                return Err(io::Error::other("request head too large"));
            }
            return Ok(buf.len());
        };
        self.head.truncate(end);
        let head = std::mem::take(&mut self.head);
        let req = match to_h2(&head, self.scheme, &self.fallback) {
            Ok(mut r) => {
                if self.te_trailers {
                    let te = HeaderValue::from_static("trailers");
                    r.request.headers_mut().insert(http::header::TE, te);
                }
                r
            }
            Err(e) => {
                // Nothing reached the backend and it is not at fault: answered as a 400 of
                // our own, as a client-side problem (never an outlier report against it).
                log::info!("request not sent to {}: {e}", self.fallback);
                let msg = format!("the request cannot be sent over HTTP/2: {e}\n");
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{msg}",
                    msg.len()
                );
                self.down.out.push_back(Bytes::from(head));
                self.down.state = DownState::Done;
                self.up.body = UpBody::Discard;
                self.send = None;
                return Ok(end - old);
            }
        };
        let Some(mut send) = self.send.take() else {
            return Err(io::Error::other("request already sent"));
        };
        let end_stream = matches!(req.body, UpBody::Done);
        // Refused here, the stream never existed: nothing reached the backend.
        let (response, stream) = send.send_request(req.request, end_stream).map_err(|e| {
            self.up.refused = true;
            h2_err(e)
        })?;
        self.down.response = Some(response);
        self.down.state = DownState::Head;
        self.down.continue_100 = req.continue_100;
        self.down.grpc = req.grpc;
        self.up.body = req.body;
        self.up.stream = Some(stream);
        Ok(end - old)
    }
}

/// The request head in HTTP/2 form, and how its body is framed.
struct Converted {
    request: http::Request<()>,
    body: UpBody,
    continue_100: bool,
    grpc: bool,
}

/// Fields of one connection (RFC 9113 §8.2.2), never sent in HTTP/2; `te` only as `trailers`.
/// `Upgrade` goes too: an offer an HTTP/2 backend cannot take is declined, as a server that
/// ignores it would (the request is served as it is; no 101 can come back). Besides the
/// fields HTTP/2 clients never get (`h2::translate`'s list): `host` (it becomes `:authority`), `expect`
/// (switchyard answers the 100 itself) and `http2-settings` (an h2c upgrade's).
fn connection_specific(name: &[u8]) -> bool {
    super::h2::translate::connection_specific(name)
        || ["host", "expect", "http2-settings"]
            .iter()
            .any(|h| name_is(name, h))
}

/// The forwarded HTTP/1.1 head as an HTTP/2 request. Pure.
fn to_h2(head: &[u8], scheme: &str, fallback: &str) -> io::Result<Converted> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut fields = vec![httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad("unparsable forwarded head")),
    }
    let method = req.method.unwrap_or("GET");
    if method == "CONNECT" {
        return Err(bad("CONNECT cannot go to an HTTP/2 backend"));
    }
    let target = req.path.unwrap_or("/");
    let mut host = None;
    let mut length = None;
    let mut chunked = false;
    let mut continue_100 = false;
    let mut grpc = false;
    let mut te_trailers = false;
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        let v = h.value;
        if name_is(n, "host") {
            host = Some(v);
        } else if name_is(n, "content-length") {
            let s = std::str::from_utf8(v).map_err(|_| bad("invalid Content-Length"))?;
            length = Some(
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| bad("invalid Content-Length"))?,
            );
        } else if name_is(n, "transfer-encoding") {
            chunked = true;
        } else if name_is(n, "expect") {
            continue_100 = v.eq_ignore_ascii_case(b"100-continue");
        } else if name_is(n, "te") {
            te_trailers |= crate::http::list_items(v).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        } else if name_is(n, "cookie") {
            cookies.push(v);
            continue;
        }
        if name_is(n, "content-type") {
            grpc = is_grpc(v);
        }
        if connection_specific(n) {
            continue;
        }
        let name = HeaderName::from_bytes(n).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(v).map_err(|_| bad("invalid header value"))?;
        map.append(name, value);
    }
    // One field, as it came (RFC 9113 §8.2.3 allows either; an HTTP/1.1 client sends one).
    for c in cookies {
        let value = HeaderValue::from_bytes(c).map_err(|_| bad("invalid cookie"))?;
        map.append(http::header::COOKIE, value);
    }
    if te_trailers || grpc {
        // gRPC servers require it; it is the one TE value HTTP/2 allows.
        map.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    // A Host the URI grammar refuses (it passed our own checks) gives way to the address.
    let authority = host
        .and_then(|h| std::str::from_utf8(h).ok())
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or(fallback);
    let uri = if target.starts_with('/') || target == "*" {
        http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(target)
            .build()
    } else {
        // Absolute form: its path, with our scheme and the Host it was checked against.
        let abs: http::Uri = target.parse().map_err(|_| bad("invalid request target"))?;
        let pq = abs.path_and_query().map_or("/", |p| p.as_str());
        http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(pq)
            .build()
    }
    .map_err(|_| bad("invalid request target or Host"))?;
    // The backend must get exactly the path that was routed and authorized: the URI type
    // would silently cut a `#fragment` off (`/a/x#/b` routed as one path, sent as another).
    let sent = uri.path_and_query().map_or("", |p| p.as_str());
    if (target.starts_with('/') && sent != target) || target.contains('#') {
        return Err(bad("request target not expressible as an HTTP/2 :path"));
    }
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| bad("invalid method"))?;
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = map;
    let body = if chunked {
        UpBody::Chunked(Decoder::pause_at_trailers())
    } else {
        match length {
            Some(n) if n > 0 => UpBody::Length(n),
            _ => UpBody::Done,
        }
    };
    Ok(Converted {
        request,
        body,
        continue_100,
        grpc,
    })
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;…`.
pub(crate) fn is_grpc(v: &[u8]) -> bool {
    let base = b"application/grpc";
    v.len() >= base.len()
        && v[..base.len()].eq_ignore_ascii_case(base)
        && matches!(v.get(base.len()), None | Some(b'+' | b';'))
}

/// A trailer section (`name: value` lines and the final CRLF) as HTTP/2 fields, without the
/// fields RFC 9110 §6.5.1 keeps out of trailers.
pub(crate) fn trailer_fields(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in section.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = &line[..colon];
        if crate::http::trailers::forbidden(name) {
            continue;
        }
        let value = crate::http::trim_ows(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

impl Up {
    /// Body bytes from `buf` into DATA frames, as the window allows; returns bytes taken.
    fn poll_body(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let UpBody::Discard = self.body {
            return Poll::Ready(Ok(buf.len()));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(io::Error::other("request head not sent")));
        };
        match &mut self.body {
            UpBody::Head | UpBody::Discard => {
                Poll::Ready(Err(io::Error::other("request head not sent")))
            }
            UpBody::Done => Poll::Ready(Err(io::Error::other("bytes after the request body"))),
            UpBody::Length(left) => {
                let want = (buf.len() as u64).min(*left) as usize;
                let cap = ready!(capacity(stream, cx, want, &mut self.refused))?;
                let n = cap.min(want);
                let last = n as u64 == *left;
                stream
                    .send_data(Bytes::copy_from_slice(&buf[..n]), last)
                    .map_err(|e| stream_err(e, &mut self.refused))?;
                *left -= n as u64;
                if last {
                    self.body = UpBody::Done;
                }
                Poll::Ready(Ok(n))
            }
            UpBody::Chunked(dec) if dec.in_trailers() => {
                let (k, done) = dec
                    .validate(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                self.trailers.extend_from_slice(&buf[..k]);
                if done {
                    let fields = trailer_fields(&self.trailers);
                    if fields.is_empty() {
                        stream
                            .send_data(Bytes::new(), true)
                            .map_err(|e| stream_err(e, &mut self.refused))?;
                    } else {
                        stream
                            .send_trailers(fields)
                            .map_err(|e| stream_err(e, &mut self.refused))?;
                    }
                    self.body = UpBody::Done;
                }
                Poll::Ready(Ok(k))
            }
            UpBody::Chunked(dec) => {
                let before = dec.clone();
                let f = dec
                    .feed(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                if f.data.is_empty() {
                    return Poll::Ready(Ok(f.consumed));
                }
                let cap = match capacity(stream, cx, f.data.len(), &mut self.refused) {
                    Poll::Ready(Ok(c)) => c,
                    other => {
                        *dec = before;
                        return other;
                    }
                };
                let (consumed, data) = if cap >= f.data.len() {
                    (f.consumed, f.data)
                } else {
                    // Only as much payload as the window takes: feed that much again.
                    *dec = before;
                    let upto = f.data.start + cap;
                    let g = dec
                        .feed(&buf[..upto])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                    (g.consumed, g.data)
                };
                stream
                    .send_data(Bytes::copy_from_slice(&buf[data]), false)
                    .map_err(|e| stream_err(e, &mut self.refused))?;
                Poll::Ready(Ok(consumed))
            }
        }
    }
}

/// Waits for send window: at least one byte of the `want` asked for.
fn capacity(
    stream: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
    want: usize,
    refused: &mut bool,
) -> Poll<io::Result<usize>> {
    if want == 0 {
        return Poll::Ready(Ok(0));
    }
    stream.reserve_capacity(want.min(SEND_CHUNK));
    loop {
        let cap = stream.capacity();
        if cap > 0 {
            return Poll::Ready(Ok(cap));
        }
        match ready!(stream.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Poll::Ready(Err(stream_err(e, refused))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

impl Down {
    /// The next bytes of the answer into `out`; Ready with nothing queued is the end.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.continue_100 {
            self.continue_100 = false;
            self.out
                .push_back(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
            return Poll::Ready(Ok(()));
        }
        match self.state {
            DownState::Idle => Poll::Ready(Err(io::Error::other("request head not sent"))),
            DownState::Done => Poll::Ready(Ok(())),
            DownState::Head => {
                let Some(f) = self.response.as_mut() else {
                    return Poll::Ready(Err(io::Error::other("no response")));
                };
                let resp =
                    ready!(Pin::new(f).poll(cx)).map_err(|e| stream_err(e, &mut self.refused))?;
                self.response = None;
                let (parts, recv) = resp.into_parts();
                let end = recv.is_end_stream();
                let (head, state) = response_head(&parts, end, self.grpc);
                self.out.push_back(Bytes::from(head));
                self.state = state;
                self.recv = Some(recv);
                Poll::Ready(Ok(()))
            }
            DownState::Length | DownState::Chunked => {
                let Some(recv) = self.recv.as_mut() else {
                    return Poll::Ready(Err(io::Error::other("no response body")));
                };
                match ready!(recv.poll_data(cx)) {
                    Some(Ok(d)) => {
                        // Taken off the stream's window: the backend may send as much again
                        // while the relay moves this on (at most one frame is held here).
                        let _ = recv.flow_control().release_capacity(d.len());
                        if d.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        if self.state == DownState::Chunked {
                            self.out
                                .push_back(Bytes::from(format!("{:x}\r\n", d.len())));
                            self.out.push_back(d);
                            self.out.push_back(Bytes::from_static(b"\r\n"));
                        } else {
                            self.out.push_back(d);
                        }
                        Poll::Ready(Ok(()))
                    }
                    Some(Err(e)) => Poll::Ready(Err(h2_err(e))),
                    None => {
                        self.state = if self.state == DownState::Chunked {
                            DownState::Trailers
                        } else {
                            DownState::Done
                        };
                        Poll::Ready(Ok(()))
                    }
                }
            }
            DownState::Trailers => {
                let Some(recv) = self.recv.as_mut() else {
                    return Poll::Ready(Err(io::Error::other("no response body")));
                };
                let t = ready!(recv.poll_trailers(cx)).map_err(h2_err)?;
                let mut s = b"0\r\n".to_vec();
                for (n, v) in t.iter().flatten() {
                    s.extend_from_slice(n.as_str().as_bytes());
                    s.extend_from_slice(b": ");
                    s.extend_from_slice(v.as_bytes());
                    s.extend_from_slice(b"\r\n");
                }
                s.extend_from_slice(b"\r\n");
                self.out.push_back(Bytes::from(s));
                self.state = DownState::Done;
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// The HTTP/1.1 head of an HTTP/2 answer and how its body follows. A backend's length is kept
/// when the body is not gRPC (whose trailers need chunked framing); an answer that ended with
/// its head says `Content-Length: 0` (a gRPC trailers-only answer stays one for an HTTP/2
/// client: its fields are in this head).
fn response_head(parts: &http::response::Parts, end: bool, grpc: bool) -> (Vec<u8>, DownState) {
    use std::io::Write;
    let status = parts.status;
    let mut h = Vec::with_capacity(256);
    let _ = write!(
        h,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let no_body =
        end || status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED;
    let keep_length = has_length && (end || !grpc);
    for (n, v) in &parts.headers {
        if connection_specific(n.as_str().as_bytes())
            || (n == http::header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        h.extend_from_slice(n.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    let state = if no_body {
        let bodiless = status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        if !has_length && !bodiless {
            h.extend_from_slice(b"content-length: 0\r\n");
        }
        // A 204/304 has no body even when the stream is still open: nothing more is relayed.
        DownState::Done
    } else if keep_length {
        DownState::Length
    } else {
        h.extend_from_slice(b"transfer-encoding: chunked\r\n");
        DownState::Chunked
    };
    h.extend_from_slice(b"\r\n");
    (h, state)
}

fn drain_into(out: &mut VecDeque<Bytes>, buf: &mut ReadBuf<'_>) {
    while buf.remaining() > 0 {
        let Some(front) = out.front_mut() else {
            return;
        };
        let n = front.len().min(buf.remaining());
        buf.put_slice(&front[..n]);
        if n == front.len() {
            out.pop_front();
        } else {
            let _ = front.split_to(n);
        }
    }
}

impl AsyncRead for Down {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if !me.out.is_empty() {
                drain_into(&mut me.out, buf);
                return Poll::Ready(Ok(()));
            }
            if me.state == DownState::Done && !me.continue_100 {
                return Poll::Ready(Ok(()));
            }
            ready!(me.poll_more(cx))?;
        }
    }
}

impl AsyncWrite for Up {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().poll_body(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for H2Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().down).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if matches!(me.up.body, UpBody::Head) {
            return Poll::Ready(me.take_head(buf));
        }
        me.up.poll_body(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_to_h2_translates_fields() {
        let head = b"POST /svc/M?x=1 HTTP/1.1\r\nHost: api.test:80\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: 5\r\nTE: trailers\r\nContent-Type: application/grpc\r\nCookie: a=1; b=2\r\ngrpc-timeout: 1S\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Kept: y\r\n\r\n";
        let c = to_h2(head, "http", "fallback:1").unwrap();
        let r = &c.request;
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri().to_string(), "http://api.test:80/svc/M?x=1");
        let h = r.headers();
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.get("grpc-timeout").unwrap(), "1S");
        assert_eq!(h.get("x-kept").unwrap(), "y");
        for gone in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "host",
            "expect",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert!(c.grpc && c.continue_100);
        assert!(matches!(c.body, UpBody::Chunked(_)));
    }

    #[test]
    fn head_to_h2_framing_and_refusals() {
        let c = to_h2(b"GET / HTTP/1.1\r\n\r\n", "https", "b:443").unwrap();
        assert_eq!(c.request.uri().to_string(), "https://b:443/");
        assert!(matches!(c.body, UpBody::Done));
        assert!(c.request.headers().get("te").is_none());
        // gRPC gets `te: trailers` even when the client's was taken off as hop-by-hop.
        let c = to_h2(b"POST /s/M HTTP/1.1\r\nContent-Type: application/grpc+proto\r\nContent-Length: 5\r\n\r\n", "http", "b").unwrap();
        assert_eq!(c.request.headers().get("te").unwrap(), "trailers");
        assert!(c.grpc);
        let c = to_h2(
            b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n",
            "http",
            "b",
        )
        .unwrap();
        assert!(matches!(c.body, UpBody::Length(7)));
        assert_eq!(c.request.headers().get("content-length").unwrap(), "7");
        let c = to_h2(
            b"GET http://h.test/p?q HTTP/1.1\r\nHost: h.test\r\n\r\n",
            "http",
            "b",
        )
        .unwrap();
        assert_eq!(c.request.uri().to_string(), "http://h.test/p?q");
        // An upgrade offer is declined (HTTP/2 has none): the request goes on without it.
        let c = to_h2(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "http",
            "b",
        )
        .unwrap();
        assert!(c.request.headers().get("upgrade").is_none());
        assert!(to_h2(b"CONNECT h:1 HTTP/1.1\r\n\r\n", "http", "b").is_err());
        // A fragment would be cut off on the way: refused rather than sent as another path.
        assert!(to_h2(b"GET /api/x#/reply HTTP/1.1\r\n\r\n", "http", "b").is_err());
        assert!(to_h2(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", "http", "b").is_ok());
        assert!(to_h2(b"GET /\xff HTTP/1.1\r\n\r\n", "http", "b").is_err());
        // A Host the URI grammar refuses gives way to the address.
        let c = to_h2(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "http", "b:1").unwrap();
        assert_eq!(c.request.uri().authority().unwrap().as_str(), "b:1");
        assert!(to_h2(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "http", "b").is_err());
    }

    fn parts(status: u16, fields: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(status);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn response_heads_are_framed() {
        let (h, s) = response_head(
            &parts(200, &[("content-length", "5"), ("x-a", "1")]),
            false,
            false,
        );
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n"
        );
        assert!(s == DownState::Length);
        let (h, s) = response_head(
            &parts(
                200,
                &[
                    ("content-type", "application/grpc"),
                    ("content-length", "9"),
                ],
            ),
            false,
            true,
        );
        assert_eq!(String::from_utf8(h).unwrap(), "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n");
        assert!(s == DownState::Chunked);
        // Trailers-only: the status is in the head, nothing follows.
        let (h, s) = response_head(&parts(200, &[("grpc-status", "12")]), true, true);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\ngrpc-status: 12\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(s == DownState::Done);
        let (h, _) = response_head(&parts(204, &[]), true, false);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[test]
    fn trailer_sections_become_fields() {
        let m = trailer_fields(
            b"grpc-status: 0\r\ngrpc-message: ok%20x\r\ncontent-length: 3\r\nX_Bad: 1\r\n\r\n",
        );
        assert_eq!(m.get("grpc-status").unwrap(), "0");
        assert_eq!(m.get("grpc-message").unwrap(), "ok%20x");
        assert_eq!(m.len(), 2);
        assert!(trailer_fields(b"\r\n").is_empty());
    }

    /// An HTTP/2 server (the h2 crate's, in memory) with a 7-byte stream window: the chunked
    /// upload must go in window-sized DATA frames with its trailers last, and the answer come
    /// back as HTTP/1.1 chunked bytes with the backend's trailers.
    #[tokio::test]
    async fn chunked_upload_through_a_tiny_window_and_trailers_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (c, s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .initial_window_size(7)
                .handshake::<_, Bytes>(s)
                .await
                .unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let (parts, mut body) = req.into_parts();
            let mut got = Vec::new();
            let mut frames = 0;
            while let Some(d) = body.data().await {
                let d = d.unwrap();
                assert!(d.len() <= 7, "{} bytes over a 7-byte window", d.len());
                frames += 1;
                body.flow_control().release_capacity(d.len()).unwrap();
                got.extend_from_slice(&d);
            }
            let t = body.trailers().await.unwrap();
            let resp = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let mut send = respond.send_response(resp, false).unwrap();
            send.send_data(Bytes::from_static(b"answer"), false)
                .unwrap();
            let mut tr = HeaderMap::new();
            tr.insert("grpc-status", HeaderValue::from_static("0"));
            send.send_trailers(tr).unwrap();
            (parts, got, frames, t)
        });
        let (send, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let send = send.ready().await.unwrap();
        let mut up = H2Upstream::new(Ready::detached(send), false, "b:1");
        up.write_all(b"POST /pkg.S/M HTTP/1.1\r\nHost: svc\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let payload: Vec<u8> = (0..100u8).collect();
        let mut body = Vec::new();
        for piece in payload.chunks(30) {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\nx-sum: 9\r\nhost: evil\r\n\r\n");
        let (r, w) = up.split();
        let mut answer = Vec::new();
        let (a, b) = tokio::join!(w.write_all(&body), r.read_to_end(&mut answer));
        a.unwrap();
        b.unwrap();
        let (parts, got, frames, t) = server.await.unwrap();
        assert_eq!(got, payload);
        assert!(frames >= 100 / 7, "{frames}");
        assert_eq!(parts.uri.to_string(), "http://svc/pkg.S/M");
        assert_eq!(parts.headers.get("te").unwrap(), "trailers");
        let t = t.unwrap();
        assert_eq!(t.get("x-sum").unwrap(), "9");
        assert!(t.get("host").is_none());
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n6\r\nanswer\r\n0\r\ngrpc-status: 0\r\n\r\n"
        );
    }
}
