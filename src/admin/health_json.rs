//! The `GET /health` document (SPEC §5): overall status, and every checked address with its
//! status, last check, response time, consecutive failures and outlier ejection.
use crate::clock::{rfc3339, rfc3339_ms};
use crate::health::Status;
use crate::state::Shared;
use crate::upstream::Upstream;
use serde_json::{json, Map, Value};

pub fn address_json(u: &Upstream) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!(u.status().as_str()));
    let scheme = if u.tls.is_some() { "https" } else { "http" };
    m.insert("url".into(), json!(format!("{scheme}://{}", u.label)));
    let last = u.health.last_check_ms();
    if last > 0 {
        m.insert("last_ping".into(), json!(rfc3339(last)));
        // Only when the last check succeeded: the time of an older success would read as
        // the current one (SPEC §5 shows none for a DOWN service).
        if u.health.failures() == 0 {
            m.insert(
                "response_time_ms".into(),
                json!(u.health.response_us() / 1000),
            );
        }
    }
    m.insert("consecutive_failures".into(), json!(u.health.failures()));
    m.insert("checked".into(), json!(u.health_endpoint.is_some()));
    if u.health.stopped() {
        m.insert("checks_stopped".into(), json!(true));
    }
    // Passive health (SPEC §11): null while in service; while ejected, until when (a time in
    // the past: the probe request has not come back yet). UP and not ejected takes traffic.
    let until = u.outlier.ejected_until();
    m.insert(
        "ejected_until".into(),
        if until == 0 {
            Value::Null
        } else {
            json!(rfc3339_ms(until))
        },
    );
    m.insert("ejections".into(), json!(u.outlier.ejections()));
    Value::Object(m)
}

pub fn health(shared: &Shared) -> Value {
    let table = shared.dp.table.load();
    let mut all_up = true;
    let mut targets = Map::new();
    if let Some(rule) = &table.catch_all {
        for u in &rule.pool.upstreams {
            all_up &= u.status() == Status::Up;
            targets.insert(u.label.to_string(), address_json(u));
        }
    }
    let mut backends = Map::new();
    for p in table.pools() {
        if table
            .catch_all
            .as_ref()
            .is_some_and(|r| std::sync::Arc::ptr_eq(&r.pool, p))
        {
            continue;
        }
        let mut addrs = Map::new();
        for u in &p.upstreams {
            all_up &= u.status() == Status::Up;
            addrs.insert(u.label.to_string(), address_json(u));
        }
        backends.insert(p.name.clone(), Value::Object(addrs));
    }
    let mut tcp = Map::new();
    for (listen, targets) in shared.l4_view.load().iter() {
        let mut addrs = Map::new();
        for u in targets {
            all_up &= u.status() == Status::Up;
            addrs.insert(u.label.to_string(), address_json(u));
        }
        tcp.insert(listen.clone(), Value::Object(addrs));
    }
    let mut services = Map::new();
    for svc in &table.services {
        all_up &= svc.upstream.status() == Status::Up;
        let mut v = address_json(&svc.upstream);
        v["url"] = json!(svc.url);
        // The hosts its routes are for (SPEC §3 Hosts); none: every host.
        let origin = format!("service {}", svc.name);
        let mut hosts: Vec<&str> = Vec::new();
        for r in table.routes.iter().filter(|r| r.origin == origin) {
            for h in &r.hosts {
                if !hosts.contains(&h.as_str()) {
                    hosts.push(h);
                }
            }
        }
        if !hosts.is_empty() {
            v["hosts"] = json!(hosts);
        }
        services.insert(svc.name.clone(), v);
    }
    // Rules that only match some hosts, in routing order.
    let host_rules: Vec<Value> = table
        .rules()
        .filter(|r| !r.hosts.is_empty())
        .map(|r| {
            json!({
                "kind": r.kind.as_str(),
                "rule": r.label,
                "origin": r.origin,
                "hosts": r.hosts,
            })
        })
        .collect();
    json!({
        "status": if all_up { "healthy" } else { "degraded" },
        "service": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "services": services,
        "store": store_json(shared),
        "targets": targets,
        "backends": backends,
        "tcp": tcp,
        "host_rules": host_rules,
        "certificates": certificates_json(shared),
    })
}

/// Every certificate being served (SPEC §9): hosts, expiry and where it came from.
fn certificates_json(shared: &Shared) -> Value {
    let store = shared.dp.tls.store();
    Value::Array(
        store
            .entries
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("hosts".into(), json!(e.hosts));
                m.insert(
                    "not_after".into(),
                    json!(rfc3339(e.loaded.not_after.max(0) as u64 * 1000)),
                );
                m.insert("source".into(), json!(e.source.as_str()));
                if let Some(f) = &e.file {
                    m.insert("file".into(), json!(f.display().to_string()));
                }
                if e.default {
                    m.insert("default".into(), json!(true));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// `store` in `/health`: what the store reports, plus whether the last write succeeded.
fn store_json(shared: &Shared) -> Value {
    let mut v = shared.store.health();
    let loaded = shared.loaded.load(std::sync::atomic::Ordering::Relaxed);
    let synced = loaded
        && shared
            .store_synced
            .load(std::sync::atomic::Ordering::Relaxed);
    if let Some(m) = v.as_object_mut() {
        m.insert("synced".into(), json!(synced));
    }
    v
}
