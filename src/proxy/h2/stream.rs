//! One HTTP/2 stream as one request through the same phases as HTTP/1 (route, connect, send,
//! relay, finish): its head is translated to HTTP/1.1 form, indexed as it is written, and
//! checked like any other ([`translate`], `read::prepare`), [`H2Out`] is its [`Downstream`] and [`H2Body`] its
//! [`RequestBody`]. Flow control holds both ways: request DATA is released to the client only
//! once written to the backend, and response bytes are sent only as the client's window
//! allows. A client RST_STREAM ends the exchange at once (the backend connection is dropped).
use super::translate::{self, Added};
use super::Conn;
use crate::http::error::{self, ErrorKind};
use crate::http::framing::Body;
use crate::http::reply::{self, Relay};
use crate::http::response::ResponseHead;
use crate::proxy::body::{self, CopyError};
use crate::proxy::deadline::Timer;
use crate::proxy::downstream::{Downstream, RequestBody, Written};
use crate::proxy::error::ProxyError;
use crate::proxy::exchange::{self, Bufs, Exchange, Request};
use crate::proxy::finish::{self, LogLine};
use crate::proxy::io::write_all;
use crate::proxy::replay::Kept;
use crate::proxy::splice::AsTcp;
use crate::proxy::{bufpool, read, request_id};
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The most response bytes asked of the flow-control window at once.
const SEND_CHUNK: usize = 64 * 1024;
/// The largest body sent straight from the head's buffer, as one DATA frame, when all of it
/// came with the head (`H2Out::final_head`). It goes without asking for window first: the
/// `h2` crate then holds what the client's window does not allow yet, and this bounds that to
/// one default-sized frame per stream (the copy loop holds as much in its read buffer while
/// it waits for window, so memory per stream does not grow).
const SMALL_BODY: u64 = 16 * 1024;
/// Room for the fields the gateway adds to a forwarded head.
const FORWARD_ADDS: usize = 512;

/// Finished streams' buffers kept per thread for the next streams (of any connection, as
/// `bufpool` does for read buffers): a client that sends its streams in bursts finds a whole
/// burst's worth, and an idle connection holds none.
const SCRATCH_KEPT: usize = 256;
/// A buffer grown beyond this (a large head) is let go rather than kept.
const SCRATCH_MAX_BYTES: usize = 16 * 1024;

/// A stream's buffers, handed on to a later stream with their capacity: the head's HTTP/1.1
/// bytes, its fields, the request id, the forwarded head and the response's fields would
/// otherwise be allocated (and grown) anew on every stream, where an HTTP/1 connection keeps
/// them from one request to the next.
#[derive(Default)]
struct Scratch {
    req: Request,
    resp: ResponseHead,
    out: Vec<u8>,
}

thread_local! {
    // Boxed on purpose: a stream holds (and the pool hands over) a pointer, not the struct.
    #[allow(clippy::vec_box)]
    static SCRATCH: std::cell::RefCell<Vec<Box<Scratch>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Scratch {
    fn take() -> Box<Scratch> {
        SCRATCH.with(|f| f.borrow_mut().pop()).unwrap_or_default()
    }

    fn keep(mut self: Box<Self>) {
        let fields = self.req.head.headers.capacity() + self.resp.headers.capacity();
        let bytes = self.req.bytes.capacity() + self.req.canon.capacity() + self.out.capacity();
        if bytes + fields * std::mem::size_of::<crate::http::head::HeaderRange>()
            > SCRATCH_MAX_BYTES
        {
            return;
        }
        self.req.clear();
        self.out.clear();
        SCRATCH.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < SCRATCH_KEPT {
                f.push(self);
            }
        });
    }
}

/// How often an answer on a connection lets its `server-timing` into the HPACK table.
const TIMING_SEED_SECS: u64 = 30;

/// Whether this answer's `server-timing` may be indexed (else it is never-indexed, since its
/// value changes on nearly every answer). One such answer per connection every
/// [`TIMING_SEED_SECS`] puts the name in the client's table; the never-indexed ones after it
/// then refer to the name by its index (the `h2` encoder does so for a sensitive field whose
/// name it finds) and Huffman-code only the value. Robust to eviction: once other fields
/// push the entry out, answers go back to a literal name until the next one, never worse than
/// before; and the entries of this name, which the encoder walks on each lookup, stay as few
/// as the table's lifetime over 30 s.
fn seed_timing(now_secs: u64, last: &std::sync::atomic::AtomicU64) -> bool {
    let l = last.load(Relaxed);
    if l != 0 && now_secs < l.saturating_add(TIMING_SEED_SECS) {
        return false;
    }
    last.store(now_secs, Relaxed);
    true
}

