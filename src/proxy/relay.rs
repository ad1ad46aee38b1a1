//! Phase 5, relay: the backend's answer back to the client while the request body still goes
//! up (full duplex, as Pingora joins its two halves): interim answers, the final head, a tunnel
//! or the body, then the upstream connection back to the pool when both directions ended
//! cleanly. An early final answer (a 413 while the client uploads) reaches the client at once;
//! a backend that answers while it reads (an echo) never stalls on full socket buffers.
use super::body::CopyError;
use super::downstream::{Downstream, RequestBody};
use super::error::{ProxyError, Side};
use super::exchange::{After, Bufs, Continue, Exchange, Relayed};
use super::io::{read_head_with, ReadHeadError};
use super::send::Expect;
use super::upstream::Checkout;
use crate::config::Server;
use crate::http::error::ErrorKind;
use crate::http::kind::Kind;
use crate::http::reply::Relay;
use crate::http::response::{self, ResponseHead};
use crate::http::{framing, list_items, name_is};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::time::{timeout_at, Instant};

/// After the backend stopped taking the body, how long a final answer it wrote before
/// closing may take to show up.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// Where the upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// Body bytes are still going up.
    Running,
    /// All sent (or there was nothing to send).
    Done,
    /// The backend stopped reading: the rest of the body is never sent.
    Refused,
}

/// How the relay ended, before the upstream stream is given back or spliced.
enum End {
    /// The answer is out; `pool`: the upstream connection can carry another request, idle
    /// since `idle_at`.
    Done {
        pool: bool,
        idle_at: Instant,
    },
    Tunnel,
}

pub(crate) async fn relay<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    mut co: Checkout,
    down: &mut D,
    body: &mut B,
    bufs: &mut Bufs<'_>,
    expect: Expect,
) -> Result<Relayed, ProxyError> {
    let end = match both_ways(ex, &mut co, down, body, bufs, expect).await {
        Ok(end) => end,
        Err(e) => return Err(e.seen_on(&co.stream)),
    };
    match end {
        End::Tunnel => Ok(Relayed::Tunnel(co.stream)),
        End::Done { pool, idle_at } => {
            if pool && bufs.up.is_empty() {
                co.upstream.idle.release(co.stream, idle_at.into_std());
            }
            Ok(Relayed::Done)
        }
    }
}

