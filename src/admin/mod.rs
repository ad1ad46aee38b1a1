//! The admin listener: health, readiness, metrics and the status page, on its own socket and
//! never on the data port. One request per connection; answers are small and built on demand.
pub mod health_json;
pub mod listener;
pub mod prometheus;
pub mod register;
pub mod status_page;

use crate::http::error;
use crate::http::head::{self, RequestHead};
use crate::proxy::io::{read_head_checked, write_all, ReadHeadError};
use crate::state::Shared;
use bytes::BytesMut;
use listener::Slot;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The admin API reads small requests only.
const MAX_ADMIN_HEAD: usize = 16 * 1024;
/// The whole head must arrive within this: probes and scripts send theirs at once, and a
/// connection that does not is holding a slot for nothing.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// A registration body (at most 64 KiB) must follow within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const LINGER: Duration = Duration::from_millis(500);

/// An answer from an admin endpoint.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF (`Allow` on a 405).
    pub headers: &'static str,
}

impl Answer {
    pub fn json(status: u16, v: &serde_json::Value) -> Answer {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Answer {
            status,
            content_type: "application/json",
            body,
            headers: "",
        }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: error::body(code, message, ""),
            headers: "",
        }
    }
}

/// A request read in full, or the answer that ends the connection before it was.
enum Read {
    Request {
        buf: BytesMut,
        head: RequestHead,
        body: BytesMut,
    },
    Answer(Answer),
    Gone,
}

/// Serves one admin connection. While it waits on the client (request, linger) the
/// connection is evictable: at the connection limit a newer one takes its place.
pub async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, slot: Slot) {
    slot.evictable();
    let read = tokio::select! {
        r = read_request(&shared, &mut stream, peer) => r,
        _ = slot.evicted() => return,
    };
    slot.busy();
    let mut head_only = false;
    let answer = match read {
        Read::Gone => return,
        Read::Answer(a) => a,
        Read::Request { buf, head, body } => {
            head_only = head.method(&buf) == b"HEAD";
            let path = head::route_path(head.target(&buf)).unwrap_or(b"");
            if register::owns(path) {
                let key = head.header(&buf, "x-api-key");
                register::handle(&shared, head.method(&buf), path, key, &body, peer.ip()).await
            } else {
                route(&shared, &buf, &head, peer)
            }
        }
    };
    let mut out = Vec::with_capacity(answer.body.len() + 200);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
        answer.status,
        error::reason(answer.status),
        answer.content_type,
        answer.body.len(),
        answer.headers,
    );
    if !head_only {
        out.extend_from_slice(&answer.body);
    }
    let _ = write_all(&mut stream, &out, WRITE_TIMEOUT).await;
    let _ = stream.shutdown().await;
    // Lingering close: closing with unread bytes (a body we did not want, more garbage)
    // makes the kernel send a reset, which can destroy the answer before the client reads it.
    slot.evictable();
    let mut scratch = [0u8; 4096];
    let linger = tokio::time::timeout(LINGER, async {
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut scratch).await {
            if n == 0 {
                break;
            }
        }
    });
    tokio::select! {
        _ = linger => {}
        _ = slot.evicted() => {}
    }
}

/// Reads the head (within `HEAD_TIMEOUT`) and, for the registration API, the body. A
/// registration from a source outside the allow list is refused before its body is read.
async fn read_request(shared: &Arc<Shared>, stream: &mut TcpStream, peer: SocketAddr) -> Read {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let len = match read_admin_head(stream, &mut buf, deadline).await {
        Ok(len) => len,
        Err(ReadHeadError::Head(e)) => return Read::Answer(head_error(e)),
        Err(ReadHeadError::Timeout) => {
            return Read::Answer(Answer::error(
                408,
                "request_timeout",
                "request head not received in time",
            ))
        }
        Err(_) => return Read::Gone,
    };
    let mut h = RequestHead::default();
    if let Err(e) = head::parse(&buf, len, &mut h) {
        return Read::Answer(head_error(e));
    }
    let path = head::route_path(h.target(&buf)).unwrap_or(b"");
    let body = if register::owns(path) {
        if let Some(refused) = register::precheck(shared, h.method(&buf), peer.ip()) {
            return Read::Answer(refused);
        }
        match read_body(stream, &mut buf, &h).await {
            Ok(b) => b,
            Err(a) => return Read::Answer(a),
        }
    } else {
        BytesMut::new()
    };
    Read::Request { buf, head: h, body }
}

