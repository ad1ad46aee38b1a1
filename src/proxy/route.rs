//! Phase 2, route + authorize: which rule a request takes, its candidates, and whether the API
//! key it presents holds the rule's permission. Pure: a table and a request head in, a decision
//! out; no I/O, so it is tested without sockets (and an HTTP/2 stream goes through it as is).
use super::error::ProxyError;
use super::exchange::Request;
use crate::http::error::ErrorKind;
use crate::routing::select::Candidates;
use crate::routing::table::KeyInput;
use crate::routing::{Decision, Rule, Table};

/// Where a request goes.
pub(crate) struct Routed<'t> {
    pub rule: &'t Rule,
    pub candidates: Candidates<'t>,
    /// The name of the API key that authorized it, for `X-Api-Key-Name`.
    pub key_name: Option<&'t str>,
}

/// A refusal, with the rule it was refused under (metrics count it there) when one matched.
pub(crate) struct Refused<'t> {
    pub rule: Option<&'t Rule>,
    pub error: ProxyError,
}

impl<'t> Refused<'t> {
    fn new(rule: Option<&'t Rule>, error: ProxyError) -> Self {
        Refused { rule, error }
    }
}

/// Routes `req` with `table` (shard keys come from the query string or a header). A replica
/// whose store has not loaded yet has no complete table to route with.
pub(crate) fn route<'t>(table: &'t Table, req: &Request) -> Result<Routed<'t>, Refused<'t>> {
    if !table.ready {
        let e = ProxyError::refuse(ErrorKind::NotReady, "the routing table is not loaded yet");
        return Err(Refused::new(None, e));
    }
    let target = req.target();
    let header = |name: &str| req.header(name);
    let keys = KeyInput {
        query: target
            .iter()
            .position(|b| *b == b'?')
            .map(|i| &target[i + 1..]),
        header: &header,
    };
    let (rule, candidates) = match table.route(req.method(), req.path(), &keys) {
        Decision::Forward { rule, candidates } => (rule, candidates),
        Decision::NotFound => {
            let e = ProxyError::refuse(ErrorKind::NoRoute, "no route matches this request");
            return Err(Refused::new(None, e));
        }
        Decision::BadKey { rule, reason } => {
            let msg = format!("{reason} (shard {})", rule.pool.name);
            let e = ProxyError::client(ErrorKind::BadRequest, msg);
            return Err(Refused::new(Some(rule), e));
        }
    };
    rule.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key_name = authorize(table, rule, req).map_err(|e| Refused::new(Some(rule), e))?;
    Ok(Routed {
        rule,
        candidates,
        key_name,
    })
}

/// A rule with a permission needs a key that holds it: 401 without a (known) key, 403 with one
/// that lacks the permission.
fn authorize<'t>(
    table: &'t Table,
    rule: &Rule,
    req: &Request,
) -> Result<Option<&'t str>, ProxyError> {
    let Some(perm) = &rule.permission else {
        return Ok(None);
    };
    let presented = req.header("x-api-key");
    match presented.and_then(|k| crate::registry::rules::find_key(&table.api_keys, k)) {
        None => {
            let msg = if presented.is_some() {
                "unknown API key"
            } else {
                "this route needs an X-API-Key"
            };
            Err(ProxyError::refuse(ErrorKind::Unauthorized, msg))
        }
        Some(k) if !k.permissions.iter().any(|p| p == perm) => {
            let msg = format!("API key {} lacks permission {perm}", k.name);
            Err(ProxyError::refuse(ErrorKind::Forbidden, msg))
        }
        Some(k) => Ok(Some(&k.name)),
    }
}
