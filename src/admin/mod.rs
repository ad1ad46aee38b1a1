//! The admin listener: health, readiness, metrics and the status page, on its own socket and
//! never on the data port. One request per connection; answers are small and built on demand.
pub mod health_json;
pub mod register;

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
}

impl Answer {
    pub fn json(status: u16, v: &serde_json::Value) -> Answer {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Answer {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: error::body(code, message, ""),
        }
    }
}

/// Serves one admin connection.
pub async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = Instant::now() + ADMIN_TIMEOUT;
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
                    let path = head::route_path(h.target(&buf)).unwrap_or(b"");
                    if register::owns(path) {
                        registration(&shared, &mut stream, &mut buf, &h, peer).await
                    } else {
                        route(&shared, &buf, &h, peer)
                    }
                }
                Err(_) => Answer::error(400, "bad_request", "malformed request head"),
            }
        }
        Err(ReadHeadError::Head(_)) => Answer::error(400, "bad_request", "malformed request head"),
        Err(ReadHeadError::Timeout) => {
            Answer::error(408, "request_timeout", "request head not received in time")
        }
        Err(_) => return,
    };
    let mut out = Vec::with_capacity(answer.body.len() + 200);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        answer.status,
        error::reason(answer.status),
        answer.content_type,
        answer.body.len()
    );
    out.extend_from_slice(&answer.body);
    let _ = write_all(&mut stream, &out, ADMIN_TIMEOUT).await;
    let _ = stream.shutdown().await;
}

/// Reads a registration request's body (Content-Length only, bounded) and hands it over.
async fn registration(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    h: &RequestHead,
    peer: SocketAddr,
) -> Answer {
    let framing = match crate::http::framing::request(buf, h) {
        Ok(f) => f,
        Err(e) => return Answer::error(400, "bad_request", e.message),
    };
    let len = match framing.body {
        crate::http::framing::Body::None => 0,
        crate::http::framing::Body::Length(n) if n as usize <= register::MAX_BODY => n as usize,
        crate::http::framing::Body::Length(_) => {
            return Answer::error(
                413,
                "payload_too_large",
                "registration bodies are at most 64 KiB",
            )
        }
        _ => return Answer::error(411, "length_required", "send the body with Content-Length"),
    };
    let mut body = buf.split_off(h.len);
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    while body.len() < len {
        match crate::proxy::io::read_some(stream, &mut body, deadline).await {
            Ok(n) if n > 0 => {}
            _ => return Answer::error(400, "bad_request", "request body incomplete"),
        }
    }
    body.truncate(len);
    let method = h.method(buf);
    let path = head::route_path(h.target(buf)).unwrap_or(b"");
    let key = h.header(buf, "x-api-key");
    register::handle(shared, method, path, key, &body, peer.ip()).await
}

fn route(shared: &Arc<Shared>, buf: &[u8], h: &RequestHead, _peer: SocketAddr) -> Answer {
    let method = h.method(buf);
    let path = head::route_path(h.target(buf)).unwrap_or(b"");
    let known: &[&[u8]] = &[b"/", b"/health", b"/ready", b"/metrics"];
    if !known.contains(&path) {
        return Answer::error(404, "not_found", "unknown admin endpoint");
    }
    if method != b"GET" && method != b"HEAD" {
        return Answer::error(405, "method_not_allowed", "admin endpoints answer GET");
    }
    match path {
        b"/health" => Answer::json(200, &health_json::health(shared)),
        b"/ready" => {
            let ready = shared.table.load().ready && !shared.draining();
            let v = serde_json::json!({"ready": ready, "draining": shared.draining()});
            Answer::json(if ready { 200 } else { 503 }, &v)
        }
        _ => Answer::error(404, "not_found", "not available yet"),
    }
}
