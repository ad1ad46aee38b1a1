//! Phase 3, connect: the first of the rule's candidates that gives a connection (idle pool
//! first, then a new connect); connect failures move on to the next, each candidate at most
//! once (SPEC §4). When none does, a 503 that a retry policy may act on: nothing was sent.
use super::error::ProxyError;
use super::exchange::Exchange;
use super::upstream::{checkout, Checkout, ConnectError};
use crate::http::error::ErrorKind;
use crate::routing::select::Candidates;

pub(crate) async fn connect(
    ex: &mut Exchange<'_>,
    candidates: Candidates<'_>,
) -> Result<Checkout, ProxyError> {
    let s = &ex.table.server;
    // Never one of our own listeners, checked at each connect: a DNS name can come to point
    // at us after it was configured or registered.
    let own = ex.dp.own_listeners.load();
    match checkout(candidates, s.connect_timeout, s.idle_timeout, &own).await {
        Ok(co) => {
            ex.attempts = co.attempts;
            co.upstream.count_request();
            ex.upstream = Some(co.upstream.clone());
            Ok(co)
        }
        Err(e) => {
            let (kind, label) = ex
                .rule
                .map_or(("rule", "-"), |r| (r.kind.as_str(), r.label.as_str()));
            if let ConnectError::AllFailed { attempts, .. } = &e {
                ex.attempts = *attempts;
            }
            let msg = match &e {
                ConnectError::NoCandidates => format!("no healthy address for {kind} {label}"),
                _ => format!("no address of {kind} {label} could be reached ({e})"),
            };
            Err(ProxyError::refuse(ErrorKind::ServiceUnavailable, msg).retryable())
        }
    }
}
