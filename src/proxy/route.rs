//! Phase 2, route + authorize: which rule a request takes, its candidates, whether its method
//! may use it (CONNECT only where listed), and whether the API key it presents holds the rule's
//! permission. No I/O: a table, a request head and the per-address count of failed keys in, a
//! decision out, so it is tested without sockets (and an HTTP/2 stream goes through it as is).
use super::auth_limit::{AuthLimiter, WINDOW_MS};
use super::error::ProxyError;
use super::exchange::Request;
use crate::http::error::ErrorKind;
use crate::http::kind::Kind;
use crate::routing::select::Candidates;
use crate::routing::table::KeyInput;
use crate::routing::{Decision, Rule, Table};
use std::net::IpAddr;

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

/// Failed API-key checks, counted per client address (`auth_limit`).
pub(crate) struct AuthFailures<'a> {
    pub limiter: &'a AuthLimiter,
    pub peer: IpAddr,
}

/// Routes `req` with `table` (shard keys come from the query string or a header). A replica
/// whose store has not loaded yet has no complete table to route with.
pub(crate) fn route<'t>(
    table: &'t Table,
    req: &Request,
    auth: &AuthFailures<'_>,
) -> Result<Routed<'t>, Refused<'t>> {
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
    // The request's host only matters when some rule names hosts.
    let mut host_buf = crate::routing::host::HostBuf::default();
    let host = if table.uses_hosts() {
        crate::routing::host::of_request(target, req.header_of(Kind::Host), &mut host_buf)
    } else {
        None
    };
    let (rule, candidates) = match table.route(req.method(), host, req.path(), &keys) {
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
    // CONNECT opens a tunnel to wherever its authority says: only on a rule that asks for it.
    // The connection closes: the client may already be sending tunnel bytes.
    if req.is_connect() && !rule.methods.iter().any(|m| &**m == b"CONNECT") {
        let msg = format!("CONNECT is not allowed on {}", rule.label);
        let e = ProxyError::refuse(ErrorKind::MethodNotAllowed, msg).closing();
        return Err(Refused::new(Some(rule), e));
    }
    let key_name = authorize(table, rule, req, auth).map_err(|e| Refused::new(Some(rule), e))?;
    Ok(Routed {
        rule,
        candidates,
        key_name,
    })
}

/// A rule with a permission needs a key that holds it: 401 without a (known) key, 403 with one
/// that lacks the permission. Unknown keys are counted per source address; past
/// `auth_failure_limit` every key from it is a 429 for the rest of the window, so a guesser
/// cannot tell a hit.
fn authorize<'t>(
    table: &'t Table,
    rule: &Rule,
    req: &Request,
    auth: &AuthFailures<'_>,
) -> Result<Option<&'t str>, ProxyError> {
    let Some(perm) = &rule.permission else {
        return Ok(None);
    };
    let presented = req.header("x-api-key");
    let now = if presented.is_some() {
        crate::clock::unix_ms()
    } else {
        0
    };
    let limit = table.server.auth_failure_limit;
    if presented.is_some() && auth.limiter.blocked(auth.peer, limit, now, WINDOW_MS) {
        return Err(ProxyError::refuse(
            ErrorKind::RateLimited,
            "too many failed API-key checks from this address; retry next minute",
        ));
    }
    match presented.and_then(|k| crate::registry::rules::find_key(&table.api_keys, k)) {
        None => {
            let msg = if presented.is_some() {
                auth.limiter.record_failure(auth.peer, now, WINDOW_MS);
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
