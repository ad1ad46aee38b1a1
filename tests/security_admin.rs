//! The control plane under attack (issue 12): registration urls that loop back into
//! switchyard or reach SSRF targets, keyless takeover of registrations, the admin listener
//! starved by idle connections, file-descriptor exhaustion, and the small validation gaps.
//! Everything over real sockets against the real binary.
mod support;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

const KEYS: &str = r#"
[[api_keys]]
name = "ops"
key = "ops-secret"
permissions = ["admin", "comments:read", "comments:write", "registry:write"]

[[api_keys]]
name = "reader"
key = "read-only-secret"
permissions = ["comments:read"]

[[api_keys]]
name = "registrar"
key = "registrar-secret"
permissions = ["registry:write"]
"#;

/// Fast health checks; `gateway` goes into [gateway], `rest` after the keys.
fn config(gateway: &str, rest: &str) -> String {
    format!(
        "{}[gateway]\nhealth_check_interval = 0.1\nhealth_check_timeout = 0.5\nmax_consecutive_failures = 2\ndown_check_interval = 0.3\nstop_ping_after_failures = 10\n{gateway}\n{KEYS}\n{rest}",
        listen_section("")
    )
}

fn post(sy: &Switchyard, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(body);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn delete(sy: &Switchyard, name: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client().delete(sy.admin_url(&format!("/internal/services/{name}")));
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn services(sy: &Switchyard) -> Value {
    client()
        .get(sy.admin_url("/internal/services"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["services"]
        .clone()
}

fn service(name: &str, url: &str, routes: Value) -> Value {
    json!({"service": name, "url": url, "health_endpoint": "/health", "routes": routes})
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or("").to_string()
}

fn addr_in_log(log: &str, prefix: &str) -> SocketAddr {
    let i = log.find(prefix).expect(prefix) + prefix.len();
    let rest = &log[i..];
    rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())]
        .parse()
        .unwrap()
}

/// Item 1: a url that resolves to one of switchyard's own listeners is a 400 naming `url`
/// (the issue's attack: the admin API re-exposed on the data port).
#[test]
fn registration_urls_that_reach_our_own_listeners_are_refused() {
    let b = Backend::start("app");
    let sy = Switchyard::start(&config(
        "",
        "[[tcp]]\nlisten = \"127.0.0.1:0\"\ntargets = [\"127.0.0.1:1\"]\n",
    ));
    assert!(sy.wait_log("tcp listener on ", Duration::from_secs(5)));
    let tcp = addr_in_log(&sy.log_text(), "tcp listener on ");
    let own = [
        (format!("http://{}", sy.admin), "admin"),
        (format!("http://{}", sy.http), "data"),
        (format!("http://{tcp}"), "tcp"),
        (format!("http://localhost:{}", sy.admin.port()), "admin"),
        (
            format!("http://[::ffff:127.0.0.1]:{}", sy.admin.port()),
            "admin",
        ),
    ];
    for (url, role) in &own {
        let (status, v) = post(
            &sy,
            &service("loop", url, json!([{"path": "/internal/*"}])),
            None,
        );
        assert_eq!(status, 400, "{url}: {v}");
        assert!(message(&v).starts_with("url:"), "{url}: {v}");
        assert!(message(&v).contains(role), "{url}: {v}");
    }
    // Nothing was registered: the admin API is not reachable through the data port.
    assert_eq!(services(&sy), json!({}));
    let r = client()
        .post(sy.url("/internal/register-service"))
        .json(&service(
            "x",
            &format!("http://{}", b.addr),
            json!([{"path": "/x"}]),
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // Another port on loopback is an ordinary backend.
    let (status, v) = post(
        &sy,
        &service(
            "app",
            &format!("http://{}", b.addr),
            json!([{"path": "/app/*"}]),
        ),
        None,
    );
    assert_eq!(status, 200, "{v}");
}

/// Item 1, wildcard listener: with the data port on 0.0.0.0, every local address is ours —
/// the whole loopback range and the host's interface addresses.
#[test]
fn a_wildcard_listener_is_reached_through_every_local_address() {
    let sy = Switchyard::start(&config("", "").replace(
        "[server]\nlisten = \"127.0.0.1:0\"",
        "[server]\nlisten = \"0.0.0.0:0\"",
    ));
    let port = sy.http.port();
    let mut urls = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://127.3.4.5:{port}"),
        format!("http://localhost:{port}"),
    ];
    // A non-loopback interface address, where the host has one.
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        if let Some(ip) = ifs
            .filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in().map(|v4| v4.ip())))
            .find(|ip| !ip.is_loopback())
        {
            urls.push(format!("http://{ip}:{port}"));
        }
    }
    for url in &urls {
        let (status, v) = post(&sy, &service("loop", url, json!([{"path": "/l/*"}])), None);
        assert_eq!(status, 400, "{url}: {v}");
        assert!(
            message(&v).starts_with("url:") && message(&v).contains("data"),
            "{url}: {v}"
        );
    }
    // A different port on the same addresses is somebody else.
    let (status, v) = post(
        &sy,
        &service(
            "other",
            &format!("http://127.3.4.5:{}", dead_port()),
            json!([{"path": "/o/*"}]),
        ),
        None,
    );
    assert_eq!(status, 200, "{v}");
}

