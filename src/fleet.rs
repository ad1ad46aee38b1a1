//! The replica side of the fleet: load the whole table from etcd before serving, follow the
//! prefix with a watch, check every `full_refresh_interval` as a safety net that what it holds
//! is still etcd's prefix (a cheap range, `store/mirror.rs`) and reload everything only when it
//! is not, and reconnect with backoff while etcd is away, serving the last table meanwhile.
use crate::etcd::client::Watch;
use crate::etcd::pb::etcdserverpb::WatchResponse;
use crate::etcd::pb::mvccpb::event::EventType;
use crate::registry::store::etcd::{Checked, EtcdStore};
use crate::registry::Registration;
use crate::state::Shared;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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

/// Fault injection for the fleet tests: `SWITCHYARD_FAULT_WATCH_LAG_MS=N` hands each watch
/// response on N ms after it arrived, without holding up the refresh meanwhile, as a busy
/// machine does when fifty replicas wake for one event, so that a test can put a refresh
/// check (or a registration) between a write and its event. Never set in production.
static WATCH_LAG_MS: AtomicU64 = AtomicU64::new(0);

/// The watch's responses, straight from the stream or (fault injection) lagged.
enum Responses {
    Direct(Box<Watch>),
    Lagged {
        rx: mpsc::UnboundedReceiver<Result<Option<WatchResponse>, String>>,
        _tasks: AbortOnDrop,
    },
}

/// Stops the lagging tasks with the session.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.abort());
    }
}

impl Responses {
    fn new(mut watch: Watch) -> Responses {
        let lag = Duration::from_millis(WATCH_LAG_MS.load(Relaxed));
        if lag.is_zero() {
            return Responses::Direct(Box::new(watch));
        }
        // One task reads and stamps each response, one hands it on at its time: a receiver
        // that slept in the select loop would lose a response whenever the tick won.
        let (stamped_tx, mut stamped) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let read = tokio::spawn(async move {
            loop {
                let m = watch.message().await.map_err(|e| e.to_string());
                let end = !matches!(m, Ok(Some(_)));
                if stamped_tx
                    .send((tokio::time::Instant::now() + lag, m))
                    .is_err()
                    || end
                {
                    return;
                }
            }
        });
        let hand_on = tokio::spawn(async move {
            while let Some((at, m)) = stamped.recv().await {
                tokio::time::sleep_until(at).await;
                if tx.send(m).is_err() {
                    return;
                }
            }
        });
        Responses::Lagged {
            rx,
            _tasks: AbortOnDrop(vec![read, hand_on]),
        }
    }

