//! Phase 3, connect: the first of the rule's candidates that gives a connection (idle pool
//! first, then a new connect); connect failures move on to the next, each candidate at most
//! once (SPEC §4), and count towards the address's outlier ejection. When none does, a 503
//! that the hold queue or a retry may act on: nothing was sent.
use super::error::ProxyError;
use super::exchange::Exchange;
use super::upstream::{checkout_with, Checkout, ConnectError};
use crate::http::error::ErrorKind;
use crate::resilience::outlier::{Event, Outcome};
use crate::routing::select::Pool;
use crate::routing::Table;
use crate::upstream::Upstream;
use std::sync::Arc;

/// Connects to the first candidate that answers; `fresh`: never from the idle pool.
pub(crate) async fn connect<'a>(
    ex: &mut Exchange<'_>,
    candidates: impl Iterator<Item = &'a Arc<Upstream>>,
    fresh: bool,
) -> Result<Checkout, ProxyError> {
    let s = &ex.table.server;
    let table = ex.table;
    let pool = ex.rule.map(|r| &*r.pool);
    let on_failure = |u: &Upstream| {
        if let Some(p) = pool {
            report(table, p, u, Outcome::Failure);
        }
    };
    let idle = (!fresh).then_some(s.idle_timeout);
    // Never one of our own listeners, checked at each connect: a DNS name can come to point
    // at us after it was configured or registered.
    let own = &ex.dp.own_listeners;
    // The idle pool's age check is dated by the request's arrival, no clock read of its own,
    // while that is recent: on the first try, before any hold.
    let now = if ex.try_no == 1 && !ex.held {
        ex.started.into_std()
    } else {
        std::time::Instant::now()
    };
    match checkout_with(candidates, s.connect_timeout, idle, own, now, &on_failure).await {
        Ok(co) => {
            ex.attempts += co.attempts;
            co.upstream.count_request();
            ex.upstream = Some(co.upstream.clone());
            Ok(co)
        }
        Err(e) => {
            let (kind, label) = ex
                .rule
                .map_or(("rule", "-"), |r| (r.kind.as_str(), r.label.as_str()));
            if let ConnectError::AllFailed { attempts, .. } = &e {
                ex.attempts += *attempts;
            }
            let msg = match &e {
                ConnectError::NoCandidates => format!("no healthy address for {kind} {label}"),
                _ => format!("no address of {kind} {label} could be reached ({e})"),
            };
            let looped = matches!(&e, ConnectError::AllFailed { error, .. }
                if error.get_ref().is_some_and(|i| i.is::<super::upstream::OwnListenerLoop>()));
            let mut err = ProxyError::refuse(ErrorKind::ServiceUnavailable, msg).retryable();
            if looped {
                err.public = Some(
                    "the backend address of this route leads to switchyard's own listeners (a forwarding loop)",
                );
            }
            Err(err)
        }
    }
}

/// Tells outlier detection what a request saw at `u`, and logs an ejection or a return.
pub(crate) fn report(table: &Table, pool: &Pool, u: &Upstream, o: Outcome) {
    let cfg = &table.outlier;
    if cfg.consecutive_failures == 0 && cfg.consecutive_5xx == 0 && u.outlier.in_service() {
        return;
    }
    // A success at an address in service needs no clock: it only resets the runs.
    let now = if o == Outcome::Success && u.outlier.in_service() {
        0
    } else {
        crate::clock::unix_ms()
    };
    let pool_cells = pool.upstreams.iter().map(|x| &x.outlier);
    match u.outlier.report(o, now, cfg, pool_cells) {
        Some(Event::Ejected { until_ms, times }) => log::warn!(
            "outlier: {} ejected from pool {} for {:.1} s (ejection {times} in a row, after {})",
            u.label,
            pool.name,
            until_ms.saturating_sub(now) as f64 / 1000.0,
            match o {
                Outcome::Status5xx => "5xx answers",
                _ => "connect failures, resets or timeouts",
            }
        ),
        Some(Event::Returned) => {
            log::info!(
                "outlier: {} back in pool {} after a successful probe",
                u.label,
                pool.name
            )
        }
        None => {}
    }
}
