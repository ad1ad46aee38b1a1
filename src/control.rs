//! The control plane's single path to a new routing table: config reloads (the `[[tcp]]`
//! listeners included), registrations, deregistrations and etcd events all end in `rebuild`
//! (one builder, one swap), serialized by one lock that also holds the config they decide on.
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
    /// The config in force. Replaced only by `reload` while it holds the lock, so whoever
    /// holds the lock decides on the config the next table is built from.
    pub config: Arc<Config>,
    /// Registered services, sorted by name.
    pub services: Vec<Registration>,
    pub limiter: RateLimiter,
}

impl Control {
    pub fn new(services: Vec<Registration>, config: Arc<Config>) -> Self {
        let mut services = services;
        services.sort_by(|a, b| a.service.cmp(&b.service));
        Control {
            limiter: RateLimiter::new(config.gateway.registration_rate_limit),
            config,
            services,
        }
    }
}

/// Builds a table from the config and services under the lock and swaps it in; starts
/// checkers for new addresses (and for addresses whose checking had stopped).
pub fn rebuild(shared: &Arc<Shared>, control: &Control) {
    let cfg = &control.config;
    let mut table = build(cfg, &control.services, &shared.upstreams);
    table.ready = shared.loaded.load(Relaxed);
    shared.dp.table.store(Arc::new(table));
    crate::health::checker::spawn_fresh(shared, &cfg.gateway);
}

/// Publishes the bound listeners, the `[[tcp]]` ones and this host's addresses (read again:
/// a reload is a good moment to notice a new interface address) for the loop checks.
pub fn publish_own_listeners(shared: &Shared) {
    use crate::registry::self_target::{HostAddrs, Listener, OwnListeners};
    let mut listeners = shared
        .bound
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    listeners.extend(
        shared
            .l4
            .local_addrs()
            .into_iter()
            .map(|addr| Listener { role: "tcp", addr }),
    );
    shared.dp.own_listeners.store(Arc::new(OwnListeners::new(
        listeners,
        HostAddrs::discover(),
    )));
}

/// Reads, validates and applies the config file; an invalid file changes nothing.
pub async fn reload(shared: &Arc<Shared>, path: &std::path::Path) -> bool {
    match config::load(path) {
        Ok(cfg) => {
            // The one part of a reload that can still fail: checked before anything changes.
            if let Err(e) = crate::observe::access_log::apply(&shared.dp.access_log, &cfg.server) {
                shared.metrics_reload_failures.fetch_add(1, Relaxed);
                log::error!("reload refused, still running the previous config: {e}");
                return false;
            }
            let mut control = shared.control.lock().await;
            let old = control.config.clone();
            if old.server.listen != cfg.server.listen
                || old.admin_listen != cfg.admin_listen
                || old.tls.as_ref().map(|t| &t.listen) != cfg.tls.as_ref().map(|t| &t.listen)
            {
                log::warn!("reload: changed listen addresses take effect at the next restart");
            }
            control
                .limiter
                .set_limit(cfg.gateway.registration_rate_limit);
            if old.tls.as_ref().map(|t| &t.acme) != cfg.tls.as_ref().map(|t| &t.acme) {
                log::warn!("reload: a changed [tls.acme] takes effect at the next restart");
            }
            // Certificates were read and checked by config::load: a bad file refused the
            // whole reload above. Open TLS connections keep the config they started with.
            shared.dp.tls.apply(cfg.tls.as_ref());
            let cfg = Arc::new(cfg);
            control.config = cfg.clone();
            shared.config.store(cfg.clone());
            rebuild(shared, &control);
            // Same lock, same config: the L4 listeners change with the HTTP table.
            shared.l4.apply(shared, &cfg);
            publish_own_listeners(shared);
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
    let mut control = shared.control.lock().await;
    // Read under the lock: a reload waiting for it cannot change the config between these
    // checks and the table they lead to.
    let cfg = control.config.clone();
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
    let t0 = Instant::now();
    // rebuild() also restarts checking of an address whose checks had stopped.
    rebuild(shared, &control);
    // The rebuild time in the same words as fleet.rs's, for scripts/fleet-scale.sh.
    log::info!(
        "{} service {} at {} with {} route(s); table rebuilt in {:.1} ms",
        if replaced {
            "re-registered"
        } else {
            "registered"
        },
        reg.service,
        reg.url,
        reg.routes.len(),
        t0.elapsed().as_secs_f64() * 1000.0
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
    let mut control = shared.control.lock().await;
    let cfg = control.config.clone();
    let key = api_key.and_then(|k| rules::find_key(&cfg.api_keys, k));
    rules::check_registration_permission(cfg.gateway.registration_permission.as_deref(), key)
        .map_err(Refusal::Forbidden)?;
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
    rebuild(shared, &control);
    log::info!("deregistered service {name}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::file::FileStore;
    use crate::upstream::set::UpstreamSet;

    const GUARDED: &str = "[[backends]]\nname = \"admin-app\"\naddresses = [\"127.0.0.1:9\"]\n\n[[routes]]\npath = \"/admin/*\"\nbackend = \"admin-app\"\npermission = \"admin\"\n";

    fn shared(src: &str, dir: &std::path::Path) -> Arc<Shared> {
        let cfg = Arc::new(config::parse(src, "t", Box::new(|_| None)).unwrap());
        let upstreams = UpstreamSet::default();
        let table = build(&cfg, &[], &upstreams);
        let store = Arc::new(FileStore::new(dir.join("registry.json")));
        Shared::new(table, Control::new(vec![], cfg), store, true, upstreams)
    }

    /// A registration that was waiting for the lock while a reload held it decides on the
    /// reloaded config, not on the one current when it arrived: the reload here adds a guarded
    /// route that the registration would take requests from.
    #[tokio::test]
    async fn registration_decides_on_the_config_the_lock_holder_installed() {
        let dir = std::env::temp_dir().join(format!("switchyard-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = shared("", &dir);
        let reg = crate::registry::parse_registration(
            br#"{"service": "grab", "url": "http://127.0.0.1:9", "routes": [{"path": "/admin/*"}]}"#,
        )
        .unwrap();

        // Stands in for a reload: holds the lock while it swaps the config.
        let mut held = s.control.lock().await;
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { register(&s, reg, None).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "register must wait for the lock");
        let guarded = Arc::new(config::parse(GUARDED, "t", Box::new(|_| None)).unwrap());
        held.config = guarded.clone();
        s.config.store(guarded);
        drop(held);

        let result = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("register finished")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Err(Refusal::Forbidden(m)) => assert!(m.contains("/admin/*"), "{m}"),
            other => panic!("registered against the config replaced under the lock: {other:?}"),
        }
        assert!(s.control.lock().await.services.is_empty());
    }
}