    /// The next response (cancel-safe: the select loop drops it when the tick wins).
    async fn message(&mut self) -> Result<Option<WatchResponse>, String> {
        match self {
            Responses::Direct(w) => w.message().await.map_err(|e| e.to_string()),
            Responses::Lagged { rx, .. } => rx.recv().await.unwrap_or(Ok(None)),
        }
    }
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
    if let Some(ms) = std::env::var("SWITCHYARD_FAULT_WATCH_LAG_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        log::warn!("fault injection: every watch response handed on {ms} ms late");
        WATCH_LAG_MS.store(ms, Relaxed);
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
        store.registry_verified(0);
        store.disconnected().await;
        if err != last_error {
            log::warn!("etcd sync: {err}; serving the last table, retrying");
            last_error = err;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Replaces the registry with `services` (etcd's at `revision`) if it differs, through the
/// one table builder.
async fn apply(
    shared: &Arc<Shared>,
    store: &EtcdStore,
    services: Vec<Registration>,
    revision: i64,
) {
    let mut control = shared.control.lock().await;
    store.registry_verified(revision);
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

/// Refresh checks in a row that may wait for the watch before one loads the whole prefix.
const MAX_DEFERRED: u32 = 3;

/// A refresh check that found a difference and waits for the watch: the revision it read,
/// and how many did so in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deferred {
    at: i64,
    count: u32,
}

/// After a refresh check found a difference read at revision `at`: true to look again at the
/// next refresh instead of loading the whole prefix now. A check that read a revision the
/// watch has not reached yet may only be ahead of events on their way (a registration's
/// event reaches fifty replicas over some hundreds of ms on a busy machine, and each replica
/// whose tick fell in between used to load everything, in the middle of the propagation). A
/// difference at a revision the watch has passed is real, since the watch delivers a
/// prefix's events in order; so is one after a check that waited a whole interval for a
/// revision the watch still has not reached (writes outside the prefix move `at` but send no
/// events). Under writes faster than the interval the watch keeps catching up with newer
/// revisions: after `MAX_DEFERRED` such checks in a row, one loads anyway, so a real gap
/// costs at most that many more intervals.
fn defer_load(state: &mut Option<Deferred>, at: i64, watch_seen: i64) -> bool {
    let next = match *state {
        _ if at <= watch_seen => None,
        None => Some(Deferred { at, count: 1 }),
        Some(d) if watch_seen >= d.at && d.count < MAX_DEFERRED => Some(Deferred {
            at,
            count: d.count + 1,
        }),
        Some(_) => None,
    };
    *state = next;
    next.is_some()
}

/// Puts `new` (None: removes it) in place of service `name` in `services`, which is sorted by
/// name with each name once; true when that changed anything.
fn upsert(services: &mut Vec<Registration>, name: &str, new: Option<Registration>) -> bool {
    match (
        services.binary_search_by(|s| s.service.as_str().cmp(name)),
        new,
    ) {
        (Ok(i), Some(r)) if services[i] == r => false,
        (Ok(i), Some(r)) => {
            services[i] = r;
            true
        }
        (Ok(i), None) => {
            services.remove(i);
            true
        }
        (Err(i), Some(r)) => {
            services.insert(i, r);
            true
        }
        (Err(_), None) => false,
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
    apply(shared, store, services, revision).await;
    store.mark_synced(revision);
    *backoff = Duration::from_millis(50);
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let prefix = store.services_prefix();
    let mut stream = match client.watch_prefix(prefix.as_bytes(), revision + 1).await {
        Ok(x) => Responses::new(x),
        Err(e) => return e.to_string(),
    };
    // The highest header revision the watch delivered: every event of the prefix up to it
    // has been received (etcd sends them in order).
    let mut watch_seen = revision;
    let mut deferred = None;
    let mut tick = tokio::time::interval(full_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return "watch closed".into(),
                    Err(e) => return e,
                };
                if resp.canceled || resp.compact_revision > 0 {
                    // Compacted past our revision or cancelled: reload and watch again.
                    return format!("watch cancelled (compact revision {})", resp.compact_revision);
                }
                watch_seen = watch_seen.max(resp.header.as_ref().map_or(0, |h| h.revision));
                if resp.events.is_empty() {
                    continue;
                }
                if drop_this_watch_response() {
                    log::warn!("fault injection: dropped a watch response");
                    store.registry_verified(0);
                    continue;
                }
                // Applied in place under the control lock: copying the whole registry for
                // one event cost as much as the rebuild it was for.
                let mut control = shared.control.lock().await;
                let mut changed = false;
                for ev in &resp.events {
                    let Some(kv) = ev.kv.as_ref() else { continue };
                    // A delete event's kv carries the deletion's revision.
                    let deleted = ev.r#type != EventType::Put as i32;
                    if !mirror.apply(&kv.key, kv.mod_revision, deleted) {
                        continue; // already in what the last full load or check verified
                    }
                    store.registry_applied(kv.mod_revision);
                    let Some(name) = store.name_of(&kv.key) else { continue };
                    let new = if deleted { None } else { store.decode(&kv.key, &kv.value) };
                    changed |= upsert(&mut control.services, &name, new);
                }
                if changed {
                    let t0 = std::time::Instant::now();
                    crate::control::rebuild(shared, &control);
                    // What a fleet's propagation costs per replica (scripts/fleet-scale.sh).
                    log::info!(
                        "etcd sync: registry changed ({} service(s)); table rebuilt in {:.1} ms",
                        control.services.len(),
                        t0.elapsed().as_secs_f64() * 1000.0
                    );
                }
                drop(control);
                store.mark_synced(resp.header.map_or(0, |h| h.revision));
            }
            _ = tick.tick() => {
                if !ALWAYS_FULL.load(Relaxed) {
                    match store.unchanged(&mut mirror).await {
                        Ok(Checked::Same) => {
                            deferred = None;
                            store.mark_synced(mirror.verified());
                            store.registry_verified(mirror.verified());
                            continue;
                        }
                        Ok(Checked::Differs { at }) => {
                            if defer_load(&mut deferred, at, watch_seen) {
                                // A whole interval from now, not a missed tick at once: the
                                // events on their way need the time.
                                tick.reset();
                                log::debug!(
                                    "etcd sync: the refresh check read revision {at}, the watch \
                                     is at {watch_seen}; checking again at the next refresh"
                                );
                                continue;
                            }
                            log::debug!("etcd sync: the refresh check found a difference; loading");
                        }
                        Err(e) => return format!("refresh check: {e}"),
                    }
                }
                match store.load_mirrored().await {
                    Ok((services, m)) => {
                        apply(shared, store, services, m.verified()).await;
                        store.mark_synced(m.verified());
                        mirror = m;
                    }
                    Err(e) => return format!("full refresh: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{defer_load, upsert};
    use crate::registry::{parse_registration, Registration};

    fn reg(name: &str, port: u16) -> Registration {
        let body = format!(
            r#"{{"service": "{name}", "url": "http://127.0.0.1:{port}", "routes": [{{"path": "/{name}/*"}}]}}"#
        );
        parse_registration(body.as_bytes()).unwrap()
    }

    fn names(v: &[Registration]) -> Vec<String> {
        v.iter()
            .map(|r| format!("{} {}", r.service, r.url))
            .collect()
    }

    #[test]
    fn a_check_ahead_of_the_watch_waits_a_passed_one_loads_at_once() {
        let mut d = None;
        assert!(!defer_load(&mut d, 10, 10), "the watch is there: real");
        assert!(!defer_load(&mut d, 9, 10));
        assert_eq!(d, None);
        assert!(defer_load(&mut d, 12, 10), "ahead of the watch: wait");
        assert!(
            !defer_load(&mut d, 13, 11),
            "a whole interval and the watch is still short of 12: real"
        );
        assert_eq!(d, None, "the load starts the count again");
    }

    #[test]
    fn under_steady_writes_a_check_waits_at_most_three_times_in_a_row() {
        let mut d = None;
        // Each time the watch reached what the last check waited for, and a newer write is on
        // its way.
        assert!(defer_load(&mut d, 12, 10));
        assert!(defer_load(&mut d, 14, 12));
        assert!(defer_load(&mut d, 16, 14));
        assert!(!defer_load(&mut d, 18, 16), "the fourth loads");
        assert!(defer_load(&mut d, 20, 18), "and the count starts again");
    }

    #[test]
    fn events_keep_the_registry_sorted_and_report_changes() {
        let mut v = vec![reg("b", 2)];
        assert!(upsert(&mut v, "c", Some(reg("c", 3))));
        assert!(upsert(&mut v, "a", Some(reg("a", 1))));
        assert!(
            !upsert(&mut v, "a", Some(reg("a", 1))),
            "the same registration"
        );
        assert!(upsert(&mut v, "b", Some(reg("b", 9))));
        assert!(!upsert(&mut v, "x", None), "nothing to delete");
        assert_eq!(
            names(&v),
            [
                "a http://127.0.0.1:1",
                "b http://127.0.0.1:9",
                "c http://127.0.0.1:3"
            ]
        );
        assert!(upsert(&mut v, "b", None));
        assert_eq!(names(&v), ["a http://127.0.0.1:1", "c http://127.0.0.1:3"]);
    }
}
