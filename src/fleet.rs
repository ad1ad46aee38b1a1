//! The replica side of the fleet: load the whole table from etcd before serving, follow the
//! prefix with a watch, check every `full_refresh_interval` as a safety net that what it holds
//! is still etcd's prefix (a cheap range, `store/mirror.rs`) and reload everything only when it
//! is not, and reconnect with backoff while etcd is away, serving the last table meanwhile.
use crate::etcd::pb::mvccpb::event::EventType;
use crate::registry::store::etcd::EtcdStore;
use crate::registry::Registration;
use crate::state::Shared;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Fault injection for the fleet tests: `SWITCHYARD_FAULT_DROP_WATCH_EVENTS=N` makes this
/// replica ignore its next N watch responses, as if they had been lost, so a test can show
/// that the periodic full refresh heals the gap. Never set in production.
static DROP_WATCH: AtomicU64 = AtomicU64::new(0);

fn drop_this_watch_response() -> bool {
    DROP_WATCH
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// `SWITCHYARD_FLEET_ALWAYS_FULL_REFRESH=1`: every periodic refresh reads the whole prefix, as
/// before the cheap check existed, so `scripts/fleet-scale.sh` can measure both with one
/// binary. Costs etcd replicas × table size per interval; not for production.
static ALWAYS_FULL: AtomicBool = AtomicBool::new(false);

/// Runs until the process ends.
pub async fn run(shared: Arc<Shared>, store: Arc<EtcdStore>, full_refresh: Duration) {
    if let Some(n) = std::env::var("SWITCHYARD_FAULT_DROP_WATCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        log::warn!("fault injection: dropping the next {n} watch response(s)");
        DROP_WATCH.store(n, Relaxed);
    }
    if std::env::var("SWITCHYARD_FLEET_ALWAYS_FULL_REFRESH").is_ok_and(|v| v == "1") {
        log::warn!(
            "every full refresh reads the whole prefix (SWITCHYARD_FLEET_ALWAYS_FULL_REFRESH)"
        );
        ALWAYS_FULL.store(true, Relaxed);
    }
    let mut backoff = Duration::from_millis(50);
    let mut last_error = String::new();
    loop {
        let err = session(&shared, &store, full_refresh, &mut backoff).await;
        store.disconnected().await;
        if err != last_error {
            log::warn!("etcd sync: {err}; serving the last table, retrying");
            last_error = err;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Replaces the registry with `services` if it differs, through the one table builder.
async fn apply(shared: &Arc<Shared>, services: Vec<Registration>) {
    let mut control = shared.control.lock().await;
    let first = !shared.loaded.swap(true, Relaxed);
    if first || control.services != services {
        let n = services.len();
        control.services = services;
        let t0 = std::time::Instant::now();
        crate::control::rebuild(shared, &control);
        if !first {
            // The time is what a fleet's propagation costs per replica (scripts/fleet-scale.sh).
            log::info!(
                "etcd sync: registry changed ({n} service(s)); table rebuilt in {:.1} ms",
                t0.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    if first {
        log::info!(
            "etcd sync: table loaded ({} service(s)); ready",
            control.services.len()
        );
    }
}

/// One connected stretch: full load, then watch + periodic reload until something breaks.
async fn session(
    shared: &Arc<Shared>,
    store: &Arc<EtcdStore>,
    full_refresh: Duration,
    backoff: &mut Duration,
) -> String {
    let (services, mut mirror) = match store.load_mirrored().await {
        Ok(x) => x,
        Err(e) => return e.to_string(),
    };
    let revision = mirror.verified();
    apply(shared, services).await;
    store.mark_synced(revision);
    *backoff = Duration::from_millis(50);
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let prefix = store.services_prefix();
    let mut stream = match client.watch_prefix(prefix.as_bytes(), revision + 1).await {
        Ok(x) => x,
        Err(e) => return e.to_string(),
    };
    let mut tick = tokio::time::interval(full_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return "watch closed".into(),
                    Err(e) => return e.to_string(),
                };
                if resp.canceled || resp.compact_revision > 0 {
                    // Compacted past our revision or cancelled: reload and watch again.
                    return format!("watch cancelled (compact revision {})", resp.compact_revision);
                }
                if resp.events.is_empty() {
                    continue;
                }
                if drop_this_watch_response() {
                    log::warn!("fault injection: dropped a watch response");
                    continue;
                }
                let mut services = shared.control.lock().await.services.clone();
                for ev in &resp.events {
                    let Some(kv) = ev.kv.as_ref() else { continue };
                    // A delete event's kv carries the deletion's revision.
                    let deleted = ev.r#type != EventType::Put as i32;
                    if !mirror.apply(&kv.key, kv.mod_revision, deleted) {
                        continue; // already in what the last full load or check verified
                    }
                    let Some(name) = store.name_of(&kv.key) else { continue };
                    services.retain(|s| s.service != name);
                    if ev.r#type == EventType::Put as i32 {
                        if let Some(r) = store.decode(&kv.key, &kv.value) {
                            services.push(r);
                        }
                    }
                }
                services.sort_by(|a, b| a.service.cmp(&b.service));
                apply(shared, services).await;
                store.mark_synced(resp.header.map_or(0, |h| h.revision));
            }
            _ = tick.tick() => {
                if !ALWAYS_FULL.load(Relaxed) {
                    match store.unchanged(&mut mirror).await {
                        Ok(true) => {
                            store.mark_synced(mirror.verified());
                            continue;
                        }
                        Ok(false) => {
                            log::debug!("etcd sync: the refresh check found a difference; loading");
                        }
                        Err(e) => return format!("refresh check: {e}"),
                    }
                }
                match store.load_mirrored().await {
                    Ok((services, m)) => {
                        apply(shared, services).await;
                        store.mark_synced(m.verified());
                        mirror = m;
                    }
                    Err(e) => return format!("full refresh: {e}"),
                }
            }
        }
    }
}
