//! Phase 6, finish: where every exchange ends. The one place a [`ProxyError`] becomes an
//! answer (status and JSON from its kind), then metrics, the access log line, and what the
//! client connection does next.
use super::downstream::Downstream;
use super::error::{ProxyError, Side};
use super::exchange::{After, Exchange, Relayed, Request};
use crate::http::error::ErrorKind;
use crate::http::kind::Kind;
use crate::observe::access_log::Entry;
use crate::routing::Rule;
use crate::state::DataPlane;
use crate::upstream::Upstream;
use std::time::Duration;
use tokio::time::Instant;

/// What the connection does after an exchange.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Close after draining what the client still sends.
    Linger,
    /// The connection became a tunnel to this upstream stream; the second access log line
    /// is written from what the box keeps when it closes (None: the log is off).
    Tunnel(super::stream::BackendStream, Option<Box<TunnelLog>>),
}

/// What the tunnel's closing line repeats of the exchange that opened it.
pub(crate) struct TunnelLog {
    pub rule: Option<String>,
    pub upstream: Option<Box<str>>,
    pub attempts: u32,
    pub key_name: Option<String>,
    pub tls: Option<&'static str>,
    pub status: u16,
    pub started: Instant,
}

impl From<After> for Next {
    fn from(a: After) -> Self {
        match a {
            After::KeepAlive => Next::KeepAlive,
            After::Close => Next::Close,
            After::Linger => Next::Linger,
        }
    }
}

/// Who and what the access log line is about (SPEC §12).
pub(crate) struct LogLine<'a> {
    /// `access_log` of the table the request was read with.
    pub on: bool,
    pub client_ip: &'a str,
    /// The request; its head may be unparsed (a refused head), then method and path are empty.
    pub req: &'a Request,
    pub tls: Option<&'static str>,
    /// Request bytes read from the client (head and body) and answer bytes written to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream_time: Option<Duration>,
    pub attempts: u32,
    pub key_name: Option<&'a str>,
}

impl<'a> LogLine<'a> {
    /// A line for a request switchyard answered itself, before any routing.
    pub fn own(on: bool, client_ip: &'a str, req: &'a Request, tls: Option<&'static str>) -> Self {
        LogLine {
            on,
            client_ip,
            req,
            tls,
            bytes_in: req.bytes.len() as u64,
            bytes_out: 0,
            upstream_time: None,
            attempts: 0,
            key_name: None,
        }
    }
}

/// Ends an exchange that went through the phases.
pub(crate) async fn finish<D: Downstream>(
    ex: &mut Exchange<'_>,
    result: Result<Relayed, ProxyError>,
    down: &mut D,
    body_in: u64,
) -> Next {
    let req = ex.req;
    let upstream = ex.upstream.as_deref();
    let (status, next) = match result {
        Ok(relayed) => {
            let next = match relayed {
                Relayed::Tunnel(up) => {
                    let log = ex.table.server.access_log.then(|| {
                        Box::new(TunnelLog {
                            rule: ex.rule.map(|r| r.label.clone()),
                            upstream: upstream.map(|u| u.label.clone()),
                            attempts: ex.attempts,
                            key_name: ex.key_name.map(str::to_string),
                            tls: ex.tls,
                            status: ex.status.unwrap_or(101),
                            started: ex.started,
                        })
                    });
                    Next::Tunnel(up, log)
                }
                Relayed::Done => ex.after.into(),
            };
            (ex.status, next)
        }
        Err(e) => {
            let close = e.must_close || req.must_close_on_error() || ex.after != After::KeepAlive;
            match answer(down, &e, &req.rid, close).await {
                Some((status, next)) => (Some(status), next),
                // Nothing could be answered; a head already relayed is what the log says.
                None => (ex.status, Next::Close),
            }
        }
    };
    if let Some(status) = status {
        let log = LogLine {
            on: ex.table.server.access_log,
            client_ip: ex.client_ip,
            req,
            tls: ex.tls,
            bytes_in: req.bytes.len() as u64 + body_in,
            bytes_out: down.bytes_out(),
            upstream_time: ex.upstream_time,
            attempts: ex.attempts,
            key_name: ex.key_name,
        };
        ex.done_at = Some(record(ex.dp, &log, ex.rule, upstream, status, ex.started));
    }
    next
}