/// Reads a request head with the data plane's reader, the whole head within `deadline`,
/// giving up as soon as the bytes cannot be the start of an HTTP request (a TLS hello, a stray
/// protocol): such a client gets its 400 at once instead of holding the connection until the
/// timeout.
async fn read_admin_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<usize, ReadHeadError> {
    let read = read_head_checked(stream, buf, MAX_ADMIN_HEAD, deadline, HEAD_TIMEOUT, |b| {
        head::plausible_request(b)
    });
    match tokio::time::timeout_at(deadline, read).await {
        Ok(r) => r,
        Err(_) => Err(ReadHeadError::Timeout),
    }
}

/// The answer to a head that could not be read or parsed.
fn head_error(e: head::HeadError) -> Answer {
    match e {
        head::HeadError::TooLarge => Answer::error(
            431,
            "headers_too_large",
            "request head larger than the admin listener accepts",
        ),
        head::HeadError::UriTooLong => Answer::error(414, "uri_too_long", "request line too long"),
        head::HeadError::Malformed(m) => {
            Answer::error(400, "bad_request", &format!("malformed request head: {m}"))
        }
    }
}

/// Reads a registration request's body (Content-Length only, bounded).
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    h: &RequestHead,
) -> Result<BytesMut, Answer> {
    let framing = crate::http::framing::request(buf, h)
        .map_err(|e| Answer::error(400, "bad_request", e.message))?;
    let len = match framing.body {
        crate::http::framing::Body::None => 0,
        crate::http::framing::Body::Length(n) if n as usize <= register::MAX_BODY => n as usize,
        crate::http::framing::Body::Length(_) => {
            return Err(Answer::error(
                413,
                "payload_too_large",
                "registration bodies are at most 64 KiB",
            ))
        }
        _ => {
            return Err(Answer::error(
                411,
                "length_required",
                "send the body with Content-Length",
            ))
        }
    };
    let mut body = buf.split_off(h.len);
    let deadline = Instant::now() + BODY_TIMEOUT;
    while body.len() < len {
        match crate::proxy::io::read_some(stream, &mut body, deadline).await {
            Ok(n) if n > 0 => {}
            _ => return Err(Answer::error(400, "bad_request", "request body incomplete")),
        }
    }
    body.truncate(len);
    Ok(body)
}

fn route(shared: &Arc<Shared>, buf: &[u8], h: &RequestHead, _peer: SocketAddr) -> Answer {
    let method = h.method(buf);
    let path = head::route_path(h.target(buf)).unwrap_or(b"");
    let known: &[&[u8]] = &[b"/", b"/health", b"/ready", b"/metrics"];
    if !known.contains(&path) {
        return Answer::error(404, "not_found", "unknown admin endpoint");
    }
    if method != b"GET" && method != b"HEAD" {
        let mut a = Answer::error(
            405,
            "method_not_allowed",
            "this endpoint answers GET and HEAD",
        );
        a.headers = "Allow: GET, HEAD\r\n";
        return a;
    }
    match path {
        b"/health" => Answer::json(200, &health_json::health(shared)),
        b"/ready" => {
            let ready = shared.dp.table.load().ready && !shared.dp.draining();
            let v = serde_json::json!({"ready": ready, "draining": shared.dp.draining()});
            Answer::json(if ready { 200 } else { 503 }, &v)
        }
        b"/metrics" => {
            let openmetrics = h
                .header(buf, "accept")
                .is_some_and(|a| contains(a, b"application/openmetrics-text"));
            let (content_type, body) = prometheus::render(shared, openmetrics);
            Answer {
                status: 200,
                content_type,
                body,
                headers: "",
            }
        }
        _ => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status_page::render(shared).into_bytes(),
            headers: "",
        },
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