async fn both_ways<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    co: &mut Checkout,
    down: &mut D,
    body: &mut B,
    bufs: &mut Bufs<'_>,
    expect: Expect,
) -> Result<End, ProxyError> {
    let s: &Server = &ex.table.server;
    let label: &str = &co.upstream.label;
    let (mut ur, mut uw) = co.stream.halves();
    let uploading = expect == Expect::Body && body.has_more();
    let mut up = if uploading {
        Upload::Running
    } else {
        Upload::Done
    };
    // Whether a retry could still send the body again, for holding back a 5xx: known now when
    // nothing is to be uploaded, else once the upload is complete.
    let mut whole = body.replayable();
    // The upload's future is as large as every way of sending a body (kept, chunked, replayed):
    // boxed, and made only when there is something to send, it costs a bodyless request
    // nothing, not even room in this future.
    let mut upload = uploading.then(|| {
        Box::pin(async {
            body.send_to(&mut uw).await?;
            Ok(body.replayable())
        })
    });
    if expect == Expect::Body {
        let mut heads = Heads {
            bufs: &mut *bufs,
            cont: &mut ex.cont,
            label,
            s,
        };
        match upload.as_mut() {
            Some(upload) => {
                let head = heads.read_final(&mut ur, down, far_future());
                // Boxed (an upload still running): its timers would otherwise add to every
                // connection's task state.
                (up, whole) = Box::pin(while_uploading(upload.as_mut(), head, label, s)).await?;
            }
            None => {
                let first_byte = ex.sent_at + s.upstream_timeout;
                heads.read_final(&mut ur, down, first_byte).await?;
            }
        }
    }
    if up == Upload::Refused {
        // Neither connection can carry another request; the client may still be sending,
        // so it is drained after the answer rather than reset under it.
        ex.after(After::Linger);
    }
    let status = bufs.resp.status;
    if up == Upload::Done && whole && held_back(ex, status) {
        // Nothing of this answer reached the client: the next try takes its place. The
        // connection carries the rest of this answer, so it is closed, not pooled.
        let mut e = ProxyError::upstream(
            ErrorKind::BadGateway,
            format!("{label} answered {status}; retrying"),
        );
        e.status = Some(status);
        e.answered = true;
        return Err(e);
    }
    let head_at = Instant::now();
    let upstream_time = head_at.saturating_duration_since(ex.sent_at);
    ex.upstream_time = Some(upstream_time);
    let upstream_ms = upstream_time.as_secs_f64() * 1000.0;
    let fr = ex.req.framing;
    let added = super::downstream::Added {
        upstream_ms,
        edits: ex
            .rule
            .map_or(&crate::http::edits::NONE.response, |r| &r.edits.response),
    };
    if (status == 101 && fr.upgrade) || (ex.req.is_connect() && (200..300).contains(&status)) {
        down.tunnel_head(bufs.out, bufs.up, bufs.resp, added)
            .await
            .map_err(|_| ProxyError::client_gone())?;
        bufs.up.advance(bufs.resp.len);
        ex.status = Some(status);
        return Ok(End::Tunnel);
    }
    if status == 101 {
        let msg = format!("{label} switched protocols without being asked");
        return Err(ProxyError::upstream(ErrorKind::BadGateway, msg));
    }
    let rbody =
        framing::response(bufs.up, &bufs.resp.headers, status, ex.req.is_head()).map_err(|m| {
            let msg = format!("{label} sent an invalid response: {m}");
            ProxyError::upstream(ErrorKind::BadGateway, msg)
        })?;
    let backend_close = closes(bufs.up, bufs.resp);
    if ex.dp.draining() {
        ex.after(After::Close);
    }
    let w = down
        .final_head(
            bufs.out,
            bufs.up,
            bufs.resp,
            rbody,
            ex.after != After::KeepAlive,
            added,
        )
        .await
        .map_err(|_| ProxyError::client_gone())?;
    ex.status = Some(status);
    if w.close {
        ex.after(After::Close);
    }
    // A body that came whole with the head (or none) leaves the backend idle from then:
    // microseconds ago, the pool needs no clock read of its own. One copied after the head
    // is idle from its end.
    let idle_at =
        matches!(w.relay, Relay::None | Relay::Length(_) if w.left == 0).then_some(head_at);
    let until_close = matches!(w.relay, Relay::UntilClose { .. });
    // Pinned where it is made: awaited by value, the future (~1.4 KiB) was copied into the
    // await's slot.
    let answer = pin!(down.body(bufs.out, &mut ur, bufs.up, w));
    let (copied, up) = match upload.as_mut() {
        Some(upload) if up == Upload::Running => {
            Box::pin(body_while_uploading(upload.as_mut(), answer)).await
        }
        _ => (answer.await, up),
    };
    if let Err(e) = copied {
        // The head is out: the only honest signal left is closing the connection.
        log::warn!("response body from {label} broken off: {e:?}");
        let mut err = ProxyError::gone(Side::Upstream, "response body broken off");
        err.relayed = w.len as u64;
        return Err(err);
    }
    if up != Upload::Done {
        ex.after(After::Linger);
    }
    Ok(End::Done {
        pool: up == Upload::Done && expect == Expect::Body && !backend_close && !until_close,
        idle_at: idle_at.unwrap_or_else(Instant::now),
    })
}

/// Whether a 5xx answer is held back for a retry: `on` names it, this try may be retried, and
/// the pool's budget has room (taken here, so the answer is relayed when it has none).
fn held_back(ex: &Exchange<'_>, status: u16) -> bool {
    use crate::resilience::policy::On;
    let on = match status {
        502 => On::Status502,
        503 => On::Status503,
        504 => On::Status504,
        _ => return false,
    };
    let (Some(set), Some(rule)) = (ex.retry_on, ex.rule) else {
        return false;
    };
    let r = &ex.table.retry;
    set.contains(on)
        && rule.pool.rt.budget.try_retry(
            crate::clock::mono_secs(Instant::now()),
            r.budget_percent,
            r.min_retries_per_second,
        )
}

/// The backend's `Connection: close` (or HTTP/1.0): its connection is not pooled.
fn closes(up: &[u8], resp: &ResponseHead) -> bool {
    resp.minor_version == 0
        || resp.headers.iter().any(|h| {
            // The usual `Connection: keep-alive` is not split.
            h.kind == Kind::Connection
                && !name_is(&up[h.value.clone()], "keep-alive")
                && list_items(&up[h.value.clone()]).any(|t| t.eq_ignore_ascii_case(b"close"))
        })
}