/// Where the answer of a stream stands. Shared by the exchange (which answers through it) and
/// the reset watch (which polls it for the client's RST_STREAM); both live in the stream's
/// one task, so the lock is never contended (the `h2` crate takes its own connection-wide
/// lock on each of these calls anyway).
enum Slot {
    Respond(SendResponse<Bytes>),
    Send(SendStream<Bytes>),
    Done,
}

struct Cell(Mutex<Slot>);

impl Cell {
    fn with<R>(&self, f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Resolves when the client resets the stream (or the connection goes).
    async fn reset(&self) {
        std::future::poll_fn(|cx| {
            self.with(|s| match s {
                Slot::Respond(r) => r.poll_reset(cx).map(|_| ()),
                Slot::Send(s) => s.poll_reset(cx).map(|_| ()),
                Slot::Done => Poll::Pending,
            })
        })
        .await
    }

    /// Sends the response head; `end`: nothing follows it.
    fn respond(&self, resp: http::Response<()>, end: bool) -> io::Result<()> {
        self.with(|slot| {
            let Slot::Respond(r) = std::mem::replace(slot, Slot::Done) else {
                return Err(io::Error::other("the response head was already sent"));
            };
            let mut r = r;
            let send = r.send_response(resp, end).map_err(h2_io)?;
            if !end {
                *slot = Slot::Send(send);
            }
            Ok(())
        })
    }

    /// Ends the response body with trailers (a HEADERS frame with END_STREAM).
    fn trailers(&self, fields: http::HeaderMap) -> io::Result<()> {
        self.with(|slot| match std::mem::replace(slot, Slot::Done) {
            Slot::Send(mut s) => s.send_trailers(fields).map_err(h2_io),
            _ => Ok(()),
        })
    }

    /// Sends the whole body as the last DATA frame, as the copy loop's [`Writer`] would.
    fn last(&self, data: Bytes) -> io::Result<()> {
        self.with(|slot| match std::mem::replace(slot, Slot::Done) {
            Slot::Send(mut s) => s.send_data(data, true).map_err(h2_io),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        })
    }

    /// Ends the response body.
    fn end(&self) -> io::Result<()> {
        self.with(|slot| match std::mem::replace(slot, Slot::Done) {
            Slot::Send(mut s) => s.send_data(Bytes::new(), true).map_err(h2_io),
            _ => Ok(()),
        })
    }
}

fn h2_io(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

/// Response body bytes into the stream, as the client's flow-control window allows. With a
/// known length the last DATA frame carries END_STREAM (no empty frame after it: fewer
/// frames, and some clients stumble over a stream whose length was already reached).
struct Writer<'a> {
    cell: &'a Cell,
    left: Option<u64>,
    /// DATA bytes handed to h2, for the access log.
    sent: &'a mut u64,
}

/// An HTTP/2 stream has no socket of its own to splice to.
impl AsTcp for Writer<'_> {}

impl AsyncWrite for Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let me = self.get_mut();
        me.cell.with(|slot| {
            let Slot::Send(s) = slot else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            s.reserve_capacity(buf.len().min(SEND_CHUNK));
            loop {
                let cap = s.capacity();
                if cap > 0 {
                    let n = cap.min(buf.len());
                    let last = me.left.is_some_and(|l| l <= n as u64);
                    s.send_data(Bytes::copy_from_slice(&buf[..n]), last)
                        .map_err(h2_io)?;
                    *me.sent += n as u64;
                    if let Some(l) = &mut me.left {
                        *l = l.saturating_sub(n as u64);
                    }
                    if last {
                        *slot = Slot::Done;
                    }
                    return Poll::Ready(Ok(n));
                }
                match std::task::ready!(s.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                    None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                }
            }
        })
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    pending: &mut BytesMut,
    idle: Duration,
) -> Result<(), CopyError> {
    match crate::proxy::io::read_some(src, pending, Instant::now() + idle).await {
        Ok(0) => Err(CopyError::SourceEof),
        Ok(_) => Ok(()),
        Err(e) => Err(CopyError::Source(e)),
    }
}

