//! The registration API on the admin listener (SPEC §5): register, deregister and list
//! services. Every refusal is a JSON error with the status SPEC §5 gives it.
use super::Answer;
use crate::control::{self, Refusal};
use crate::registry::{self, rules};
use crate::state::Shared;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;

/// Largest registration body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Whether a path belongs to this API.
pub fn owns(path: &[u8]) -> bool {
    path == b"/internal/register-service"
        || path == b"/internal/services"
        || path.starts_with(b"/internal/services/")
}

/// The refusals that do not need the body: the API switched off (404), or a change from a
/// source outside `allow_registration_from` (403). Checked before the body is read, so a
/// stranger cannot hold a connection by trickling one.
pub fn precheck(shared: &Shared, method: &[u8], source: IpAddr) -> Option<Answer> {
    let cfg = shared.config.load();
    if !cfg.gateway.enabled {
        return Some(Answer::error(
            404,
            "not_found",
            "service registration is disabled ([gateway] enabled = false)",
        ));
    }
    let mutating = method != b"GET" && method != b"HEAD";
    if mutating && !rules::allowed(&cfg.gateway.allow_registration_from, source) {
        count(shared, "forbidden");
        log::warn!("registration API refused for {source}: not in allow_registration_from");
        return Some(Answer::error(
            403,
            "forbidden",
            &format!("{source} is not in allow_registration_from"),
        ));
    }
    None
}

pub async fn handle(
    shared: &Arc<Shared>,
    method: &[u8],
    path: &[u8],
    api_key: Option<&[u8]>,
    body: &[u8],
    source: IpAddr,
) -> Answer {
    if let Some(refused) = precheck(shared, method, source) {
        return refused;
    }
    match (method, path) {
        (b"POST", b"/internal/register-service") => register(shared, api_key, body, source).await,
        (b"GET" | b"HEAD", b"/internal/services") => list(shared),
        (b"DELETE", p) if p.starts_with(b"/internal/services/") => {
            let name = String::from_utf8_lossy(&p[b"/internal/services/".len()..]).into_owned();
            if !registry::valid_service_name(&name) {
                return Answer::error(404, "not_found", "no such service");
            }
            match control::deregister(shared, &name, api_key).await {
                Ok(true) => Answer::json(200, &json!({"status": "deregistered", "service": name})),
                Ok(false) => Answer::error(404, "not_found", &format!("service {name} is not registered")),
                Err(r) => refusal(shared, r),
            }
        }
        _ => Answer::error(405, "method_not_allowed", "POST /internal/register-service, GET /internal/services, DELETE /internal/services/<name>"),
    }
}

fn count(shared: &Shared, result: &str) {
    shared.registrations.count(result);
}

fn refusal(shared: &Shared, r: Refusal) -> Answer {
    match r {
        Refusal::Forbidden(m) => {
            count(shared, "forbidden");
            Answer::error(403, "forbidden", &m)
        }
        Refusal::RateLimited => {
            count(shared, "rate_limited");
            Answer::error(
                429,
                "rate_limited",
                "too many registrations from this address; try again in a minute",
            )
        }
        Refusal::Conflict(m) => {
            count(shared, "conflict");
            Answer::error(409, "conflict", &m)
        }
        Refusal::StoreUnavailable(m) => {
            count(shared, "store_unavailable");
            log::error!("registration not stored: {m}");
            Answer::error(503, "store_unavailable", &m)
        }
    }
}

async fn register(
    shared: &Arc<Shared>,
    api_key: Option<&[u8]>,
    body: &[u8],
    source: IpAddr,
) -> Answer {
    if !control::admit(shared, source).await {
        return refusal(shared, Refusal::RateLimited);
    }
    let reg = match registry::parse_registration(body) {
        Ok(r) => r,
        Err(e) => {
            count(shared, "invalid");
            log::warn!("registration from {source} refused: {e}");
            return Answer::error(400, "bad_request", &e);
        }
    };
    if let Err(e) = check_target(shared, &reg).await {
        count(shared, "invalid");
        log::warn!("registration from {source} refused: {e}");
        return Answer::error(400, "bad_request", &e);
    }
    let (name, url, n) = (reg.service.clone(), reg.url.clone(), reg.routes.len());
    match control::register(shared, reg, api_key).await {
        Ok(()) => {
            count(shared, "ok");
            Answer::json(
                200,
                &json!({"status": "registered", "service": name, "url": url, "routes": n}),
            )
        }
        Err(r) => {
            log::warn!("registration of {name} from {source} refused: {r:?}");
            refusal(shared, r)
        }
    }
}

/// Resolves the url's host and refuses it when it leads back into switchyard or to an address
/// class no backend has. A name that does not resolve now is accepted (it may be a pod that
/// is still starting); the data plane checks every connect again.
async fn check_target(shared: &Shared, reg: &registry::Registration) -> Result<(), String> {
    let Some(addr) = reg.address() else {
        return Err("url: not http://host:port".into());
    };
    let addrs: Vec<std::net::SocketAddr> = match addr.ip() {
        Some(ip) => vec![std::net::SocketAddr::new(ip, addr.port)],
        None => {
            let timeout = shared.config.load().server.connect_timeout;
            let lookup = tokio::net::lookup_host((addr.host.as_str(), addr.port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(e)) => {
                    log::info!(
                        "registration of {}: {} does not resolve yet ({e})",
                        reg.service,
                        addr.host
                    );
                    vec![]
                }
                Err(_) => {
                    log::info!(
                        "registration of {}: resolving {} timed out",
                        reg.service,
                        addr.host
                    );
                    vec![]
                }
            }
        }
    };
    registry::check_target(&addrs, &shared.dp.own_listeners.load())
}

fn list(shared: &Shared) -> Answer {
    let table = shared.dp.table.load();
    let services: serde_json::Map<String, serde_json::Value> = table
        .services
        .iter()
        .map(|s| {
            let mut v = super::health_json::address_json(&s.upstream);
            v["url"] = json!(s.url);
            let routes: Vec<_> = table
                .routes
                .iter()
                .filter(|r| r.origin == format!("service {}", s.name))
                .map(|r| {
                    let mut v = json!({
                        "path": r.label,
                        "method": r.methods.first().map(|m| String::from_utf8_lossy(m).into_owned()),
                        "permission": r.permission,
                    });
                    if !r.hosts.is_empty() {
                        v["hosts"] = json!(r.hosts);
                    }
                    v
                })
                .collect();
            v["routes"] = json!(routes);
            (s.name.clone(), v)
        })
        .collect();
    Answer::json(200, &json!({ "services": services }))
}