/// Answers `e` if it can be; returns the status given and what the connection does next.
pub(crate) async fn answer<D: Downstream>(
    down: &mut D,
    e: &ProxyError,
    rid: &[u8],
    close: bool,
) -> Option<(u16, Next)> {
    let kind = e.answer()?;
    let message = public_message(kind, e);
    if message != e.detail {
        // The detail names addresses and OS errors: for the log, with the request id.
        log::warn!("{} (request {})", e.detail, String::from_utf8_lossy(rid));
    }
    let sent = down.error(kind, message, rid, close).await;
    let next = if close {
        Next::Linger
    } else if sent.is_err() {
        Next::Close
    } else {
        Next::KeepAlive
    };
    Some((kind.status(), next))
}

/// What the client is told (SPEC §11): for failures of a backend or of the way to one, what
/// failed in the client's terms, never an address or an operating-system error text.
fn public_message(kind: ErrorKind, e: &ProxyError) -> &str {
    if let Some(p) = e.public {
        return p;
    }
    match kind {
        ErrorKind::BadGateway => "the backend closed the connection or sent an invalid response",
        ErrorKind::GatewayTimeout => "the backend did not answer in time",
        ErrorKind::ServiceUnavailable => "no backend for this route is available right now",
        _ if e.side == Side::Upstream => "the backend failed",
        _ => &e.detail,
    }
}

/// Metrics and the access log line for one finished exchange (errors switchyard answered
/// itself included). Returns the time it read, at which the exchange counts as done.
pub(crate) fn record(
    dp: &DataPlane,
    log: &LogLine<'_>,
    rule: Option<&Rule>,
    upstream: Option<&Upstream>,
    status: u16,
    started: Instant,
) -> Instant {
    let now = Instant::now();
    let took = now.saturating_duration_since(started);
    dp.metrics
        .observe(rule, upstream, status, took, (log.bytes_in, log.bytes_out));
    dp.metrics.count_protocol(log.req.protocol_slot());
    access_log(dp, log, rule, upstream, status, took);
    now
}

/// The access log line of [`record`], when the log is on.
fn access_log(
    dp: &DataPlane,
    log: &LogLine<'_>,
    rule: Option<&Rule>,
    upstream: Option<&Upstream>,
    status: u16,
    took: Duration,
) {
    if !log.on {
        return;
    }
    let sink = dp.access_log.load();
    let Some(sink) = sink.as_deref() else {
        return;
    };
    let server = dp.table.load().server.clone();
    let req = log.req;
    let parsed = req.head.len > 0;
    let e = Entry {
        ts_ms: crate::clock::unix_ms().saturating_sub(took.as_millis() as u64),
        request_id: &req.rid,
        client: log.client_ip,
        method: if parsed { req.method() } else { b"" },
        host: if parsed {
            req.header_of(Kind::Host)
        } else {
            None
        },
        target: if parsed { req.target() } else { b"" },
        protocol: if parsed { req.protocol() } else { "-" },
        status,
        bytes_in: log.bytes_in,
        bytes_out: log.bytes_out,
        duration: took,
        upstream_time: log.upstream_time,
        rule: rule.map(|r| r.label.as_str()),
        upstream: upstream.map(|u| &*u.label),
        attempts: log.attempts,
        api_key_name: log.key_name,
        user_agent: if parsed {
            req.header("user-agent")
        } else {
            None
        },
        tls: log.tls,
        tunnel_closed: false,
    };
    sink.write(&e, server.access_log_format, server.access_log_query);
}

/// The tunnel's second line (SPEC §12): its byte counts both ways and its whole duration.
pub(crate) fn tunnel_closed(
    dp: &DataPlane,
    client_ip: &str,
    req: &Request,
    t: &TunnelLog,
    flow: Option<super::l4::Flow>,
) {
    let Some(sink) = dp.access_log.load_full() else {
        return;
    };
    let server = dp.table.load().server.clone();
    let took = t.started.elapsed();
    let (up, down) = flow.map_or((0, 0), |f| (f.up, f.down));
    let e = Entry {
        ts_ms: crate::clock::unix_ms(),
        request_id: &req.rid,
        client: client_ip,
        method: req.method(),
        host: req.header("host"),
        target: req.target(),
        protocol: req.protocol(),
        status: t.status,
        bytes_in: up,
        bytes_out: down,
        duration: took,
        upstream_time: None,
        rule: t.rule.as_deref(),
        upstream: t.upstream.as_deref(),
        attempts: t.attempts,
        api_key_name: t.key_name.as_deref(),
        user_agent: req.header("user-agent"),
        tls: t.tls,
        tunnel_closed: true,
    };
    sink.write(&e, server.access_log_format, server.access_log_query);
}