/// Decodes a chunked body into `dst` and returns its trailer fields (those that may cross
/// the proxy, `http::trailers`), the section held whole within the decoder's bound.
async fn copy_chunked_keep_trailers<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
) -> Result<http::HeaderMap, CopyError> {
    use crate::http::chunked::Decoder;
    let mut dec = Decoder::pause_at_trailers();
    while !dec.in_trailers() {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let f = dec.feed(pending).map_err(|e| CopyError::Invalid(e.0))?;
        if !f.data.is_empty() {
            write_all(dst, &pending[f.data.clone()], idle)
                .await
                .map_err(CopyError::Sink)?;
        }
        bytes::Buf::advance(pending, f.consumed);
        if f.done {
            return Ok(http::HeaderMap::new());
        }
    }
    let mut seen = 0;
    loop {
        let (k, done) = dec
            .validate(&pending[seen..])
            .map_err(|e| CopyError::Invalid(e.0))?;
        seen += k;
        if done {
            break;
        }
        fill(src, pending, idle).await?;
    }
    let fields = crate::proxy::upstream_h2::trailer_fields(&pending[..seen]);
    bytes::Buf::advance(pending, seen);
    Ok(fields)
}

/// Answers to an HTTP/2 client on one stream.
pub(crate) struct H2Out<'a> {
    cell: &'a Cell,
    is_head: bool,
    /// A gRPC request: switchyard's own errors are trailers-only answers.
    grpc: bool,
    idle: Duration,
    gateway: &'a str,
    /// Body bytes written to the client (DATA payloads), for the access log.
    sent: u64,
    /// A whole body that came with the head, for `body` to send in one frame.
    small: Option<Bytes>,
    /// The connection's [`seed_timing`] clock, and the stream's arrival on it.
    timing_seeded: &'a std::sync::atomic::AtomicU64,
    arrived_secs: u64,
}

impl H2Out<'_> {
    fn fields(&self, up: &[u8], resp: &ResponseHead, add: &Added<'_>) -> http::Response<()> {
        let mut r = http::Response::new(());
        *r.status_mut() =
            http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        *r.headers_mut() = translate::response_headers(up, resp, add);
        r
    }
}

