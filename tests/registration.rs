//! Service self-registration end to end: services register on the admin listener, are
//! routed, health-checked, taken out and put back, survive a restart; every refusal rule.
mod support;
use serde_json::{json, Value};
use std::time::Duration;
use support::metrics::{promtool, sample};
use support::*;

const KEYS: &str = r#"
[[api_keys]]
name = "blog-frontend"
key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
permissions = ["comments:read", "comments:write"]

[[api_keys]]
name = "reader"
key = "read-only-secret"
permissions = ["comments:read"]
"#;

/// Fast timings; `extra` goes into [gateway].
fn config(extra_gateway: &str, rest: &str) -> String {
    format!(
        "{}[gateway]\nhealth_check_interval = 0.1\nhealth_check_timeout = 0.5\nmax_consecutive_failures = 3\ndown_check_interval = 0.3\nstop_ping_after_failures = 10\n{extra_gateway}\n{KEYS}\n{rest}",
        listen_section("")
    )
}

fn register(sy: &Switchyard, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(body);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn comments(b: &Backend) -> Value {
    json!({"service": "sagjan", "url": format!("http://{}", b.addr), "health_endpoint": "/health",
           "routes": [{"method": "GET", "path": "/api/comments/*", "permission": "comments:read"},
                      {"method": "POST", "path": "/api/comments/*/reply", "permission": "comments:write"},
                      {"path": "/api/public/*"}]})
}

fn get(sy: &Switchyard, path: &str, key: Option<&str>) -> reqwest::blocking::Response {
    let mut r = client().get(sy.url(path));
    if let Some(k) = key {
        r = r.header("X-API-Key", k);
    }
    r.send().unwrap()
}

fn health(sy: &Switchyard) -> Value {
    client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn service_status(sy: &Switchyard, name: &str) -> String {
    health(sy)["services"][name]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn register_route_and_forward_intact() {
    let b = Backend::start("sagjan");
    let sy = Switchyard::start(&config("", ""));
    let (status, v) = register(&sy, &comments(&b), Some("test"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["service"], "sagjan");
    let r = get(&sy, "/api/comments/abc123?x=1", Some("test"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway"], "switchyard");
    assert!(r.headers()["server-timing"]
        .to_str()
        .unwrap()
        .starts_with("upstream;dur="));
    let v: Value = r.json().unwrap();
    assert_eq!(v["backend"], "sagjan");
    assert_eq!(v["target"], "/api/comments/abc123?x=1");
    assert_eq!(v["headers"]["x-api-key-name"], "blog-frontend");
    assert!(
        v["headers"].get("x-api-key").is_none(),
        "the client's key must not be forwarded"
    );
    // Wildcards as specified: middle star one segment, trailing star one or more.
    let r = client()
        .post(sy.url("/api/comments/abc123/reply"))
        .header("X-API-Key", "test")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["body_len"], 5);
    assert_eq!(get(&sy, "/api/public/a/b/c", None).status(), 200);
    assert_eq!(get(&sy, "/api/public", None).status(), 404);
    // Listed in /internal/services and /health.
    let list: Value = client()
        .get(sy.admin_url("/internal/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        list["services"]["sagjan"]["url"],
        format!("http://{}", b.addr)
    );
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "UP"));
}

#[test]
fn client_keys_401_and_403() {
    let b = Backend::start("sagjan");
    let sy = Switchyard::start(&config("", ""));
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    let r = get(&sy, "/api/comments/x", None);
    assert_eq!(r.status(), 401);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(get(&sy, "/api/comments/x", Some("wrong")).status(), 401);
    assert_eq!(
        get(&sy, "/api/comments/x", Some("read-only-secret")).status(),
        200
    );
    let r = client()
        .post(sy.url("/api/comments/x/reply"))
        .header("X-API-Key", "read-only-secret")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "forbidden");
    assert_eq!(b.hits(), 1, "refused requests never reach the service");
}

#[test]
fn checks_take_a_dead_service_out_and_put_it_back() {
    let b = Backend::start("sagjan");
    let fallback = Backend::start("catch-all");
    let sy = Switchyard::start(&config(
        "",
        &format!("[[targets]]\naddress = \"{}\"\n", fallback.addr),
    ));
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "UP"));
    // Checks run at the configured interval (0.1 s): about 10 in a second, allowing for load.
    let before = b.health_hits();
    std::thread::sleep(Duration::from_secs(1));
    let n = b.health_hits() - before;
    assert!(
        (5..=14).contains(&n),
        "{n} checks in 1 s at a 0.1 s interval"
    );

    b.set_health(500);
    let start = b.health_hits();
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "DOWN"));
    let at_down = b.health_hits() - start;
    assert!(
        (3..=4).contains(&at_down),
        "DOWN after 3 failed checks, saw {at_down}"
    );
    assert_eq!(health(&sy)["status"], "degraded");
    // Its routes answer 503 and never fall through to the catch-all pool.
    let r = get(&sy, "/api/public/x", None);
    assert_eq!(r.status(), 503);
    assert_eq!(fallback.hits(), 0);

    b.set_health(200);
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "UP"));
    assert_eq!(get(&sy, "/api/public/x", None).status(), 200);
    assert!(sy.log_text().contains("is DOWN"));
}

