//! Phase 4, send: the head the backend sees (with the first body bytes when they are at hand),
//! and `Expect: 100-continue`. The body itself goes up in `relay`, at the same time as the
//! answer comes back.
use super::downstream::{Downstream, RequestBody};
use super::error::ProxyError;
use super::exchange::{After, Bufs, Continue, Exchange};
use super::io::{read_head, write_all, ReadHeadError};
use super::upstream::Checkout;
use crate::http::admit::Underscore;
use crate::http::edits;
use crate::http::error::ErrorKind;
use crate::http::framing::Body;
use crate::http::kind::Kind;
use crate::http::response;
use crate::http::rewrite::{self, Forward};
use bytes::Buf;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait for a backend's `100 Continue` before sending our own (as curl does).
const EXPECT_WAIT: Duration = Duration::from_secs(1);

/// What the backend said before the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Send the body (no expectation, or it was met).
    Body,
    /// A final answer came instead of `100 Continue` (parsed into `bufs.resp`): the body is
    /// not sent.
    Final,
}

/// Writes the forwarded head, then waits out an `Expect: 100-continue`.
pub(crate) async fn send_head<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    co: &mut Checkout,
    bufs: &mut Bufs<'_>,
    down: &mut D,
    body: &mut B,
) -> Result<Expect, ProxyError> {
    let req = ex.req;
    let fr = req.framing;
    let s = &*ex.table.server;
    let upstream = &co.upstream;
    let fwd = Forward {
        client_ip: ex.client_ip,
        proto: ex.proto,
        request_id: &req.rid,
        api_key_name: ex.key_name,
        shard: ex
            .rule
            .filter(|r| r.shard.is_some())
            .and_then(|r| r.pool.ordinal_of(upstream)),
        content_length: match fr.body {
            Body::Length(n) => Some(n),
            // A `Content-Length: 0` the client sent goes on: some servers answer 411 to a
            // POST without one. (Framing passed, so any such header says 0.)
            Body::None if req.header_of(Kind::ContentLength).is_some() => Some(0),
            _ => None,
        },
        chunked: fr.body == Body::Chunked,
        upgrade: fr.upgrade,
        host_fallback: &upstream.label,
        path: req.rewritten_path(),
        drop_underscore: s.underscore_headers == Underscore::Drop,
        via: s.via_name.as_bytes(),
        edits: ex.rule.map_or(&edits::NONE, |r| &r.edits),
    };
    rewrite::request_head(&req.bytes, &req.head, &fwd, bufs.out);
    if ex.try_no > 1 {
        // Before the blank line that ends the head (SPEC §11: the first try is 1).
        let at = bufs.out.len().saturating_sub(2);
        let line = format!("X-Retry-Attempt: {}\r\n", ex.try_no);
        bufs.out.splice(at..at, line.bytes());
    }
    if ex.cont == Continue::NotAsked {
        body.coalesce(bufs.out);
    }
    if write_all(&mut co.stream, bufs.out, s.idle_timeout)
        .await
        .is_err()
    {
        let msg = format!(
            "{} closed the connection before the request was sent",
            upstream.label
        );
        // Nothing of the request reached a listening backend: a reset before any answer.
        return Err(ProxyError::upstream(ErrorKind::BadGateway, msg));
    }
    ex.sent_at = Instant::now();
    if ex.cont != Continue::Waiting {
        return Ok(Expect::Body);
    }
    // Boxed: a rare path whose timers would add to every connection's task state.
    Box::pin(expect(ex, co, bufs, down)).await
}

/// Waits up to [`EXPECT_WAIT`] for the backend's `100 Continue` (relayed) or a final answer;
/// silence gets our own 100.
async fn expect<D: Downstream>(
    ex: &mut Exchange<'_>,
    co: &mut Checkout,
    bufs: &mut Bufs<'_>,
    down: &mut D,
) -> Result<Expect, ProxyError> {
    let s = &*ex.table.server;
    let label = &co.upstream.label;
    let wait = Instant::now() + EXPECT_WAIT.min(s.upstream_timeout);
    let read = read_head(
        &mut co.stream,
        bufs.up,
        s.max_header_bytes,
        wait,
        EXPECT_WAIT,
    )
    .await;
    match read {
        Ok(n) => {
            if response::parse(bufs.up, n, bufs.resp).is_err() {
                let msg = format!("{label} sent an invalid response");
                return Err(ProxyError::upstream(ErrorKind::BadGateway, msg));
            }
            let st = bufs.resp.status;
            if !(100..200).contains(&st) || st == 101 {
                // A final answer without 100: the body is not sent, and the client
                // connection cannot be reused since it may send it anyway.
                ex.after(After::Close);
                return Ok(Expect::Final);
            }
            down.interim(bufs.out, bufs.up, bufs.resp)
                .await
                .map_err(|_| ProxyError::client_gone())?;
            bufs.up.advance(n);
        }
        Err(ReadHeadError::Timeout) => down
            .continue_100()
            .await
            .map_err(|_| ProxyError::client_gone())?,
        Err(_) => {
            let msg = format!("{label} closed the connection");
            return Err(ProxyError::upstream(ErrorKind::BadGateway, msg));
        }
    }
    ex.cont = Continue::Sent;
    Ok(Expect::Body)
}