impl Downstream for H2Out<'_> {
    fn bytes_out(&self) -> u64 {
        self.sent
    }

    async fn interim(
        &mut self,
        _out: &mut Vec<u8>,
        up: &[u8],
        resp: &ResponseHead,
    ) -> io::Result<()> {
        let mut r = self.fields(
            up,
            resp,
            &Added {
                gateway: self.gateway,
                upstream_ms: 0.0,
                content_length: None,
                edits: &crate::http::edits::NONE.response,
                index_timing: false,
            },
        );
        r.headers_mut().remove("server-timing");
        self.cell.with(|slot| match slot {
            Slot::Respond(s) => s.send_informational(r).map_err(h2_io),
            _ => Ok(()),
        })
    }

    async fn continue_100(&mut self) -> io::Result<()> {
        // `expect` is not forwarded for HTTP/2 clients: flow control makes it moot.
        Ok(())
    }

    async fn tunnel_head(
        &mut self,
        _out: &mut Vec<u8>,
        _up: &[u8],
        _resp: &ResponseHead,
        _added: crate::proxy::downstream::Added<'_>,
    ) -> io::Result<()> {
        Err(io::Error::other("no tunnels over HTTP/2"))
    }

    async fn final_head(
        &mut self,
        _out: &mut Vec<u8>,
        up: &mut BytesMut,
        resp: &ResponseHead,
        body: Body,
        _close: bool,
        added: crate::proxy::downstream::Added<'_>,
    ) -> io::Result<Written> {
        // Framed as for a client that reads until close: a chunked body is decoded, a
        // close-delimited one passed on as DATA; HTTP/2 frames carry the rest.
        let f = reply::frame(up, &resp.headers, body, resp.status, self.is_head, 0, true);
        let r = self.fields(
            up,
            resp,
            &Added {
                gateway: self.gateway,
                upstream_ms: added.upstream_ms,
                content_length: f.content_length,
                edits: added.edits,
                index_timing: seed_timing(self.arrived_secs, self.timing_seeded),
            },
        );
        let end = matches!(f.relay, Relay::None | Relay::Length(0));
        self.cell.respond(r, end)?;
        bytes::Buf::advance(up, resp.len);
        let left = match f.relay {
            Relay::Length(n) => n,
            _ => 0,
        };
        // The usual small answer: its whole body came in the read with the head. One DATA
        // frame with END_STREAM, without the copy loop's window reservation and its polls;
        // `body` sends it, so that a failure there is what it was from the copy loop.
        let length = matches!(f.relay, Relay::Length(_));
        if length && !end && left <= SMALL_BODY && up.len() as u64 >= left {
            let n = left as usize;
            self.small = Some(Bytes::copy_from_slice(&up[..n]));
            bytes::Buf::advance(up, n);
            return Ok(Written {
                relay: f.relay,
                left: 0,
                close: false,
                len: resp.len.max(1),
            });
        }
        Ok(Written {
            relay: if end { Relay::None } else { f.relay },
            left,
            close: false,
            // Anything non-zero: once the head is out, no error answer can follow.
            len: resp.len.max(1),
        })
    }

    async fn body<R: AsyncRead + Unpin + AsTcp>(
        &mut self,
        out: &mut Vec<u8>,
        src: &mut R,
        pending: &mut BytesMut,
        w: Written,
    ) -> Result<(), CopyError> {
        let idle = self.idle;
        let mut dst = Writer {
            cell: self.cell,
            left: matches!(w.relay, Relay::Length(_)).then_some(w.left),
            sent: &mut self.sent,
        };
        match w.relay {
            Relay::None => return Ok(()),
            Relay::Length(_) if w.left > 0 => {
                body::copy_length(src, pending, &mut dst, w.left, idle).await?
            }
            Relay::Chunked | Relay::Dechunk => {
                // A chunked answer's trailer section (gRPC's status) goes on as HTTP/2
                // trailers.
                let t = copy_chunked_keep_trailers(src, pending, &mut dst, idle).await?;
                if !t.is_empty() {
                    return self.cell.trailers(t).map_err(CopyError::Sink);
                }
            }
            Relay::UntilClose { .. } => {
                body::copy_until_close(src, pending, &mut dst, idle, false, out).await?
            }
            Relay::Length(_) => {
                if let Some(data) = self.small.take() {
                    let n = data.len() as u64;
                    self.cell.last(data).map_err(CopyError::Sink)?;
                    self.sent += n;
                    return Ok(());
                }
            }
        }
        self.cell.end().map_err(CopyError::Sink)
    }

    async fn error(
        &mut self,
        kind: ErrorKind,
        message: &str,
        rid: &[u8],
        _close: bool,
    ) -> io::Result<()> {
        let mut r = http::Response::new(());
        if !self.grpc {
            *r.status_mut() =
                http::StatusCode::from_u16(kind.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
        }
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(self.gateway) {
            h.insert(HeaderName::from_static("x-gateway"), v);
        }
        if let Ok(v) = HeaderValue::from_bytes(rid) {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
        if self.grpc {
            // Trailers-only (gRPC over HTTP/2): one HEADERS frame that ends the stream.
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from(translate::grpc_status(kind.status())),
            );
            if let Ok(v) = HeaderValue::from_str(&translate::grpc_message(message)) {
                h.insert(HeaderName::from_static("grpc-message"), v);
            }
            return self.cell.respond(r, true);
        }
        let body = error::body(kind.code(), message, &String::from_utf8_lossy(rid));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if self.is_head {
            return self.cell.respond(r, true);
        }
        self.cell.respond(r, false)?;
        self.sent += body.len() as u64;
        // Small enough to leave to the h2 crate's send buffer whatever the window says.
        self.cell
            .with(|slot| match std::mem::replace(slot, Slot::Done) {
                Slot::Send(mut s) => s.send_data(Bytes::from(body), true).map_err(h2_io),
                _ => Ok(()),
            })
    }
}