#[test]
fn pinging_stops_after_ten_failures_and_re_registration_restarts_it() {
    let mut b = Backend::start("sagjan");
    let sy = Switchyard::start(
        &config("", "").replace("down_check_interval = 0.3", "down_check_interval = 0.05"),
    );
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    assert!(wait_until(Duration::from_secs(5), || b.health_hits() > 0));
    b.set_health(503);
    let base = b.health_hits();
    assert!(wait_until(Duration::from_secs(10), || sy
        .log_text()
        .contains("checking stops")));
    let failed = b.health_hits() - base;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        b.health_hits() - base,
        failed,
        "no more checks after stopping"
    );
    assert!(
        (10..=11).contains(&failed),
        "stopped after 10 consecutive failures, saw {failed}"
    );
    b.set_health(200);
    b.restart();
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "UP"));
}

#[test]
fn registrations_survive_a_restart_and_re_registering_is_idempotent() {
    let b = Backend::start("sagjan");
    let other = Backend::start("obr");
    let cfg = config("", "");
    let sy = Switchyard::start(&cfg);
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    let obr = json!({"service": "obr", "url": format!("http://{}", other.addr), "routes": [{"path": "/obr/*"}]});
    assert_eq!(register(&sy, &obr, None).0, 200);
    let dir = sy.kill();
    assert!(dir.0.join("switchyard-state.json").exists());
    let sy = Switchyard::start_in(&cfg, &[], dir);
    assert!(sy.log_text().contains("loaded 2 registered service(s)"));
    assert_eq!(
        get(&sy, "/api/public/x", None).json::<Value>().unwrap()["backend"],
        "sagjan"
    );
    assert_eq!(
        get(&sy, "/obr/x", None).json::<Value>().unwrap()["backend"],
        "obr"
    );
    // The service re-registers after the restart: same answer, nothing duplicated.
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    let list: Value = client()
        .get(sy.admin_url("/internal/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["services"].as_object().unwrap().len(), 2);
    assert_eq!(
        list["services"]["sagjan"]["routes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Deregistration.
    let r = client()
        .delete(sy.admin_url("/internal/services/obr"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .delete(sy.admin_url("/internal/services/obr"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(get(&sy, "/obr/x", None).status(), 404);
}

#[test]
fn a_corrupted_store_file_is_moved_aside() {
    let dir = TempDir::new("corrupt");
    std::fs::write(
        dir.0.join("switchyard-state.json"),
        b"{\"version\":1,\"crc32\":1,\"services\":[]}",
    )
    .unwrap();
    let path = dir.0.clone();
    let sy = Switchyard::start_in(&config("", ""), &[], dir);
    assert!(
        sy.log_text().contains("checksum mismatch"),
        "{}",
        sy.log_text()
    );
    let names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains(".corrupt-")), "{names:?}");
    let list: Value = client()
        .get(sy.admin_url("/internal/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["services"], json!({}));
}

#[test]
fn several_services_at_once() {
    let backends: Vec<Backend> = (0..5)
        .map(|i| Backend::start(&format!("svc-{i}")))
        .collect();
    let sy = Switchyard::start(&config("", ""));
    for (i, b) in backends.iter().enumerate() {
        let body = json!({"service": format!("svc-{i}"), "url": format!("http://{}", b.addr), "routes": [{"path": format!("/svc-{i}/*")}]});
        assert_eq!(register(&sy, &body, None).0, 200);
    }
    for i in 0..5 {
        let v: Value = get(&sy, &format!("/svc-{i}/thing"), None).json().unwrap();
        assert_eq!(v["backend"], format!("svc-{i}"));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        let h = health(&sy);
        (0..5).all(|i| h["services"][format!("svc-{i}")]["status"] == "UP")
    }));
    assert_eq!(health(&sy)["status"], "healthy");
}

#[test]
fn every_rejection_rule() {
    let b = Backend::start("sagjan");
    let statics = format!(
        "[[backends]]\nname = \"static\"\naddresses = [\"{}\"]\n[[routes]]\npath = \"/static/*\"\nbackend = \"static\"\n",
        b.addr
    );
    let sy = Switchyard::start(&config("registration_rate_limit = 6", &statics));
    let url = format!("http://{}", b.addr);
    // 400, naming the field.
    let (s, v) = register(
        &sy,
        &json!({"service": "x", "url": "ftp://nope", "routes": []}),
        None,
    );
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().starts_with("url"), "{v}");
    let (s, v) = register(
        &sy,
        &json!({"service": "x", "url": url, "routes": [{"path": "no-slash"}]}),
        None,
    );
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().starts_with("routes[0].path"),
        "{v}"
    );
    // 403: a route's permission needs a key that holds it.
    let (s, _) = register(&sy, &comments(&b), None);
    assert_eq!(s, 403);
    let (s, _) = register(&sy, &comments(&b), Some("read-only-secret"));
    assert_eq!(s, 403);
    // 409: equal to a static route, or to another service's route.
    let (s, v) = register(
        &sy,
        &json!({"service": "x", "url": url, "routes": [{"path": "/static/*"}]}),
        None,
    );
    assert_eq!(s, 409, "{v}");
    let (s, _) = register(
        &sy,
        &json!({"service": "y", "url": url, "routes": [{"path": "/y/*"}]}),
        None,
    );
    assert_eq!(s, 200);
    // That was the 6th attempt from this address in this minute; the 7th is refused.
    let (s, v) = register(
        &sy,
        &json!({"service": "z", "url": url, "routes": [{"path": "/y/*"}]}),
        None,
    );
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"], "rate_limited");
}

#[test]
fn conflict_with_another_service_is_409() {
    let b = Backend::start("a");
    let sy = Switchyard::start(&config("", ""));
    let url = format!("http://{}", b.addr);
    assert_eq!(register(&sy, &json!({"service": "a", "url": url, "routes": [{"method": "GET", "path": "/shared/*"}]}), None).0, 200);
    let (s, v) = register(
        &sy,
        &json!({"service": "b", "url": url, "routes": [{"path": "/shared/*"}]}),
        None,
    );
    assert_eq!(s, 409);
    assert_eq!(v["error"], "conflict");
    // Another method on the same pattern does not clash.
    assert_eq!(register(&sy, &json!({"service": "b", "url": url, "routes": [{"method": "POST", "path": "/shared/*"}]}), None).0, 200);
}

#[test]
fn disallowed_source_and_disabled_gateway() {
    let b = Backend::start("a");
    let body =
        json!({"service": "a", "url": format!("http://{}", b.addr), "routes": [{"path": "/a/*"}]});
    let sy = Switchyard::start(&config(
        "allow_registration_from = \"10.0.0.0/8, 192.168.0.0/16\"",
        "",
    ));
    let (s, v) = register(&sy, &body, None);
    assert_eq!(s, 403);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("allow_registration_from"));
    drop(sy);
    let sy = Switchyard::start(&config("enabled = false", ""));
    assert_eq!(register(&sy, &body, None).0, 404);
}

#[test]
fn registration_metrics_pass_promtool() {
    let b = Backend::start("sagjan");
    let sy = Switchyard::start(&config("", ""));
    assert_eq!(register(&sy, &comments(&b), Some("test")).0, 200);
    assert_eq!(register(&sy, &comments(&b), None).0, 403);
    assert!(wait_until(Duration::from_secs(5), || service_status(
        &sy, "sagjan"
    ) == "UP"));
    let text = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let (ok, msg) = promtool(&text);
    assert!(ok, "{msg}\n{text}");
    assert_eq!(
        sample(&text, "switchyard_registrations_total{result=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "switchyard_registrations_total{result=\"forbidden\"}"
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "switchyard_service_uptime_seconds{service=\"sagjan\"}"
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(sample(&text, "switchyard_ready"), Some(1.0));
}
