//! One request's state ([`Exchange`]), built fresh for each request, and [`run`], the driver
//! over the phases after `read`: route → connect → send → relay. Whatever the outcome, the
//! finish phase gets it. Nothing here knows which protocol the client speaks.
use super::connect;
use super::downstream::{Downstream, RequestBody};
use super::error::ProxyError;
use super::error::Side;
use super::{relay, route, send};
use crate::http::admit::Target;
use crate::http::error::ErrorKind;
use crate::http::framing::{Body, RequestFraming};
use crate::http::head::{self, RequestHead};
use crate::http::response::ResponseHead;
use crate::resilience::hold;
use crate::resilience::outlier::Outcome;
use crate::resilience::policy::{self, Decision, Failure, RequestFacts, What};
use crate::resilience::pool_rt::InFlight;
use crate::routing::select::Pool;
use crate::routing::{Rule, Table};
use crate::state::DataPlane;
use crate::upstream::Upstream;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A parsed request, as the `read` phase leaves it.
#[derive(Debug, Default)]
pub(crate) struct Request {
    /// The head's bytes, moved out of the connection's buffer where it was parsed: whatever
    /// happens next, the next request starts after it. (A copy into a vector kept across
    /// requests: cheaper than sharing the read buffer, which costs an allocation each time.)
    pub bytes: Vec<u8>,
    pub head: RequestHead,
    pub framing: RequestFraming,
    pub rid: Vec<u8>,
    /// The request is an HTTP/2 stream (its head was translated to HTTP/1.1 form).
    pub h2: bool,
    /// The target's form once `read` admitted it (`http::admit`); None before.
    pub form: Option<Target>,
    /// The canonical path when it differs from the one sent (`form` says so).
    pub canon: Vec<u8>,
}

impl Request {
    pub fn method(&self) -> &[u8] {
        self.head.method(&self.bytes)
    }
    pub fn target(&self) -> &[u8] {
        self.head.target(&self.bytes)
    }
    pub fn header(&self, lower: &str) -> Option<&[u8]> {
        self.head.header(&self.bytes, lower)
    }
    /// [`Self::header`] for a name the parse classified (`http::kind`): no name compared.
    pub fn header_of(&self, kind: crate::http::kind::Kind) -> Option<&[u8]> {
        self.head.header_of(&self.bytes, kind)
    }
    /// The path routing sees: the canonical one (`http::canonical`), `/` for CONNECT (routed
    /// as a route `path = "/"` that lists the method), None for `*` or before admission.
    pub fn path(&self) -> Option<&[u8]> {
        match self.form? {
            Target::Path { rewritten: true } => Some(&self.canon),
            Target::Path { rewritten: false } => head::route_path(self.target()),
            Target::Authority => Some(b"/"),
            Target::Asterisk => None,
        }
    }
    /// The path the backend gets in place of the one sent, when canonicalizing changed it.
    pub fn rewritten_path(&self) -> Option<&[u8]> {
        matches!(self.form, Some(Target::Path { rewritten: true })).then_some(&self.canon[..])
    }
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }
    /// The client's protocol, as access log lines and metrics name it.
    pub fn protocol(&self) -> &'static str {
        crate::metrics::PROTOCOLS[self.protocol_slot()]
    }
    /// [`Self::protocol`] as its index in `metrics::PROTOCOLS`.
    pub fn protocol_slot(&self) -> usize {
        match (self.h2, self.head.minor_version) {
            (true, _) => 2,
            (false, 0) => 0,
            _ => 1,
        }
    }
    pub fn is_connect(&self) -> bool {
        self.method() == b"CONNECT"
    }
    /// An error answered now must close: the body was not read (it would be taken for the
    /// next request), or the client did not want to keep the connection.
    pub fn must_close_on_error(&self) -> bool {
        self.framing.body != Body::None || !self.framing.keep_alive
    }
    /// Readies this for the next head; allocations are kept.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.head.len = 0;
        self.framing = RequestFraming::default();
        self.rid.clear();
        self.form = None;
        self.canon.clear();
    }
}

/// What the client connection does after this exchange. Only ever raised: a close stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum After {
    KeepAlive,
    Close,
    /// Close, after reading and discarding what the client still sends (see `session`).
    Linger,
}

/// Where `Expect: 100-continue` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continue {
    /// The client did not ask; a backend's 100 is not relayed.
    NotAsked,
    /// The client waits for a 100.
    Waiting,
    /// It got one; another is not relayed.
    Sent,
}