/// The request body of a stream, going to an HTTP/1.1 backend with the framing its forwarded
/// head announced (a length, or chunked when the client gave none). When the request may be
/// retried, the pieces passed on are kept (`replay`, the rules of HTTP/1 bodies): DATA
/// frames as they came (no copy), chunks as framed.
pub(crate) struct H2Body<'a> {
    recv: RecvStream,
    /// The stream's answer: once its head is out the request is never tried again, and what
    /// was kept is let go (a long gRPC stream would otherwise hold it to its end).
    cell: &'a Cell,
    /// DATA bytes taken from the client, for the access log.
    received: u64,
    chunked: bool,
    /// The announced length (`content-length`), if any.
    length: Option<u64>,
    idle: Duration,
    scratch: Vec<u8>,
    /// What a retry needs: boxed, and only once asked to keep, so that a stream that is
    /// never retried carries none of it.
    kept: Option<Box<Kept>>,
    /// The whole body went up once (its end included): a replay is all there is to send.
    done: bool,
    /// Window of a DATA frame taken but whose write did not finish (a try abandoned
    /// mid-write): released with the next try, since the frame is kept.
    unreleased: usize,
}

impl H2Body<'_> {
    /// Writes a piece; kept first when keeping, so that a try abandoned mid-write leaves it
    /// to the replay.
    async fn pass<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        b: Bytes,
    ) -> Result<(), CopyError> {
        if let Some(k) = self.kept.as_deref_mut() {
            k.push(b.clone());
        }
        write_all(dst, &b, self.idle).await.map_err(CopyError::Sink)
    }

    fn keeping(&mut self) -> bool {
        if self.kept.is_some() && self.cell.with(|s| !matches!(s, Slot::Respond(_))) {
            self.kept = None;
        }
        self.kept.as_ref().is_some_and(|k| k.on())
    }
}

impl RequestBody for H2Body<'_> {
    fn bytes_in(&self) -> u64 {
        self.received
    }

    fn has_more(&self) -> bool {
        self.kept.as_ref().is_some_and(|k| k.pending_replay())
            || (!self.done && !self.recv.is_end_stream())
    }

    fn coalesce(&mut self, _out: &mut Vec<u8>) {}

    async fn send_to<W: AsyncWrite + Unpin + AsTcp>(
        &mut self,
        dst: &mut W,
    ) -> Result<(), CopyError> {
        if let Some(k) = self.kept.as_deref_mut() {
            // A retry: what the last try passed on goes again first, piece by piece.
            while let Some(b) = k.next_replay() {
                write_all(dst, &b, self.idle)
                    .await
                    .map_err(CopyError::Sink)?;
                k.sent();
            }
            k.replayed();
        }
        if self.unreleased > 0 {
            let _ = self.recv.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
        if self.done {
            return Ok(());
        }
        loop {
            let next = match tokio::time::timeout(self.idle, self.recv.data()).await {
                Ok(n) => n,
                Err(_) => return Err(CopyError::Source(io::ErrorKind::TimedOut.into())),
            };
            let data = match next {
                None => break,
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(CopyError::Source(io::Error::other(e))),
            };
            let n = data.len();
            if n == 0 {
                continue;
            }
            self.received += n as u64;
            self.unreleased = n;
            if self.chunked {
                use std::io::Write;
                self.scratch.clear();
                let _ = write!(self.scratch, "{n:x}\r\n");
                self.scratch.extend_from_slice(&data);
                self.scratch.extend_from_slice(b"\r\n");
                if self.keeping() {
                    // The chunk as framed is the piece kept (one copy, as unkept ones get).
                    let b = Bytes::copy_from_slice(&self.scratch);
                    self.pass(dst, b).await?;
                } else {
                    write_all(dst, &self.scratch, self.idle)
                        .await
                        .map_err(CopyError::Sink)?;
                }
            } else if self.keeping() {
                self.pass(dst, data).await?;
            } else {
                write_all(dst, &data, self.idle)
                    .await
                    .map_err(CopyError::Sink)?;
            }
            // The client may send more only once these bytes are on their way.
            self.unreleased = 0;
            let _ = self.recv.flow_control().release_capacity(n);
        }
        if self.chunked {
            // Request trailers (gRPC clients rarely send any) end the chunked body.
            let t = match tokio::time::timeout(self.idle, self.recv.trailers()).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return Err(CopyError::Source(io::Error::other(e))),
                Err(_) => return Err(CopyError::Source(io::ErrorKind::TimedOut.into())),
            };
            let mut last = b"0\r\n".to_vec();
            for (n, v) in t.iter().flatten() {
                if crate::http::trailers::forbidden(n.as_str().as_bytes()) {
                    continue;
                }
                last.extend_from_slice(n.as_str().as_bytes());
                last.extend_from_slice(b": ");
                last.extend_from_slice(v.as_bytes());
                last.extend_from_slice(b"\r\n");
            }
            last.extend_from_slice(b"\r\n");
            // Taken from the stream once: a replay resends this piece, never reads it again.
            self.done = true;
            return self.pass(dst, Bytes::from(last)).await;
        }
        self.done = true;
        Ok(())
    }

    fn keep(&mut self, limit: u64) {
        let mut k = Kept::default();
        k.start(limit, self.length);
        self.kept = Some(Box::new(k));
    }

    fn replayable(&self) -> bool {
        match &self.kept {
            None => self.received == 0,
            Some(k) => k.whole(self.received),
        }
    }

    fn rewind(&mut self) {
        if let Some(k) = self.kept.as_deref_mut() {
            k.rewind();
        }
    }
}

