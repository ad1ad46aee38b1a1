//! Phase 1, read (HTTP/1.x): the next request head off the connection. The head is consumed
//! where it is parsed, on every path, so whatever is answered the next turn starts after it;
//! then the limits, the framing and smuggling checks and the target checks: nothing reaches a
//! backend before these pass.
use super::bufpool;
use super::deadline::Wait;
use super::error::ProxyError;
use super::io::{read_head_with, ReadHeadError};
use super::request_id;
use super::session::{ClientStream, Session};
use crate::http::admit::{self, Refusal};
use crate::http::error::ErrorKind;
use crate::http::framing;
use crate::http::head::{self, HeadError};
use crate::http::kind::Kind;
use crate::routing::Table;
use bytes::Buf;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use tokio::time::Instant;

/// How long a keep-alive wait lasts before the connection gives back what it keeps for the
/// next request (`Session::give_back`): one that waited this long is idle, not busy, and
/// idle connections are the ones there can be 100,000 of.
const GIVE_BACK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Why no request came.
pub(crate) enum NoRequest {
    /// The client closed, or an idle keep-alive wait ended (timeout, drain): close quietly.
    Quiet,
    /// A head that cannot be served: answer, then close.
    Refused(ProxyError),
}

/// Reads, parses and checks the next request into `s.req`; returns when its head had arrived
/// and the table it is served with.
pub(crate) async fn read_request<S: ClientStream>(
    s: &mut Session<S>,
) -> Result<(Instant, Arc<Table>), NoRequest> {
    // Only what the wait for the head needs; the table the request is served with is loaded
    // once the head is here, so this one is a guard, not an Arc clone.
    let (header_timeout, idle_timeout, max_header_bytes) = {
        let t = s.dp.table.load();
        s.access_log = t.server.access_log;
        let t = &t.server;
        (t.request_header_timeout, t.idle_timeout, t.max_header_bytes)
    };
    s.req.clear();
    let (first_byte, give_back) = if s.served == 0 {
        (s.opened + header_timeout, None)
    } else {
        // From the end of the previous exchange, whose time is known already.
        let base = s.done_at.take().unwrap_or_else(Instant::now);
        (base + idle_timeout, Some(base + GIVE_BACK_AFTER))
    };
    let mut read = Ok(0);
    if s.buf.is_empty() {
        // Wait for the first byte holding no buffer, so that idle connections cost no
        // buffer memory; an idle keep-alive wait also ends on drain.
        bufpool::release(&mut s.buf);
        read = idle_wait(s, first_byte, give_back).await?;
    }
    if read.is_ok() {
        if s.buf.capacity() == 0 {
            s.buf = bufpool::take();
        }
        read = read_head_with(
            &mut s.client,
            &mut s.buf,
            max_header_bytes,
            first_byte,
            header_timeout,
            &mut s.timer,
        )
        .await;
    }
    let len = match read {
        Ok(n) => n,
        Err(ReadHeadError::Closed | ReadHeadError::Io(_) | ReadHeadError::Truncated) => {
            return Err(NoRequest::Quiet)
        }
        Err(ReadHeadError::Timeout) if s.buf.is_empty() && s.served > 0 => {
            return Err(NoRequest::Quiet)
        }
        Err(ReadHeadError::Timeout) => {
            let e = ProxyError::client(
                ErrorKind::RequestTimeout,
                "request head not received in time",
            );
            return Err(refuse(s, e));
        }
        Err(ReadHeadError::Head(e)) => return Err(refuse(s, head_error(e))),
    };
    let started = Instant::now();
    s.req.bytes.extend_from_slice(&s.buf[..len]);
    s.buf.advance(len);
    if let Err(e) = head::parse(&s.req.bytes, len, &mut s.req.head) {
        return Err(refuse(s, head_error(e)));
    }
    // The table as of now, the head having arrived: its policy checks the head, and the
    // exchange is served with it (one load for both).
    let table = s.dp.table.load_full();
    let policy = admit::Policy {
        underscore: table.server.underscore_headers,
        via_token: table.server.via_name.as_bytes(),
    };
    prepare(&mut s.req, &policy).map_err(NoRequest::Refused)?;
    Ok((started, table))
}