/// A deadline that never comes: while the client uploads, the backend may stay silent as
/// long as the body keeps moving (the upload has its own idle timeouts).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Runs the upload and the wait for the final head together; returns how the upload stood
/// when the head arrived, and whether the body could still be sent again (false unless the
/// upload is done).
async fn while_uploading(
    mut upload: Pin<&mut impl Future<Output = Result<bool, CopyError>>>,
    head: impl Future<Output = Result<(), ProxyError>>,
    label: &str,
    s: &Server,
) -> Result<(Upload, bool), ProxyError> {
    let mut head = pin!(head);
    tokio::select! {
        biased;
        r = &mut upload => match r {
            Ok(whole) => {
                // The request is complete: now the backend has `upstream_timeout` to answer.
                let deadline = Instant::now() + s.upstream_timeout;
                match timeout_at(deadline, head).await {
                    Ok(r) => r.map(|()| (Upload::Done, whole)),
                    Err(_) => Err(no_answer(ErrorKind::GatewayTimeout, label, s)),
                }
            }
            Err(CopyError::Sink(_)) => {
                // The backend stopped reading: it has had to write its refusal before
                // closing, so a short wait is enough to find it.
                match tokio::time::timeout(REFUSAL_WAIT, head).await {
                    Ok(Ok(())) => Ok((Upload::Refused, false)),
                    _ => {
                        let msg = format!("{label} closed the connection while receiving the body");
                        Err(ProxyError::upstream(ErrorKind::BadGateway, msg))
                    }
                }
            }
            Err(e) => Err(upload_failed(e)),
        },
        r = &mut head => r.map(|()| (Upload::Running, false)),
    }
}

/// Relays the answer's body while the upload goes on; returns the relay's result and how the
/// upload stood at its end.
async fn body_while_uploading(
    mut upload: Pin<&mut impl Future<Output = Result<bool, CopyError>>>,
    answer: impl Future<Output = Result<(), CopyError>>,
) -> (Result<(), CopyError>, Upload) {
    let mut answer = pin!(answer);
    let mut up = Upload::Running;
    loop {
        tokio::select! {
            biased;
            r = &mut upload, if up == Upload::Running => match r {
                Ok(_) => up = Upload::Done,
                // The backend stopped reading; its answer still goes on.
                Err(CopyError::Sink(_)) => up = Upload::Refused,
                Err(e) => return (Err(e), up),
            },
            r = &mut answer => return (r, up),
        }
    }
}

/// The error for an upload that failed on the client's side.
fn upload_failed(e: CopyError) -> ProxyError {
    match e {
        CopyError::Invalid(m) => ProxyError::client(ErrorKind::BadRequest, m),
        _ => ProxyError::client_gone(),
    }
}

/// The error for a response head that did not come.
fn no_answer(kind: ErrorKind, label: &str, s: &Server) -> ProxyError {
    let msg = match kind {
        ErrorKind::GatewayTimeout => {
            format!("{label} did not answer within {:?}", s.upstream_timeout)
        }
        _ => format!("{label} closed the connection or sent an invalid response head"),
    };
    ProxyError::upstream(kind, msg)
}

/// Reads response heads for one exchange.
struct Heads<'a, 'b> {
    bufs: &'a mut Bufs<'b>,
    cont: &'a mut Continue,
    label: &'a str,
    s: &'a Server,
}

impl Heads<'_, '_> {
    /// Reads heads until a final one (left parsed in `bufs.resp`, its bytes in `bufs.up`),
    /// relaying interim answers; the first byte must come before `first_byte`.
    async fn read_final<R: AsyncRead + Unpin, D: Downstream>(
        &mut self,
        ur: &mut R,
        down: &mut D,
        first_byte: Instant,
    ) -> Result<(), ProxyError> {
        loop {
            let n = self.read_one(ur, first_byte).await?;
            let st = self.bufs.resp.status;
            if !(100..200).contains(&st) || st == 101 {
                return Ok(());
            }
            if st != 100 || *self.cont == Continue::Waiting {
                let b = &mut *self.bufs;
                down.interim(b.out, b.up, b.resp)
                    .await
                    .map_err(|_| ProxyError::client_gone())?;
                if st == 100 {
                    *self.cont = Continue::Sent;
                }
            }
            self.bufs.up.advance(n);
        }
    }

    /// One head: a stall past `first_byte` is a 504; a close, an oversized or an invalid
    /// head a 502.
    async fn read_one<R: AsyncRead + Unpin>(
        &mut self,
        ur: &mut R,
        first_byte: Instant,
    ) -> Result<usize, ProxyError> {
        let s = self.s;
        let up: &mut BytesMut = self.bufs.up;
        let timer = &mut *self.bufs.timer;
        let (max, whole) = (s.max_header_bytes, s.upstream_timeout);
        let n = match read_head_with(ur, up, max, first_byte, whole, timer).await {
            Ok(n) => n,
            Err(ReadHeadError::Timeout) => {
                return Err(no_answer(ErrorKind::GatewayTimeout, self.label, s))
            }
            Err(_) => return Err(no_answer(ErrorKind::BadGateway, self.label, s)),
        };
        response::parse(up, n, self.bufs.resp)
            .map_err(|_| no_answer(ErrorKind::BadGateway, self.label, s))?;
        Ok(n)
    }
}
