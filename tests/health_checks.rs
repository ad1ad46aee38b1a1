//! Active health checks end to end (SPEC §6): the real binary with fast `[gateway]` timings,
//! hyper backends that count the checks they receive and flip their `/health` status.
//!
//! Counts are exact where the protocol makes them so (a backend that fails from its first check
//! turns DOWN at exactly `fall` checks); where a status flip races a check in flight, or sleeps
//! stretch on a loaded machine, the assertions carry a tolerance and say why.
mod support;
use serde_json::Value;
use std::time::Duration;
use support::*;

fn health(sy: &Switchyard) -> Value {
    client()
        .get(sy.admin_url("/health"))
        .send()
        .expect("GET /health")
        .json()
        .expect("/health is JSON")
}

/// The `/health` entry of an address, wherever it is listed (targets or a named pool).
fn entry(v: &Value, addr: &str) -> Value {
    if let Some(e) = v["targets"].get(addr) {
        return e.clone();
    }
    if let Some(pools) = v["backends"].as_object() {
        for p in pools.values() {
            if let Some(e) = p.get(addr) {
                return e.clone();
            }
        }
    }
    Value::Null
}

fn status_of_addr(sy: &Switchyard, addr: &str) -> String {
    entry(&health(sy), addr)["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until `addr` has `want` status; panics with the /health document and log if not.
fn wait_status(sy: &Switchyard, addr: &str, want: &str, timeout: Duration) {
    if !wait_until(timeout, || status_of_addr(sy, addr) == want) {
        panic!(
            "{addr} did not become {want} within {timeout:?}: {:#}\n{}",
            health(sy),
            sy.log_text()
        );
    }
}

fn gateway(interval: f64, down: f64, fall: u32, stop: u32, timeout: f64) -> String {
    format!(
        "[gateway]\nhealth_check_interval = {interval}\ndown_check_interval = {down}\n\
         max_consecutive_failures = {fall}\nstop_ping_after_failures = {stop}\n\
         health_check_timeout = {timeout}\n\n"
    )
}

fn target(b: &Backend, endpoint: &str) -> String {
    format!(
        "[[targets]]\naddress = \"{}\"\nhealth_check_endpoint = \"{endpoint}\"\n\n",
        b.address()
    )
}

/// Sends `n` requests to the catch-all pool; returns which backend answered each.
fn spread(sy: &Switchyard, n: usize) -> Vec<String> {
    let c = client();
    (0..n)
        .map(|i| {
            let r = c.get(sy.url(&format!("/spread/{i}"))).send().unwrap();
            assert_eq!(r.status(), 200, "request {i}");
            let v: Value = r.json().unwrap();
            v["backend"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[test]
fn down_after_exactly_fall_failed_checks_then_slower_cadence() {
    let b = Backend::start("sick");
    b.set_health(500);
    // A long down interval keeps a DOWN check from landing between "DOWN seen" and the count.
    let cfg = format!(
        "{}{}{}",
        listen_section(""),
        gateway(0.1, 3.0, 3, 100, 1.0),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &b.address(), "DOWN", Duration::from_secs(10));
    // Failing from the first check: UNKNOWN for checks 1 and 2, DOWN at check 3 exactly.
    assert_eq!(b.health_hits(), 3, "DOWN at max_consecutive_failures");
    let e = entry(&health(&sy), &b.address());
    assert_eq!(e["consecutive_failures"], 3);
    assert!(sy.wait_log("is DOWN after 3 failed checks", Duration::from_secs(5)));
    // While DOWN, checks come every down_check_interval (3 s), not every 0.1 s: within 1 s
    // at most the one that may already be due.
    let before = b.health_hits();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        b.health_hits() - before <= 1,
        "DOWN is checked at the slow cadence"
    );
}

#[test]
fn up_to_down_counts_and_down_interval_cadence() {
    let b = Backend::start("flaky");
    let cfg = format!(
        "{}{}{}",
        listen_section(""),
        gateway(0.1, 0.5, 3, 1000, 1.0),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &b.address(), "UP", Duration::from_secs(10));
    b.set_health(500);
    let flipped_at = b.health_hits();
    wait_status(&sy, &b.address(), "DOWN", Duration::from_secs(10));
    let at_down = b.health_hits();
    // A check answered between the flip and the read of the counter already failed but is not
    // in the difference: 2 or 3 checks after the flip, never more.
    let after_flip = at_down - flipped_at;
    assert!(
        (2..=3).contains(&after_flip),
        "DOWN after max_consecutive_failures = 3 failed checks, saw {after_flip}"
    );
    assert_eq!(entry(&health(&sy), &b.address())["consecutive_failures"], 3);

    // DOWN: every 0.5 s. In 2 s that is at most 2 / 0.5 + 1 checks (sleeps only stretch on a
    // loaded machine, so the bound from above is safe); at the UP cadence it would be ~20.
    let start = b.health_hits();
    std::thread::sleep(Duration::from_secs(2));
    let n = b.health_hits() - start;
    assert!((1..=5).contains(&n), "{n} checks in 2 s while DOWN");
}

#[test]
fn checking_stops_after_stop_ping_after_failures() {
    let b = Backend::start("gone");
    b.set_health(503);
    let cfg = format!(
        "{}{}{}",
        listen_section(""),
        gateway(0.1, 0.1, 2, 5, 1.0),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    assert!(
        wait_until(Duration::from_secs(10), || {
            entry(&health(&sy), &b.address())["checks_stopped"] == true
        }),
        "checking never stopped: {:#}",
        health(&sy)
    );
    assert_eq!(
        b.health_hits(),
        5,
        "exactly stop_ping_after_failures checks"
    );
    // Ten intervals later, still no more checks, and the address stays DOWN.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.health_hits(), 5, "no check after stopping");
    assert_eq!(status_of_addr(&sy, &b.address()), "DOWN");
    assert!(sy.wait_log("checking stops", Duration::from_secs(5)));
}

#[test]
fn one_success_brings_a_down_address_back() {
    let b = Backend::start("phoenix");
    b.set_health(500);
    let cfg = format!(
        "{}{}{}",
        listen_section(""),
        gateway(0.1, 0.2, 2, 1000, 1.0),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &b.address(), "DOWN", Duration::from_secs(10));
    b.set_health(200);
    let flipped_at = b.health_hits();
    wait_status(&sy, &b.address(), "UP", Duration::from_secs(10));
    // rise = 1: the first successful check (counted before or after the read of the counter,
    // hence 0 or 1) brings it UP.
    assert!(
        b.health_hits() - flipped_at <= 1,
        "UP after a single success, saw {} checks",
        b.health_hits() - flipped_at
    );
    let e = entry(&health(&sy), &b.address());
    assert_eq!(e["consecutive_failures"], 0);
    assert!(e["response_time_ms"].is_u64());
    assert!(sy.wait_log("is UP (was DOWN)", Duration::from_secs(5)));
    // Back at the normal cadence: several checks within 1 s (0.1 s interval).
    let start = b.health_hits();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        b.health_hits() - start >= 3,
        "normal interval after recovery"
    );
}

#[test]
fn traffic_leaves_a_down_address_and_returns_when_up() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let cfg = format!(
        "{}{}{}{}",
        listen_section(""),
        gateway(0.1, 0.2, 2, 1000, 1.0),
        target(&a, "/health"),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &a.address(), "UP", Duration::from_secs(10));
    wait_status(&sy, &b.address(), "UP", Duration::from_secs(10));
    let both = spread(&sy, 10);
    assert!(both.iter().any(|x| x == "a") && both.iter().any(|x| x == "b"));

    a.set_health(500);
    wait_status(&sy, &a.address(), "DOWN", Duration::from_secs(10));
    let hits_a = a.hits();
    let only_b = spread(&sy, 10);
    assert!(only_b.iter().all(|x| x == "b"), "{only_b:?}");
    assert_eq!(a.hits(), hits_a, "a DOWN address gets no traffic");

    a.set_health(200);
    wait_status(&sy, &a.address(), "UP", Duration::from_secs(10));
    let back = spread(&sy, 10);
    let to_a = back.iter().filter(|x| *x == "a").count();
    assert!(
        (4..=6).contains(&to_a),
        "round robin again over both: {back:?}"
    );
}

#[test]
fn a_stopped_backend_goes_down_and_comes_back_after_restart() {
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    let cfg = format!(
        "{}{}{}{}",
        listen_section(""),
        gateway(0.1, 0.2, 2, 1000, 1.0),
        target(&a, "/health"),
        target(&b, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &a.address(), "UP", Duration::from_secs(10));
    a.stop();
    wait_status(&sy, &a.address(), "DOWN", Duration::from_secs(10));
    assert!(spread(&sy, 6).iter().all(|x| x == "b"));
    a.restart();
    wait_status(&sy, &a.address(), "UP", Duration::from_secs(10));
    assert!(spread(&sy, 6).iter().any(|x| x == "a"));
}

#[test]
fn unknown_takes_traffic_only_while_nothing_is_up_down_never_503_when_none() {
    let a = Backend::start("a");
    let mut u = Backend::start("u");
    // u's check hangs (its endpoint sleeps past the test) so it stays UNKNOWN: no check result.
    let cfg = format!(
        "{}{}{}{}",
        listen_section(""),
        gateway(0.1, 0.2, 2, 1000, 20.0),
        target(&a, "/health"),
        target(&u, "/sleep/60000")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &a.address(), "UP", Duration::from_secs(10));
    assert_eq!(status_of_addr(&sy, &u.address()), "UNKNOWN");
    let served = |b: &Backend| {
        b.stats
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.1.starts_with("/spread/"))
            .count()
    };

    // An UP address in the pool: UNKNOWN gets nothing.
    assert!(spread(&sy, 6).iter().all(|x| x == "a"));
    assert_eq!(served(&u), 0);

    // Nothing UP (a is DOWN): the UNKNOWN one takes the traffic; the DOWN one never does.
    a.set_health(500);
    wait_status(&sy, &a.address(), "DOWN", Duration::from_secs(10));
    assert_eq!(status_of_addr(&sy, &u.address()), "UNKNOWN");
    let before_a = served(&a);
    assert!(spread(&sy, 4).iter().all(|x| x == "u"));
    assert_eq!(served(&u), 4);
    assert_eq!(served(&a), before_a);

    // u fails its checks too: all DOWN, so 503 without trying anyone. Keep-alive stays usable.
    u.stop();
    wait_status(&sy, &u.address(), "DOWN", Duration::from_secs(10));
    let c = client();
    for _ in 0..2 {
        let r = c.get(sy.url("/spread/x")).send().unwrap();
        assert_eq!(r.status(), 503);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"], "service_unavailable");
    }
    let m = c
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("switchyard_requests_total{route=\"catch-all\",backend=\"-\",code=\"503\"} 2\n"),
        "each 503 counted once under its rule:\n{m}"
    );
}

#[test]
fn health_and_ready_documents() {
    let up = Backend::start("up");
    let down = Backend::start("down");
    down.set_health(500);
    let cfg = format!(
        "{}{}{}{}",
        listen_section(""),
        gateway(0.1, 0.2, 2, 1000, 1.0),
        target(&up, "/health"),
        target(&down, "/health")
    );
    let sy = Switchyard::start(&cfg);
    wait_status(&sy, &up.address(), "UP", Duration::from_secs(10));
    wait_status(&sy, &down.address(), "DOWN", Duration::from_secs(10));

    let r = client().get(sy.admin_url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().unwrap();
    assert_eq!(v["status"], "degraded", "not everything is UP");
    assert_eq!(v["service"], "switchyard");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["services"].is_object());
    let t = &v["targets"][up.address()];
    assert_eq!(t["status"], "UP");
    assert_eq!(t["url"], format!("http://{}", up.address()));
    let ping = t["last_ping"].as_str().unwrap();
    assert!(
        ping.len() == 20 && ping.ends_with('Z') && &ping[10..11] == "T",
        "RFC 3339 UTC: {ping}"
    );
    assert!(t["response_time_ms"].is_u64());
    assert_eq!(t["consecutive_failures"], 0);
    let d = &v["targets"][down.address()];
    assert_eq!(d["status"], "DOWN");
    assert!(d["last_ping"].is_string());
    assert!(d["consecutive_failures"].as_u64().unwrap() >= 2);
    assert!(
        d.get("response_time_ms").is_none(),
        "no response time for a failing check (as in SPEC §5)"
    );

    down.set_health(200);
    wait_status(&sy, &down.address(), "UP", Duration::from_secs(10));
    assert_eq!(health(&sy)["status"], "healthy");

    let r = client().get(sy.admin_url("/ready")).send().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["ready"], true);
}