/// How an exchange that reached a backend ended.
pub(crate) enum Relayed {
    Done,
    /// The exchange became a tunnel to this upstream stream (101, 2xx to CONNECT).
    Tunnel(super::stream::BackendStream),
}

/// One request on its way through the phases.
pub(crate) struct Exchange<'t> {
    /// What the data plane shares: metrics, the drain signal.
    pub dp: &'t DataPlane,
    pub table: &'t Table,
    pub req: &'t Request,
    pub client_ip: &'t str,
    /// The client's address, for the per-address count of failed API keys.
    pub peer: std::net::IpAddr,
    /// The client's scheme, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// When the head had arrived.
    pub started: Instant,
    pub rule: Option<&'t Rule>,
    pub upstream: Option<Arc<Upstream>>,
    pub key_name: Option<&'t str>,
    /// Candidates tried to connect, over every try.
    pub attempts: u32,
    /// Which try this is (1 = the first), for `X-Retry-Attempt`.
    pub try_no: u32,
    /// The 5xx answers this try may hold back for a retry (None: relay whatever comes).
    pub retry_on: Option<crate::resilience::policy::OnSet>,
    /// When the head went to the backend (for `Server-Timing` and the response deadline).
    pub sent_at: Instant,
    /// From the head sent to the backend's answer head, once one came (the access log's
    /// `upstream_ms`).
    pub upstream_time: Option<Duration>,
    /// The client connection's TLS version, for the access log.
    pub tls: Option<&'static str>,
    /// The status relayed to the client, once its head is out.
    pub status: Option<u16>,
    pub cont: Continue,
    pub after: After,
    /// A gRPC request (`content-type: application/grpc…`).
    pub grpc: bool,
    /// The request waited in the hold queue (SPEC §11): its arrival is no longer "now".
    pub held: bool,
    /// When `finish` recorded the exchange: the next keep-alive wait counts from there,
    /// without a clock read of its own.
    pub done_at: Option<Instant>,
}

impl<'t> Exchange<'t> {
    pub fn new(
        dp: &'t DataPlane,
        table: &'t Table,
        req: &'t Request,
        client_ip: &'t str,
        peer: std::net::IpAddr,
        proto: &'static str,
        started: Instant,
    ) -> Self {
        Exchange {
            dp,
            table,
            req,
            client_ip,
            peer,
            proto,
            started,
            rule: None,
            upstream: None,
            key_name: None,
            attempts: 0,
            try_no: 1,
            retry_on: None,
            sent_at: started,
            upstream_time: None,
            tls: None,
            status: None,
            cont: if req.framing.expect_continue {
                Continue::Waiting
            } else {
                Continue::NotAsked
            },
            after: if req.framing.keep_alive {
                After::KeepAlive
            } else {
                After::Close
            },
            grpc: false,
            held: false,
            done_at: None,
        }
    }

    /// Raises what happens to the client connection after this exchange.
    pub fn after(&mut self, a: After) {
        self.after = self.after.max(a);
    }
}

/// Buffers an exchange borrows from its connection.
pub(crate) struct Bufs<'b> {
    /// Heads being written, both ways.
    pub out: &'b mut Vec<u8>,
    /// The backend's bytes.
    pub up: &'b mut BytesMut,
    pub resp: &'b mut ResponseHead,
    /// The connection's timer, for the wait for the backend's answer head.
    pub timer: &'b mut super::deadline::Timer,
}