fn head_error(e: crate::http::head::HeadError) -> ProxyError {
    use crate::http::head::HeadError;
    match e {
        HeadError::Malformed(m) => ProxyError::client(ErrorKind::BadRequest, m),
        HeadError::UriTooLong | HeadError::TooLarge => ProxyError::client(
            ErrorKind::HeadersTooLarge,
            "request head larger than max_header_bytes",
        ),
    }
}

/// Translates the stream's head into `req` (its bytes and their index) and checks it.
fn prepare(
    req: &mut Request,
    parts: &http::request::Parts,
    end_stream: bool,
    max_header_bytes: usize,
    policy: &crate::http::admit::Policy<'_>,
) -> Result<(), ProxyError> {
    translate::request_head(
        parts,
        end_stream,
        max_header_bytes,
        &mut req.bytes,
        &mut req.head,
    )
    .map_err(|r| match r {
        translate::Refusal::Connect => ProxyError::refuse(
            ErrorKind::BadRequest,
            "CONNECT is not supported over HTTP/2",
        ),
        translate::Refusal::Malformed(m) => ProxyError::client(ErrorKind::BadRequest, m),
        translate::Refusal::Head(e) => head_error(e),
    })?;
    read::prepare(req, policy)
}

/// Serves one stream to its end.
///
/// The request comes in its parts (split by the caller): the arguments stay in the future for
/// its whole life, so a whole `http::Request` there would be a second copy of the parts.
/// `started`: when the connection accepted it. `timer` bounds the stream's waits (the
/// backend's answer head) and is given back for the connection's next streams: a fresh tokio
/// timer per stream cost an allocation, a wheel insertion and removal and, whenever its
/// deadline was earlier than every other one (the first streams after a quiet moment, each
/// of a burst), a driver wake-up: an eventfd write. A finished stream's timer is still armed
/// at about the deadline the next stream needs; `deadline::Timer` keeps it there until it
/// fires and only then moves it, so the next streams reuse it as it is.
pub(crate) async fn serve(
    conn: &Conn,
    parts: http::request::Parts,
    recv: RecvStream,
    respond: SendResponse<Bytes>,
    started: Instant,
    mut timer: Timer,
) -> Timer {
    let table = conn.dp.table.load_full();
    let s = &*table.server;
    let end_stream = recv.is_end_stream();
    let cell = Cell(Mutex::new(Slot::Respond(respond)));
    let mut down = H2Out {
        cell: &cell,
        is_head: parts.method == http::Method::HEAD,
        grpc: translate::is_grpc(&parts.headers),
        idle: s.idle_timeout,
        gateway: &s.gateway_header,
        sent: 0,
        small: None,
        timing_seeded: &conn.timing_seeded,
        arrived_secs: crate::clock::mono_secs(started),
    };
    let mut scratch = Scratch::take();
    let Scratch { req, resp, out } = &mut *scratch;
    req.h2 = true;
    let access_log = s.access_log;
    let policy = crate::http::admit::Policy {
        underscore: s.underscore_headers,
        via_token: s.via_name.as_bytes(),
    };
    if let Err(e) = prepare(req, &parts, end_stream, s.max_header_bytes, &policy) {
        if req.rid.is_empty() {
            request_id::generate(&mut req.rid);
        }
        let log = LogLine::own(access_log, &conn.peer_ip, req, conn.tls);
        if let Some((status, _)) = finish::answer(&mut down, &e, &req.rid, false).await {
            finish::record(&conn.dp, &log, None, None, status, started);
        }
        conn.guard.completed.fetch_add(1, Relaxed);
        return timer;
    }
    if conn.plain {
        if let Some(a) = conn.dp.tls.plain_answer(req.target(), req.header("host")) {
            let status = plain_answer(&cell, a, &req.rid, s.gateway_header.as_str());
            let log = LogLine::own(access_log, &conn.peer_ip, req, conn.tls);
            finish::record(&conn.dp, &log, None, None, status, started);
            conn.guard.completed.fetch_add(1, Relaxed);
            return timer;
        }
    }
    let mut body = H2Body {
        recv,
        cell: &cell,
        received: 0,
        chunked: req.framing.body == Body::Chunked,
        length: match req.framing.body {
            Body::Length(n) => Some(n),
            _ => None,
        },
        idle: s.idle_timeout,
        scratch: Vec::new(),
        kept: None,
        // A stream that ended with its head has no body to take (and `has_more` need not
        // ask the `h2` crate, a lock each time, again).
        done: end_stream && req.framing.body != Body::Chunked,
        unreleased: 0,
    };
    let mut ex = Exchange::new(
        &conn.dp,
        &table,
        req,
        &conn.peer_ip,
        conn.peer,
        conn.proto,
        started,
    );
    ex.grpc = down.grpc;
    // The forwarded head is written into `out`: room for the client's head and what the
    // gateway adds to it (X-Forwarded-*, X-Request-Id, Via) in one allocation.
    out.reserve(req.bytes.len() + FORWARD_ADDS);
    let mut up = BytesMut::new();
    let mut bufs = Bufs {
        out,
        up: &mut up,
        resp,
        timer: &mut timer,
    };
    let result = {
        // Pinned where it is made: moved into the select, the future (~2.3 KiB) was copied.
        let run = std::pin::pin!(exchange::run(&mut ex, &mut bufs, &mut down, &mut body));
        // In this order, not at random: the random start cost a random number per poll.
        tokio::select! {
            biased;
            r = run => Some(r),
            () = cell.reset() => None,
        }
    };
    let reset = result.is_none();
    let result = result.unwrap_or_else(|| Err(ProxyError::client_gone()));
    finish::finish(&mut ex, result, &mut down, body.bytes_in()).await;
    up.clear();
    bufpool::release(&mut up);
    if !reset {
        conn.guard.completed.fetch_add(1, Relaxed);
    }
    drop(ex);
    scratch.keep();
    timer
}