/// What every parsed head goes through, whatever protocol it came in: its request id and the
/// framing, smuggling and target checks.
pub(crate) fn prepare(
    req: &mut super::exchange::Request,
    policy: &admit::Policy<'_>,
) -> Result<(), ProxyError> {
    match req.head.header_of(&req.bytes, Kind::XRequestId) {
        Some(v) if request_id::acceptable(v) => req.rid.extend_from_slice(v),
        _ => request_id::generate(&mut req.rid),
    }
    check(req, policy)
}

/// Waits until the client sends (or closes); a keep-alive wait also ends on drain.
async fn idle_wait<S: ClientStream>(
    s: &mut Session<S>,
    first_byte: Instant,
    give_back: Option<Instant>,
) -> Result<Result<usize, ReadHeadError>, NoRequest> {
    let ready = if s.served > 0 {
        if *s.shutdown.borrow() {
            return Err(NoRequest::Quiet);
        }
        // One drain future per connection, kept registered with the drain signal from one
        // wait to the next (a new one per wait took two locks and a random number).
        let mut drain = s
            .drain
            .take()
            .unwrap_or_else(|| Box::pin(drained(s.shutdown.clone())));
        let mut registered = false;
        // A wait that lasts past `give_back` gives the request's vectors back first, then
        // waits on to `first_byte`: the same timer, moved once, and nothing extra for a
        // connection whose next request comes sooner.
        let mut at = give_back.filter(|g| *g < first_byte).unwrap_or(first_byte);
        let r = loop {
            let r = {
                let shutdown = &s.shutdown;
                let mut ready = std::pin::pin!(s.timer.until(at, s.client.wait_readable()));
                std::future::poll_fn(|cx| {
                    // A drain goes first, as it would have. Its future is polled once per wait,
                    // which registers the task with the drain signal; the later polls of the
                    // same wait (the wake-up when the client sends) read the signal's version
                    // instead, a lock-free load where polling the future again took the
                    // signal's lock.
                    let drained = if registered {
                        shutdown.has_changed().unwrap_or(true)
                    } else {
                        registered = true;
                        drain.as_mut().poll(cx).is_ready()
                    };
                    if drained {
                        return Poll::Ready(None);
                    }
                    ready.as_mut().poll(cx).map(Some)
                })
                .await
            };
            match r {
                Some(None) if at < first_byte => {
                    s.give_back();
                    at = first_byte;
                }
                r => break r,
            }
        };
        s.drain = Some(drain);
        match r {
            Some(r) => r,
            None => return Err(NoRequest::Quiet),
        }
    } else {
        s.timer.until(first_byte, s.client.wait_readable()).await
    };
    Ok(match ready {
        Some(Ok(())) => Ok(0),
        Some(Err(e)) => Err(ReadHeadError::Io(e)),
        None => Err(ReadHeadError::Timeout),
    })
}

/// Resolves once the drain has begun (or its sender is gone).
async fn drained(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A refusal before the head could be parsed: with a fresh request id.
fn refuse<S>(s: &mut Session<S>, e: ProxyError) -> NoRequest {
    s.req.rid.clear();
    request_id::generate(&mut s.req.rid);
    NoRequest::Refused(e)
}

fn head_error(e: HeadError) -> ProxyError {
    match e {
        HeadError::Malformed(m) => ProxyError::client(ErrorKind::BadRequest, m),
        HeadError::UriTooLong => ProxyError::client(
            ErrorKind::UriTooLong,
            "request line longer than max_header_bytes",
        ),
        HeadError::TooLarge => ProxyError::client(
            ErrorKind::HeadersTooLarge,
            "request head larger than max_header_bytes",
        ),
    }
}

/// Framing and smuggling checks on a parsed head, then `http::admit` (target form, canonical
/// path, host, `_` names, our own hop marker); the request's `form` and `canon` are set here.
fn check(req: &mut super::exchange::Request, policy: &admit::Policy<'_>) -> Result<(), ProxyError> {
    req.framing = framing::request(&req.bytes, &req.head)
        .map_err(|e| ProxyError::client(e.kind, e.message))?;
    match admit::request(&req.bytes, &req.head, policy, &mut req.canon) {
        Ok(form) => {
            req.form = Some(form);
            Ok(())
        }
        Err(Refusal::BadRequest(m)) => Err(ProxyError::client(ErrorKind::BadRequest, m)),
        Err(Refusal::Loop) => Err(ProxyError::refuse(
            ErrorKind::LoopDetected,
            "the request already passed through this fleet (Via)",
        )
        .closing()),
    }
}
