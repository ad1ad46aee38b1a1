//! The control plane's single path to a new routing table: config reloads, registrations and
//! deregistrations all end in `rebuild` (one builder, one swap), serialized by one lock.
use crate::config::{self, Config};
use crate::registry::rules::{self, RateLimiter};
use crate::registry::store::StoreError;
use crate::registry::Registration;
use crate::routing::build::build;
use crate::state::Shared;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// State only the control plane touches, behind `Shared::control`.
pub struct Control {
    /// Registered services, sorted by name.
    pub services: Vec<Registration>,
    pub limiter: RateLimiter,
}

impl Control {
    pub fn new(services: Vec<Registration>, cfg: &Config) -> Self {
        let mut services = services;
        services.sort_by(|a, b| a.service.cmp(&b.service));
        Control {
            services,
            limiter: RateLimiter::new(cfg.gateway.registration_rate_limit),
        }
    }
}

/// Builds a table from the current config and `services` and swaps it in; starts checkers for
/// new addresses (and for addresses whose checking had stopped).
pub fn rebuild(shared: &Arc<Shared>, services: &[Registration]) {
    let cfg = shared.config.load();
    let mut table = build(&cfg, services, &shared.upstreams);
    table.ready = shared.loaded.load(Relaxed);
    shared.table.store(Arc::new(table));
    crate::health::checker::spawn_fresh(shared, &cfg.gateway);
}

/// Reads, validates and applies the config file; an invalid file changes nothing.
pub async fn reload(shared: &Arc<Shared>, path: &std::path::Path) -> bool {
    match config::load(path) {
        Ok(cfg) => {
            // The one part of a reload that can still fail: checked before anything changes.
            if let Err(e) = crate::observe::access_log::apply(&shared.access_log, &cfg.server) {
                shared.metrics_reload_failures.fetch_add(1, Relaxed);
                log::error!("reload refused, still running the previous config: {e}");
                return false;
            }
            let old = shared.config.load();
            if old.server.listen != cfg.server.listen
                || old.admin_listen != cfg.admin_listen
                || old.tls.as_ref().map(|t| &t.listen) != cfg.tls.as_ref().map(|t| &t.listen)
            {
                log::warn!("reload: changed listen addresses take effect at the next restart");
            }
            let mut control = shared.control.lock().await;
            control
                .limiter
                .set_limit(cfg.gateway.registration_rate_limit);
            if old.tls.as_ref().map(|t| &t.acme) != cfg.tls.as_ref().map(|t| &t.acme) {
                log::warn!("reload: a changed [tls.acme] takes effect at the next restart");
            }
            // Certificates were read and checked by config::load: a bad file refused the
            // whole reload above. Open TLS connections keep the config they started with.
            shared.tls.apply(cfg.tls.as_ref());
            shared.config.store(Arc::new(cfg));
            rebuild(shared, &control.services);
            log::info!("reloaded {}", path.display());
            true
        }
        Err(e) => {
            shared.metrics_reload_failures.fetch_add(1, Relaxed);
            for line in e.to_string().lines() {
                log::error!("reload refused, still running the previous config: {line}");
            }
            false
        }
    }
}

/// Why a registration was refused, with its status code.
#[derive(Debug)]
pub enum Refusal {
    Forbidden(String),
    RateLimited,
    Conflict(String),
    StoreUnavailable(String),
}

/// Counts a registration attempt from `source`; false when it is over the rate limit. Every
/// attempt counts, malformed ones too, so a flood of bad bodies is limited as well.
pub async fn admit(shared: &Arc<Shared>, source: IpAddr) -> bool {
    shared
        .control
        .lock()
        .await
        .limiter
        .allow(source, Instant::now())
}

/// Registers (or replaces) a service: every rule checked, stored durably, then routed.
pub async fn register(
    shared: &Arc<Shared>,
    reg: Registration,
    api_key: Option<&[u8]>,
) -> Result<(), Refusal> {
    let cfg = shared.config.load_full();
    let mut control = shared.control.lock().await;
    let key = api_key.and_then(|k| rules::find_key(&cfg.api_keys, k));
    rules::check_registration_permission(cfg.gateway.registration_permission.as_deref(), key)
        .map_err(Refusal::Forbidden)?;
    rules::check_permissions(&reg, key).map_err(Refusal::Forbidden)?;
    if let Some(current) = control.services.iter().find(|s| s.service == reg.service) {
        rules::check_owner(current, key).map_err(Refusal::Forbidden)?;
    }
    if let Some(m) = rules::find_unguarded(&reg, &cfg.routes, &control.services) {
        return Err(Refusal::Forbidden(m));
    }
    if let Some(c) = rules::find_conflict(&reg, &cfg.routes, &control.services) {
        return Err(Refusal::Conflict(c));
    }
    let mut next: Vec<Registration> = control
        .services
        .iter()
        .filter(|s| s.service != reg.service)
        .cloned()
        .collect();
    next.push(reg.clone());
    next.sort_by(|a, b| a.service.cmp(&b.service));
    let statics = cfg.routes.clone();
    let check =
        move |r: &Registration, others: &[Registration]| rules::find_conflict(r, &statics, others);
    match shared.store.put(&reg, &next, &check).await {
        Ok(()) => shared.store_synced.store(true, Relaxed),
        Err(StoreError::Conflict(m)) => return Err(Refusal::Conflict(m)),
        Err(StoreError::Unavailable(m)) => {
            shared.store_synced.store(false, Relaxed);
            return Err(Refusal::StoreUnavailable(m));
        }
    }
    let replaced = control.services.iter().any(|s| s.service == reg.service);
    control.services = next;
    // rebuild() also restarts checking of an address whose checks had stopped.
    rebuild(shared, &control.services);
    log::info!(
        "{} service {} at {} with {} route(s)",
        if replaced {
            "re-registered"
        } else {
            "registered"
        },
        reg.service,
        reg.url,
        reg.routes.len()
    );
    Ok(())
}

/// Deregisters a service; Ok(false) if it was not registered. The same key rules as
/// replacing it: `registration_permission` (checked first, so that a caller without it does
/// not learn which names exist) and every permission its routes carry.
pub async fn deregister(
    shared: &Arc<Shared>,
    name: &str,
    api_key: Option<&[u8]>,
) -> Result<bool, Refusal> {
    let cfg = shared.config.load_full();
    let key = api_key.and_then(|k| rules::find_key(&cfg.api_keys, k));
    rules::check_registration_permission(cfg.gateway.registration_permission.as_deref(), key)
        .map_err(Refusal::Forbidden)?;
    let mut control = shared.control.lock().await;
    let Some(current) = control.services.iter().find(|s| s.service == name) else {
        return Ok(false);
    };
    rules::check_owner(current, key).map_err(Refusal::Forbidden)?;
    let next: Vec<Registration> = control
        .services
        .iter()
        .filter(|s| s.service != name)
        .cloned()
        .collect();
    match shared.store.delete(name, &next).await {
        Ok(()) => shared.store_synced.store(true, Relaxed),
        Err(e) => {
            shared.store_synced.store(false, Relaxed);
            return Err(Refusal::StoreUnavailable(e.to_string()));
        }
    }
    control.services = next;
    rebuild(shared, &control.services);
    log::info!("deregistered service {name}");
    Ok(true)
}