/// Route, connect, send and relay one exchange, with the retries, holding and outlier
/// reports of SPEC §11; the caller hands the result to `finish`.
pub(crate) async fn run<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    bufs: &mut Bufs<'_>,
    down: &mut D,
    body: &mut B,
) -> Result<Relayed, ProxyError> {
    let auth = route::AuthFailures {
        limiter: &ex.dp.auth_failures,
        peer: ex.peer,
    };
    let routed = match route::route(ex.table, ex.req, &auth) {
        Ok(r) => r,
        Err(r) => {
            ex.rule = r.rule;
            return Err(r.error);
        }
    };
    let rule = routed.rule;
    ex.rule = Some(rule);
    ex.key_name = routed.key_name;
    if ex.grpc && !rule.pool.any_h2() {
        // gRPC needs trailers, which an HTTP/1.1 backend cannot send (SPEC §10).
        let msg = "gRPC needs an HTTP/2 backend (protocol = \"h2c\" or \"h2\")";
        let mut e = ProxyError::refuse(ErrorKind::BadGateway, msg);
        // Names no address: the client may see it (SPEC §11).
        e.public = Some(msg);
        return Err(e);
    }
    let pool = &*rule.pool;
    let _in_flight = InFlight::enter(&pool.rt.in_flight);
    let retry = &ex.table.retry;
    let facts = facts(ex.req);
    if ex.req.framing.body != Body::None && facts.body_kept && (replayable(&facts) || pool.any_h2())
    {
        // Kept while it streams up, for a retry; bodies announced larger are not (SPEC §11).
        // Any method's towards HTTP/2 backends, which may refuse a stream unprocessed.
        body.keep(retry.max_retry_body);
    }
    pool.rt
        .budget
        .record_request(crate::clock::mono_secs(ex.started));
    let mut candidates = routed.candidates;
    let mut held = false;
    // The one retry of a stale pooled connection: to this address, on a new connection.
    let mut fresh: Option<Arc<Upstream>> = None;
    let mut stale_retried = false;
    // The failure of the previous try: what the client gets when no candidate is left.
    let mut last: Option<ProxyError> = None;
    loop {
        ex.retry_on = (ex.try_no < retry.attempts && replayable(&facts) && body.replayable())
            .then_some(retry.on);
        let connected = match fresh.take() {
            Some(u) => connect::connect(ex, std::iter::once(&u), true).await,
            None => connect::connect(ex, &mut candidates, false).await,
        };
        let mut co = match connected {
            Ok(co) => co,
            Err(e) if last.is_some() => {
                log::debug!("no candidate left for a retry: {}", e.detail);
                return Err(last.take().map_or(e, |l| l));
            }
            Err(e) if !held && pool.hold.timeout > Duration::ZERO && !pool.any_up() => {
                held = true;
                ex.held = true;
                // Boxed: a rare path whose future would add to every connection's task.
                Box::pin(hold(ex, pool, e)).await?;
                candidates = match route::route(ex.table, ex.req, &auth) {
                    Ok(r) => r.candidates,
                    Err(r) => return Err(r.error),
                };
                continue;
            }
            Err(e) => return Err(e),
        };
        if let super::stream::BackendStream::H2(h) = &mut co.stream {
            if ex.req.is_connect() {
                // Refused here, not by the stream, so that the backend is not blamed.
                let msg = "CONNECT cannot be proxied to an HTTP/2 backend";
                let mut e = ProxyError::refuse(ErrorKind::BadGateway, msg);
                e.public = Some(msg);
                return Err(e);
            }
            if te_trailers(ex.req) {
                h.te_trailers();
            }
        }
        if bufs.up.capacity() == 0 {
            *bufs.up = super::bufpool::take();
        }
        bufs.up.clear();
        let upstream = co.upstream.clone();
        let _addr_in_flight = InFlight::enter(&upstream.stats.in_flight);
        let reused = co.reused;
        let r = async {
            let expect = match send::send_head(ex, &mut co, bufs, down, body).await {
                Ok(x) => x,
                Err(e) => return Err(e.seen_on(&co.stream)),
            };
            relay::relay(ex, co, down, body, bufs, expect).await
        };
        let mut e = match r.await {
            Ok(done) => {
                let o = match ex.status {
                    Some(st) if st >= 500 => Outcome::Status5xx,
                    _ => Outcome::Success,
                };
                connect::report(ex.table, pool, &upstream, o);
                return Ok(done);
            }
            Err(e) => e,
        };
        e.reused = reused;
        e.answered |= !bufs.up.is_empty();
        if e.side != Side::Upstream {
            return Err(e);
        }
        let what = match (e.status, e.answer()) {
            (Some(st), _) => What::Status(st),
            (None, Some(ErrorKind::GatewayTimeout)) => What::Timeout,
            // An answer that could not be relayed (an invalid head) counts as a 502.
            _ if e.answered => What::Status(502),
            _ => What::Reset,
        };
        let outcome = match what {
            What::Status(_) => Outcome::Status5xx,
            _ => Outcome::Failure,
        };
        let f = Failure {
            what,
            relayed: e.relayed,
            reused,
            answered: e.answered,
            not_processed: e.not_processed,
        };
        let now = RequestFacts {
            body_kept: facts.body_kept && body.replayable(),
            ..facts
        };
        let decision = policy::decide(retry, &now, &f, ex.try_no, stale_retried);
        if decision != Decision::FreshConnection {
            connect::report(ex.table, pool, &upstream, outcome);
        }
        let go = match decision {
            Decision::GiveUp | Decision::RetryFree => false,
            Decision::FreshConnection => {
                stale_retried = true;
                fresh = Some(upstream.clone());
                log::debug!(
                    "{} closed a pooled connection as it was reused; one more try on a new one",
                    upstream.label
                );
                true
            }
            // A held-back 5xx took its budget when it was held back.
            Decision::Retry => {
                e.status.is_some()
                    || pool.rt.budget.try_retry(
                        crate::clock::mono_secs(tokio::time::Instant::now()),
                        retry.budget_percent,
                        retry.min_retries_per_second,
                    )
            }
        };
        if !go {
            if let Some(st) = e.status {
                // The held-back answer cannot be relayed any more; say what it was.
                log::warn!("{} (no retry left)", e.detail);
                e = ProxyError::upstream(status_kind(st), e.detail);
            }
            return Err(e);
        }
        log::info!(
            "retrying a request for {} {} after: {} (try {} of {})",
            rule.kind.as_str(),
            rule.label,
            e.detail,
            ex.try_no + 1,
            retry.attempts
        );
        body.rewind();
        ex.try_no += 1;
        ex.status = None;
        ex.upstream = None;
        if let Some(st) = e.status {
            e = ProxyError::upstream(status_kind(st), e.detail);
        }
        last = Some(e);
    }
}