/// Item 2: replacing or deleting a service needs every permission its routes carry; a more
/// specific (or equal) route than a guarded one must carry the guard; the issue's keyless
/// takeovers all fail and change nothing.
#[test]
fn registrations_cannot_be_taken_over_without_the_keys() {
    let app = Backend::start("app");
    let evil = Backend::start("evil");
    let rest = format!(
        "[[backends]]\nname = \"admin-app\"\naddresses = [\"{}\"]\n\n[[routes]]\npath = \"/admin/*\"\nbackend = \"admin-app\"\npermission = \"admin\"\n",
        app.addr
    );
    let sy = Switchyard::start(&config("", &rest));
    let app_url = format!("http://{}", app.addr);
    let evil_url = format!("http://{}", evil.addr);
    let guarded = json!([{"method": "GET", "path": "/api/comments/*", "permission": "comments:read"},
                         {"method": "POST", "path": "/api/comments/*/reply", "permission": "comments:write"}]);
    let (status, v) = post(
        &sy,
        &service("sagjan", &app_url, guarded.clone()),
        Some("ops-secret"),
    );
    assert_eq!(status, 200, "{v}");

    // Keyless re-registration that would drop the permissions and point elsewhere.
    let open = json!([{"path": "/api/comments/*"}]);
    let (status, v) = post(&sy, &service("sagjan", &evil_url, open.clone()), None);
    assert_eq!(status, 403, "{v}");
    assert!(message(&v).contains("comments:read"), "{v}");
    // A key holding only some of the permissions is not enough either.
    let (status, v) = post(
        &sy,
        &service("sagjan", &evil_url, open),
        Some("read-only-secret"),
    );
    assert_eq!(status, 403, "{v}");
    assert!(message(&v).contains("comments:write"), "{v}");
    // Keyless delete.
    let (status, v) = delete(&sy, "sagjan", None);
    assert_eq!(status, 403, "{v}");
    assert_eq!(services(&sy)["sagjan"]["url"], app_url.as_str());

    // A more specific route than the guarded static /admin/*, without the permission.
    for (path, perm) in [
        ("/admin/secret/*", None),
        ("/admin/secret", None),
        ("/admin/*", None),
        ("/admin/secret/*", Some("comments:read")),
    ] {
        let mut route = json!({"path": path});
        if let Some(p) = perm {
            route["permission"] = json!(p);
        }
        let (status, v) = post(
            &sy,
            &service("sneak", &evil_url, json!([route])),
            Some("ops-secret"),
        );
        assert_eq!(status, 403, "{path} {perm:?}: {v}");
        assert!(message(&v).contains("admin"), "{v}");
    }
    // ... and more specific than another service's guarded route.
    let (status, v) = post(
        &sy,
        &service("sneak", &evil_url, json!([{"path": "/api/comments/x"}])),
        None,
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(evil.hits(), 0);
    let r = client().get(sy.url("/admin/secret/x")).send().unwrap();
    assert_eq!(r.status(), 401, "the static guard still holds");
    let r = client().get(sy.url("/api/comments/x")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(evil.hits(), 0, "nothing reached the attacker's backend");

    // With the permission on the route (and a key that holds it), the same route is fine, and
    // still guarded on the data port.
    let (status, v) = post(
        &sy,
        &service(
            "secret",
            &evil_url,
            json!([{"path": "/admin/secret/*", "permission": "admin"}]),
        ),
        Some("ops-secret"),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        client()
            .get(sy.url("/admin/secret/x"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = client()
        .get(sy.url("/admin/secret/x"))
        .header("X-API-Key", "ops-secret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["backend"], "evil");

    // The owner's key replaces and deletes.
    let (status, v) = post(
        &sy,
        &service("sagjan", &app_url, guarded),
        Some("ops-secret"),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = delete(&sy, "sagjan", Some("ops-secret"));
    assert_eq!(status, 200, "{v}");
    assert!(services(&sy).get("sagjan").is_none());
    // Unguarded services stay keyless, as before (SPEC §5: re-registration after a restart).
    let (status, _) = post(
        &sy,
        &service("pub", &app_url, json!([{"path": "/pub/*"}])),
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = post(
        &sy,
        &service("pub", &app_url, json!([{"path": "/pub2/*"}])),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(delete(&sy, "pub", None).0, 200);
}

/// Item 2: `registration_permission` makes every registration and deregistration need it.
#[test]
fn registration_permission_guards_every_change() {
    let app = Backend::start("app");
    let sy = Switchyard::start(&config("registration_permission = \"registry:write\"", ""));
    let body = service(
        "svc",
        &format!("http://{}", app.addr),
        json!([{"path": "/svc/*"}]),
    );
    for key in [None, Some("read-only-secret"), Some("wrong")] {
        let (status, v) = post(&sy, &body, key);
        assert_eq!(status, 403, "{key:?}: {v}");
        assert!(message(&v).contains("registry:write"), "{v}");
    }
    assert_eq!(services(&sy), json!({}));
    let (status, v) = post(&sy, &body, Some("registrar-secret"));
    assert_eq!(status, 200, "{v}");
    // Deregistering, even of an unknown name, needs it too (no probing for names).
    assert_eq!(delete(&sy, "svc", None).0, 403);
    assert_eq!(delete(&sy, "nope", None).0, 403);
    assert_eq!(delete(&sy, "nope", Some("registrar-secret")).0, 404);
    assert_eq!(delete(&sy, "svc", Some("registrar-secret")).0, 200);
    // Reading the registry stays open to the admin port.
    assert_eq!(
        client()
            .get(sy.admin_url("/internal/services"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

/// Raises this test process's soft descriptor limit to its hard limit.
fn raise_own_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let start = Instant::now();
    let out = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    (status_of(&out), start.elapsed())
}

/// Item 3: `/ready` and `/health` answer within 100 ms with 1,000 idle connections open to
/// the admin port, and still with more idle connections than the admin listener's limit.
#[test]
fn admin_answers_promptly_beside_idle_connections() {
    assert!(
        raise_own_nofile() >= 3_000,
        "the test needs 3,000 descriptors"
    );
    let sy = Switchyard::start(&config("", ""));
    for idle_count in [1_000usize, 1_500] {
        let idle: Vec<TcpStream> = (0..idle_count)
            .map(|_| TcpStream::connect(sy.admin).expect("idle connect"))
            .collect();
        // Let the listener take them in.
        std::thread::sleep(Duration::from_millis(200));
        for path in ["/ready", "/health", "/ready"] {
            let (status, took) = timed_get(sy.admin, path);
            assert_eq!(status, 200, "{path} with {idle_count} idle");
            assert!(
                took < Duration::from_millis(100),
                "{path} took {took:?} with {idle_count} idle connections"
            );
        }
        drop(idle);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 3: a connection that sends no head is answered 408 and closed after 2 s, not 10.
#[test]
fn admin_head_timeout_is_two_seconds() {
    let sy = Switchyard::start(&config("", ""));
    let mut c = RawConn::connect(sy.admin);
    c.send(b"GET /ready HTTP/1.1\r\nHost: a\r\n").unwrap();
    c.set_timeout(Duration::from_secs(5));
    let start = Instant::now();
    let r = c.read_head().expect("an answer");
    let took = start.elapsed();
    assert_eq!(r.status, 408);
    assert!(
        took >= Duration::from_millis(1_800) && took < Duration::from_millis(3_000),
        "{took:?}"
    );
}

fn limits_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// Item 4: the soft RLIMIT_NOFILE goes up to the hard limit at start, with a warning when it
/// still cannot hold max_connections.
#[test]
fn soft_descriptor_limit_is_raised_to_the_hard_limit() {
    let sy = Switchyard::start_with_nofile(&config("", ""), 64, 4096);
    assert_eq!(limits_of(sy.pid()), (4096, 4096));
    assert!(
        sy.wait_log("raised from 64 to 4096", Duration::from_secs(2)),
        "{}",
        sy.log_text()
    );
    assert!(
        sy.log_text().contains("max_connections = 10000"),
        "{}",
        sy.log_text()
    );
}

/// Item 4: with every descriptor in use, health checks fail locally: counted, logged,
/// retried, and the healthy backend stays UP.
#[test]
fn descriptor_exhaustion_never_marks_a_backend_down() {
    let b = Backend::start("app");
    let cfg = format!(
        "{}[gateway]\nhealth_check_interval = 0.1\nhealth_check_timeout = 0.5\nmax_consecutive_failures = 2\ndown_check_interval = 0.3\nstop_ping_after_failures = 4\n\n[[targets]]\naddress = \"{}\"\nhealth_check_endpoint = \"/health\"\n",
        listen_section("request_header_timeout = 30\nmax_connections = 1000"),
        b.addr
    );
    let sy = Switchyard::start_with_nofile(&cfg, 48, 48);
    let health = || -> Value {
        client()
            .get(sy.admin_url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let target = b.addr.to_string();
    assert!(wait_until(Duration::from_secs(5), || health()["targets"]
        [&target]["status"]
        == "UP"));
    let checks_before = b.health_hits();
    // Exhaust: idle clients until switchyard can take no more (the rest wait in the backlog).
    let idle: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(sy.http).expect("connect"))
        .collect();
    assert!(
        sy.wait_log("out of file descriptors", Duration::from_secs(5)),
        "exhaustion was never reached:\n{}",
        sy.log_text()
    );
    // Far more than max_consecutive_failures (2) and stop_ping_after_failures (4) intervals.
    std::thread::sleep(Duration::from_millis(1_500));
    drop(idle);
    assert!(wait_until(Duration::from_secs(5), || b.health_hits()
        > checks_before + 2));
    let v = health();
    assert_eq!(v["targets"][&target]["status"], "UP", "{v}");
    assert_eq!(v["targets"][&target]["consecutive_failures"], 0, "{v}");
    let log = sy.log_text();
    assert!(
        !log.contains("is DOWN") && !log.contains("checking stops"),
        "{log}"
    );
    assert!(log.contains("could not run"), "{log}");
    let metrics = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let local = support::metrics::sample(
        &metrics,
        "switchyard_fd_exhaustion_total{where=\"health_check\"}",
    )
    .unwrap_or(0.0);
    assert!(local >= 1.0, "{metrics}");
    // And traffic flows again.
    assert_eq!(client().get(sy.url("/x")).send().unwrap().status(), 200);
}

/// Item 5: SSRF address classes, service names, duplicate keys.
#[test]
fn registration_validation_gaps_are_closed() {
    let sy = Switchyard::start(&config("", ""));
    for url in [
        "http://169.254.169.254:80",
        "http://[fe80::1]:80",
        "http://0.0.0.0:8000",
        "http://[::]:8000",
        "http://224.0.0.1:80",
        "http://[ff02::1]:80",
        "http://255.255.255.255:80",
        "http://[::ffff:169.254.169.254]:80",
    ] {
        let (status, v) = post(&sy, &service("s", url, json!([{"path": "/s/*"}])), None);
        assert_eq!(status, 400, "{url}: {v}");
        assert!(message(&v).starts_with("url:"), "{url}: {v}");
    }
    for name in [".", "..", "-x", &"a".repeat(65)] {
        let (status, v) = post(&sy, &service(name, "http://127.0.0.1:9", json!([])), None);
        assert_eq!(status, 400, "{name}: {v}");
        assert!(message(&v).starts_with("service:"), "{v}");
    }
    let dup = br#"{"service": "s", "url": "http://127.0.0.1:9", "url": "http://127.0.0.1:10", "routes": []}"#;
    let out = raw(
        sy.admin,
        &[
            format!(
                "POST /internal/register-service HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                dup.len()
            )
            .as_bytes(),
            dup,
        ]
        .concat(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&out), 400, "{out}");
    assert!(
        json_body(&out)["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("url: duplicate"),
        "{out}"
    );
    assert_eq!(services(&sy), json!({}));
}

/// Item 5: `switchyard check` resolves listen addresses and refuses overlaps, with key and line.
#[test]
fn check_refuses_overlapping_listeners() {
    let dir = TempDir::new("overlap");
    let cases = [
        ("[server]\nlisten = \"127.0.0.1:18091\"\n[admin]\nlisten = \"0.0.0.0:18091\"\n", "config.toml:4: admin.listen"),
        ("[server]\nlisten = \"127.0.0.1:18091\"\n[admin]\nlisten = \"localhost:18091\"\n", "config.toml:4: admin.listen"),
        ("[server]\nlisten = \"0.0.0.0:18091\"\n[admin]\nlisten = \"127.0.0.1:18092\"\n[[tcp]]\nlisten = \"127.0.0.1:18091\"\ntargets = [\"127.0.0.1:1\"]\n", "config.toml:6: tcp[0].listen"),
    ];
    for (src, want) in cases {
        let path = dir.0.join("config.toml");
        std::fs::write(&path, src).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "-c", "config.toml"])
            .current_dir(&dir.0)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{src}\n{text}");
        assert!(
            text.contains(want) && text.contains("overlaps"),
            "{src}\n{text}"
        );
    }
}