/// The plain listener's own answers (ACME challenge, redirect to https) on an h2c stream.
fn plain_answer(cell: &Cell, a: crate::tls::PlainAnswer, rid: &[u8], gateway: &str) -> u16 {
    let mut r = http::Response::new(());
    let (status, body) = match &a {
        crate::tls::PlainAnswer::Redirect(_) => (308, String::new()),
        crate::tls::PlainAnswer::Challenge(auth) => (200, auth.clone()),
    };
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let h = r.headers_mut();
    match &a {
        crate::tls::PlainAnswer::Redirect(loc) => {
            if let Ok(v) = HeaderValue::from_str(loc) {
                h.insert(http::header::LOCATION, v);
            }
        }
        crate::tls::PlainAnswer::Challenge(_) => {
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(v) = HeaderValue::from_str(gateway) {
        h.insert(HeaderName::from_static("x-gateway"), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(rid) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    let sent = if body.is_empty() {
        cell.respond(r, true)
    } else {
        cell.respond(r, false).and_then(|()| {
            cell.with(|slot| match std::mem::replace(slot, Slot::Done) {
                Slot::Send(mut s) => s.send_data(Bytes::from(body), true).map_err(h2_io),
                _ => Ok(()),
            })
        })
    };
    if sent.is_err() {
        log::debug!("h2 stream gone before the plain answer");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn server_timing_is_seeded_once_per_connection_every_30_s() {
        let last = AtomicU64::new(0);
        let seeded: Vec<u64> = [5, 5, 6, 34, 35, 36, 64, 65, 200]
            .into_iter()
            .filter(|t| seed_timing(*t, &last))
            .collect();
        assert_eq!(seeded, [5, 35, 65, 200]);
    }
}
