//! The admin listener: health, readiness, metrics and the status page, on its own socket and
//! never on the data port. One request per connection; answers are small and built on demand.
pub mod health_json;
pub mod prometheus;
pub mod status_page;

use crate::http::error;
use crate::http::head::{self, RequestHead};
use crate::proxy::io::{read_head, write_all, ReadHeadError};
use crate::state::Shared;
use bytes::BytesMut;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The admin API reads small requests only.
const MAX_ADMIN_HEAD: usize = 16 * 1024;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves one admin connection.
pub async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let mut head_only = false;
    let answer = match read_head(
        &mut stream,
        &mut buf,
        MAX_ADMIN_HEAD,
        deadline,
        ADMIN_TIMEOUT,
    )
    .await
    {
        Ok(len) => {
            let mut h = RequestHead::default();
            match head::parse(&buf, len, &mut h) {
                Ok(()) => {
                    head_only = h.method(&buf) == b"HEAD";
                    route(&shared, &buf, &h, peer)
                }
                Err(e) => head_error(e),
            }
        }
        Err(ReadHeadError::Head(e)) => head_error(e),
        Err(ReadHeadError::Timeout) => {
            Answer::error(408, "request_timeout", "request head not received in time")
        }
        Err(_) => return,
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
    let _ = write_all(&mut stream, &out, ADMIN_TIMEOUT).await;
    let _ = stream.shutdown().await;
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
            let ready = shared.table.load().ready && !shared.draining();
            let v = serde_json::json!({"ready": ready, "draining": shared.draining()});
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