fn status_kind(status: u16) -> ErrorKind {
    match status {
        503 => ErrorKind::ServiceUnavailable,
        504 => ErrorKind::GatewayTimeout,
        _ => ErrorKind::BadGateway,
    }
}

/// What the retry policy needs to know about the request before its first try; whether its
/// body is still whole is asked of the body after each failure.
fn facts(req: &Request) -> RequestFacts {
    // The header scan for Idempotency-Key is only paid by methods that are not idempotent.
    let idempotent = policy::idempotent(req.method());
    let has_idempotency_key = !idempotent
        && req
            .header_of(crate::http::kind::Kind::IdempotencyKey)
            .is_some();
    RequestFacts {
        idempotent,
        has_idempotency_key,
        // A protocol switch or a tunnel is never replayed.
        body_kept: !req.framing.upgrade && !req.is_connect(),
    }
}

/// The client asked for trailers (`TE: trailers`): the one TE value an HTTP/2 backend may be
/// sent (RFC 9113 §8.2.2), which the forwarded head does not carry (TE is hop-by-hop).
fn te_trailers(req: &Request) -> bool {
    req.head.headers.iter().any(|h| {
        crate::http::name_is(&req.bytes[h.name.clone()], "te")
            && crate::http::list_items(&req.bytes[h.value.clone()])
                .any(|t| t.eq_ignore_ascii_case(b"trailers"))
    })
}

fn replayable(f: &RequestFacts) -> bool {
    (f.idempotent || f.has_idempotency_key) && f.body_kept
}

/// Waits for the pool to get an UP address (SPEC §11 holding); the refusal `e` is what the
/// client gets when the queue is full. A request that times out gets a 503 of its own.
async fn hold(ex: &Exchange<'_>, pool: &Pool, e: ProxyError) -> Result<(), ProxyError> {
    let Some(_place) = pool.rt.hold.enter(pool.hold.max) else {
        log::warn!(
            "{} (hold queue of pool {} full: {} waiting)",
            e.detail,
            pool.name,
            pool.hold.max
        );
        return Err(e);
    };
    let cells = pool.upstreams.iter().map(|u| &u.health);
    let r = hold::wait_until(
        &pool.rt.hold,
        cells,
        pool.hold.timeout,
        || pool.any_up(),
        || None,
    )
    .await;
    match r {
        hold::Held::Ready => Ok(()),
        hold::Held::TimedOut => {
            let msg = format!(
                "{} (held {:?}, no address of pool {} turned UP)",
                e.detail, pool.hold.timeout, pool.name
            );
            let _ = ex;
            Err(ProxyError::refuse(ErrorKind::ServiceUnavailable, msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Request;
    use crate::metrics::Metrics;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn protocols_are_named_and_counted_in_their_slots() {
        let m = Metrics::default();
        let mut req = Request::default();
        for (h2, minor, name) in [
            (false, 0, "HTTP/1.0"),
            (false, 1, "HTTP/1.1"),
            (true, 0, "HTTP/2"),
            (true, 1, "HTTP/2"),
        ] {
            req.h2 = h2;
            req.head.minor_version = minor;
            assert_eq!(req.protocol(), name);
            m.count_protocol(req.protocol_slot());
        }
        let counted: Vec<u64> = m.by_protocol.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counted, [1, 1, 2]);
        // The names prometheus labels the counters with, in the same order.
        assert_eq!(
            crate::metrics::PROTOCOLS,
            ["HTTP/1.0", "HTTP/1.1", "HTTP/2"]
        );
    }
}
