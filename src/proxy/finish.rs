//! Phase 6, finish: where every exchange ends. The one place a [`ProxyError`] becomes an
//! answer (status and JSON from its kind), then metrics, the access log line, and what the
//! client connection does next.
use super::downstream::Downstream;
use super::error::{ProxyError, Side};
use super::exchange::{After, Exchange, Relayed};
use crate::routing::Rule;
use crate::state::Shared;
use crate::upstream::Upstream;
use tokio::time::Instant;

/// What the connection does after an exchange.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Close after draining what the client still sends.
    Linger,
    /// The connection became a tunnel to this upstream stream.
    Tunnel(super::stream::BackendStream),
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

/// Who the access log line is about.
pub(crate) struct LogLine<'a> {
    pub on: bool,
    pub client_ip: &'a str,
    /// `METHOD target`, or empty before a head was parsed.
    pub line: &'a str,
    pub rid: &'a [u8],
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`, for metrics.
    pub protocol: &'static str,
}

/// Ends an exchange that went through the phases.
pub(crate) async fn finish<D: Downstream>(
    ex: &mut Exchange<'_>,
    result: Result<Relayed, ProxyError>,
    down: &mut D,
) -> Next {
    let req = ex.req;
    let log = LogLine {
        on: ex.table.server.access_log,
        client_ip: ex.client_ip,
        line: &req.line,
        rid: &req.rid,
        protocol: req.protocol(),
    };
    let upstream = ex.upstream.as_deref();
    let (status, next) = match result {
        Ok(relayed) => {
            let next = match relayed {
                Relayed::Tunnel(up) => Next::Tunnel(up),
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
        record(ex.dp, &log, ex.rule, upstream, status, ex.started);
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
    if e.side == Side::Upstream {
        log::warn!("{}", e.detail);
    }
    let sent = down.error(kind, &e.detail, rid, close).await;
    let next = if close {
        Next::Linger
    } else if sent.is_err() {
        Next::Close
    } else {
        Next::KeepAlive
    };
    Some((kind.status(), next))
}

/// Metrics and the access log line for one finished exchange (errors switchyard answered
/// itself included).
pub(crate) fn record(
    dp: &Shared,
    log: &LogLine<'_>,
    rule: Option<&Rule>,
    upstream: Option<&Upstream>,
    status: u16,
    started: Instant,
) {
    dp.metrics
        .observe(rule, upstream, status, started.elapsed());
    dp.metrics.count_protocol(log.protocol);
    if !log.on {
        return;
    }
    log::info!(
        target: "access",
        "{} \"{}\" {} rule={} upstream={} {:.1}ms rid={}",
        log.client_ip,
        log.line,
        status,
        rule.map_or("-", |r| r.label.as_str()),
        upstream.map_or("-", |u| &*u.label),
        started.elapsed().as_secs_f64() * 1000.0,
        String::from_utf8_lossy(log.rid),
    );
}
