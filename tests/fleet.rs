//! The fleet: three switchyard replicas sharing one routing table through a real etcd —
//! readiness, convergence, transactional conflicts, etcd outages and healed missed events.
mod support;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::etcd::Etcd;
use support::*;

fn fleet_config(endpoint: &str, refresh: f64) -> String {
    format!(
        "{}[gateway]\nhealth_check_interval = 0.2\nregistration_rate_limit = 100000\n\n[store]\nkind = \"etcd\"\nendpoints = [\"{endpoint}\"]\nprefix = \"/switchyard/\"\nfull_refresh_interval = {refresh}\n",
        listen_section("access_log = false")
    )
}

fn register(sy: &Switchyard, name: &str, path: &str, b: &Backend) -> (u16, Value) {
    let body =
        json!({"service": name, "url": format!("http://{}", b.addr), "routes": [{"path": path}]});
    let r = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(&body)
        .send()
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn status(sy: &Switchyard, path: &str) -> u16 {
    client()
        .get(sy.url(path))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn ready(sy: &Switchyard) -> u16 {
    client()
        .get(sy.admin_url("/ready"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn replicas(e: &Etcd, n: usize, refresh: f64) -> Vec<Switchyard> {
    let cfg = fleet_config(&e.endpoint(), refresh);
    let r: Vec<Switchyard> = (0..n).map(|_| Switchyard::start(&cfg)).collect();
    for sy in &r {
        assert!(
            wait_until(Duration::from_secs(10), || ready(sy) == 200),
            "replica not ready"
        );
    }
    r
}

/// Waits until `path` answers `want` on every replica; returns the time it took.
fn converge(rs: &[&Switchyard], path: &str, want: u16, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = wait_until(limit, || rs.iter().all(|sy| status(sy, path) == want));
    assert!(
        ok,
        "{path} did not answer {want} on every replica within {limit:?}"
    );
    t0.elapsed()
}

#[test]
fn not_ready_until_the_table_is_loaded() {
    let port = dead_port();
    let mut e = Etcd::on_port_not_started(port);
    let sy = Switchyard::start(&fleet_config(&e.endpoint(), 0.5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ready(&sy), 503);
    let r = client().get(sy.url("/anything")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().unwrap()["error"], "not_ready");
    e.resume();
    assert!(wait_until(Duration::from_secs(10), || ready(&sy) == 200));
    assert_eq!(
        status(&sy, "/anything"),
        404,
        "loaded, nothing registered: 404, not 503"
    );
    let h: Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["store"]["kind"], "etcd");
    assert_eq!(h["store"]["connected"], true);
    assert!(h["store"]["revision"].as_i64().unwrap() >= 1);
    assert!(h["store"]["last_sync"].is_string());
    let text = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let age = support::metrics::sample(&text, "switchyard_store_last_sync_age_seconds");
    assert!(age.is_some_and(|a| a < 5.0), "{text}");
}

#[test]
fn a_registration_reaches_every_replica_within_a_second() {
    let e = Etcd::start();
    let rs = replicas(&e, 3, 1.0);
    let b = Backend::start("svc");
    let (s, v) = register(&rs[0], "svc", "/svc/*", &b);
    assert_eq!(s, 200, "{v}");
    let t = converge(&[&rs[1], &rs[2]], "/svc/x", 200, Duration::from_secs(1));
    println!("registration on replica 1 routed on replicas 2 and 3 after {t:?}");
    let v: Value = client()
        .get(rs[2].url("/svc/x"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["backend"], "svc");
    // Stored as one key per service under the prefix.
    let got = e
        .ctl(&["get", "/switchyard/services/svc", "--print-value-only"])
        .unwrap();
    assert!(got.contains("\"service\":\"svc\""), "{got}");
    // Deregistration likewise.
    let r = client()
        .delete(rs[1].admin_url("/internal/services/svc"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = converge(&[&rs[0], &rs[2]], "/svc/x", 404, Duration::from_secs(1));
    println!("deregistration on replica 2 reached replicas 1 and 3 after {t:?}");
}

#[test]
fn clashing_routes_registered_concurrently_give_one_200_and_one_409() {
    let e = Etcd::start();
    let rs = replicas(&e, 2, 1.0);
    let b = Backend::start("svc");
    for round in 0..5 {
        let path = format!("/clash-{round}/*");
        let (a, bb) = std::thread::scope(|s| {
            let h1 = s.spawn(|| register(&rs[0], &format!("a{round}"), &path, &b).0);
            let h2 = s.spawn(|| register(&rs[1], &format!("b{round}"), &path, &b).0);
            (h1.join().unwrap(), h2.join().unwrap())
        });
        let mut got = [a, bb];
        got.sort();
        assert_eq!(got, [200, 409], "round {round}");
    }
}

#[test]
fn etcd_outage_keeps_routing_refuses_registrations_and_resyncs() {
    let mut e = Etcd::start();
    let rs = replicas(&e, 3, 0.5);
    let b = Backend::start("svc");
    assert_eq!(register(&rs[0], "before", "/before/*", &b).0, 200);
    converge(
        &[&rs[0], &rs[1], &rs[2]],
        "/before/x",
        200,
        Duration::from_secs(2),
    );
    e.stop();
    std::thread::sleep(Duration::from_millis(600));
    for sy in &rs {
        assert_eq!(status(sy, "/before/x"), 200, "the last table keeps serving");
    }
    let (s, v) = register(&rs[1], "during", "/during/*", &b);
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"], "store_unavailable");
    let h: Value = client()
        .get(rs[0].admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let h: Value = client()
                .get(rs[0].admin_url("/health"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            h["store"]["connected"] == false
        }),
        "{h}"
    );
    e.resume();
    // Written while the replicas were cut off, by someone else: it appears everywhere.
    let reg = json!({"service": "elsewhere", "url": format!("http://{}", b.addr), "health_endpoint": "/health", "routes": [{"path": "/elsewhere/*"}]});
    e.ctl(&["put", "/switchyard/services/elsewhere", &reg.to_string()])
        .unwrap();
    converge(
        &[&rs[0], &rs[1], &rs[2]],
        "/elsewhere/x",
        200,
        Duration::from_secs(10),
    );
    assert_eq!(register(&rs[2], "after", "/after/*", &b).0, 200);
    converge(&[&rs[0], &rs[1]], "/after/x", 200, Duration::from_secs(2));
}

#[test]
fn a_dropped_watch_event_is_healed_by_the_full_refresh() {
    let e = Etcd::start();
    let cfg = fleet_config(&e.endpoint(), 0.5);
    let deaf = Switchyard::start_with(&cfg, &[("SWITCHYARD_FAULT_DROP_WATCH_EVENTS", "1000")]);
    assert!(wait_until(Duration::from_secs(10), || ready(&deaf) == 200));
    let b = Backend::start("svc");
    let reg = json!({"service": "missed", "url": format!("http://{}", b.addr), "routes": [{"path": "/missed/*"}]});
    e.ctl(&["put", "/switchyard/services/missed", &reg.to_string()])
        .unwrap();
    let t = converge(&[&deaf], "/missed/x", 200, Duration::from_secs(3));
    assert!(deaf
        .log_text()
        .contains("fault injection: dropped a watch response"));
    println!("missed event healed by the full refresh after {t:?}");
}

fn metric(sy: &Switchyard, series: &str) -> f64 {
    let text = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    support::metrics::sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn put_service(e: &Etcd, name: &str, routes: &[String], b: &Backend) -> usize {
    let routes: Vec<Value> = routes.iter().map(|p| json!({ "path": p })).collect();
    let reg =
        json!({"service": name, "url": format!("http://{}", b.addr), "routes": routes}).to_string();
    e.ctl(&["put", &format!("/switchyard/services/{name}"), &reg])
        .unwrap();
    reg.len()
}

#[test]
fn at_rest_the_periodic_refresh_reads_no_table() {
    let e = Etcd::start();
    let b = Backend::start("svc");
    // 40 services with 10 routes each: one whole-table read is ~15 KB on etcd's wire.
    let mut table_bytes = 0;
    for i in 0..40 {
        let routes: Vec<String> = (0..10).map(|j| format!("/rest-{i}/r{j}/*")).collect();
        table_bytes += put_service(&e, &format!("rest-{i}"), &routes, &b);
    }
    let rs = replicas(&e, 2, 0.2);
    converge(
        &[&rs[0], &rs[1]],
        "/rest-39/r9/x",
        200,
        Duration::from_secs(3),
    );
    let loads = |sy| metric(sy, "switchyard_store_full_loads_total");
    let checks = |sy| metric(sy, "switchyard_store_refresh_checks_total");
    let before: Vec<(f64, f64)> = rs.iter().map(|sy| (loads(sy), checks(sy))).collect();
    let bytes0 = e.grpc_sent_bytes();
    // Writes outside the prefix move etcd's (cluster-wide) revision: the index-only first step
    // cannot settle those refreshes, the keys-only second step must, still without a load.
    for i in 0..3 {
        e.ctl(&["put", "/unrelated/key", &i.to_string()]).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let bytes = e.grpc_sent_bytes() - bytes0;
    for (sy, (l0, c0)) in rs.iter().zip(before) {
        let (l1, c1) = (loads(sy), checks(sy));
        // ~15 refreshes each in 3 s; a loaded machine may delay some.
        assert!(c1 - c0 >= 5.0, "the refresh did not run: {c0} -> {c1}");
        assert_eq!(
            l1, l0,
            "a refresh read the whole table with nothing changed"
        );
    }
    // etcd's own count: ~30 refreshes sent less than one whole table (the old refresh sent 30).
    assert!(
        bytes < table_bytes as f64,
        "etcd sent {bytes} bytes at rest; one table is {table_bytes}"
    );
    println!(
        "at rest: etcd sent {bytes} bytes to 2 replicas in 3 s (one table: {table_bytes} bytes)"
    );
    // And a change is still picked up by the watch, without a full read.
    let l0 = loads(&rs[1]);
    put_service(&e, "late", &["/late/*".to_string()], &b);
    converge(&[&rs[0], &rs[1]], "/late/x", 200, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        loads(&rs[1]),
        l0,
        "an event the watch applied made a refresh read everything"
    );
}

#[test]
fn a_missed_update_is_healed_even_after_later_events_arrive() {
    // The case a count + highest-revision check misses: key a's update is lost, key z's later
    // creation is applied; both figures then agree with etcd while the table is stale.
    let e = Etcd::start();
    let b = Backend::start("svc");
    put_service(&e, "a", &["/a-old/*".to_string()], &b);
    let cfg = fleet_config(&e.endpoint(), 1.0);
    let deaf = Switchyard::start_with(&cfg, &[("SWITCHYARD_FAULT_DROP_WATCH_EVENTS", "1")]);
    assert!(wait_until(Duration::from_secs(10), || ready(&deaf) == 200));
    converge(&[&deaf], "/a-old/x", 200, Duration::from_secs(2));
    let loads0 = metric(&deaf, "switchyard_store_full_loads_total");
    put_service(&e, "a", &["/a-new/*".to_string()], &b);
    assert!(deaf.wait_log(
        "fault injection: dropped a watch response",
        Duration::from_secs(2)
    ));
    put_service(&e, "z", &["/z/*".to_string()], &b);
    converge(&[&deaf], "/a-new/x", 200, Duration::from_secs(4));
    converge(&[&deaf], "/z/x", 200, Duration::from_secs(1));
    assert_eq!(status(&deaf, "/a-old/x"), 404);
    assert!(metric(&deaf, "switchyard_store_full_loads_total") > loads0);
}

#[test]
fn a_registration_at_rest_reads_no_table() {
    // The registry was verified by a refresh: the registration checks it and guards its write
    // instead of reading the whole prefix first, which every other replica's event waits for.
    let e = Etcd::start();
    let b = Backend::start("svc");
    for i in 0..20 {
        put_service(&e, &format!("rest-{i}"), &[format!("/rest-{i}/*")], &b);
    }
    let rs = replicas(&e, 2, 0.2);
    converge(&[&rs[0], &rs[1]], "/rest-19/x", 200, Duration::from_secs(3));
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(600)); // a refresh check or more
        let loads0 = metric(&rs[0], "switchyard_store_full_loads_total");
        let name = format!("quick-{round}");
        let (s, v) = register(&rs[0], &name, &format!("/{name}/*"), &b);
        assert_eq!(s, 200, "{v}");
        converge(
            &[&rs[1]],
            &format!("/{name}/x"),
            200,
            Duration::from_secs(2),
        );
        assert_eq!(
            metric(&rs[0], "switchyard_store_full_loads_total"),
            loads0,
            "round {round}: the registration read the whole prefix"
        );
    }
    // Still a conflict with what another replica registered is refused.
    let (s, _) = register(&rs[1], "thief", "/quick-0/*", &b);
    assert_eq!(s, 409);
}

#[test]
fn a_registration_racing_an_event_it_has_not_seen_is_refused() {
    // Replica 1's watch lags 1.5 s and its refresh waits 30 s: it registers against a registry
    // that it believes verified but that misses replica 0's registration of the same route.
    // The guard of its write sees the newer key, and the full read then finds the conflict.
    let e = Etcd::start();
    let b = Backend::start("svc");
    let quick = Switchyard::start(&fleet_config(&e.endpoint(), 30.0));
    let late = Switchyard::start_with(
        &fleet_config(&e.endpoint(), 30.0),
        &[("SWITCHYARD_FAULT_WATCH_LAG_MS", "1500")],
    );
    for sy in [&quick, &late] {
        assert!(wait_until(Duration::from_secs(10), || ready(sy) == 200));
    }
    for round in 0..3 {
        let path = format!("/race-{round}/*");
        let (s, v) = register(&quick, &format!("first-{round}"), &path, &b);
        assert_eq!(s, 200, "{v}");
        let (s, v) = register(&late, &format!("second-{round}"), &path, &b);
        assert_eq!(s, 409, "round {round}: a clashing route was stored: {v}");
        // Past the lag: the late replica has the event, and routes it to the first service.
        converge(
            &[&late],
            &format!("/race-{round}/x"),
            200,
            Duration::from_secs(3),
        );
    }
    assert!(late
        .log_text()
        .contains("fault injection: every watch response"));
}

#[test]
fn a_refresh_check_ahead_of_the_watch_waits_for_it_instead_of_loading() {
    // The watch lags 250 ms, the refresh runs every 400 ms: most writes have a check read etcd
    // before their event arrives. That check looks again at the next refresh, by when the
    // event is in, instead of reading the whole prefix (which fifty replicas did at once in
    // scripts/fleet-scale.sh, during the propagation they were part of).
    let e = Etcd::start();
    let b = Backend::start("svc");
    let sy = Switchyard::start_with(
        &fleet_config(&e.endpoint(), 0.4),
        &[
            ("SWITCHYARD_FAULT_WATCH_LAG_MS", "250"),
            ("RUST_LOG", "switchyard::fleet=debug,info"),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || ready(&sy) == 200));
    std::thread::sleep(Duration::from_millis(500));
    let loads0 = metric(&sy, "switchyard_store_full_loads_total");
    let checks0 = metric(&sy, "switchyard_store_refresh_checks_total");
    for i in 0..8 {
        put_service(&e, &format!("lag-{i}"), &[format!("/lag-{i}/*")], &b);
        converge(&[&sy], &format!("/lag-{i}/x"), 200, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(330));
    }
    std::thread::sleep(Duration::from_millis(900));
    assert!(metric(&sy, "switchyard_store_refresh_checks_total") - checks0 >= 8.0);
    assert_eq!(
        metric(&sy, "switchyard_store_full_loads_total"),
        loads0,
        "a check that ran ahead of the watch read the whole prefix; its log:\n{}",
        sy.log_text()
    );
}

#[test]
fn garbage_in_etcd_is_ignored_not_fatal() {
    let e = Etcd::start();
    let rs = replicas(&e, 1, 0.5);
    e.ctl(&["put", "/switchyard/services/bad", "{not json"])
        .unwrap();
    let b = Backend::start("svc");
    assert_eq!(register(&rs[0], "good", "/good/*", &b).0, 200);
    converge(&[&rs[0]], "/good/x", 200, Duration::from_secs(2));
    assert!(rs[0].wait_log("invalid registration", Duration::from_secs(3)));
}

/// The convergence benchmark (scripts/fleet-convergence.sh): 100 registrations spread over 3
/// replicas; for each, the time until every replica routes it. Prints p50/p99/max.
#[test]
#[ignore]
fn convergence_figures() {
    let e = Etcd::start();
    let rs = replicas(&e, 3, 1.0);
    let b = Backend::start("svc");
    let mut times = Vec::new();
    for i in 0..100 {
        let path = format!("/conv-{i}/*");
        let probe = format!("/conv-{i}/x");
        let t0 = Instant::now();
        assert_eq!(register(&rs[i % 3], &format!("conv-{i}"), &path, &b).0, 200);
        let ok = wait_until(Duration::from_secs(5), || {
            rs.iter().all(|sy| status(sy, &probe) == 200)
        });
        assert!(ok);
        times.push(t0.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fleet convergence, 3 replicas, 100 registrations (time from POST until all replicas route): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(times[49]),
        ms(times[98]),
        ms(times[99])
    );
}
