//! Host routing over real sockets (SPEC §3 Hosts): exact, wildcard and host-less rules and
//! their precedence, how the request's host is read (case, port, trailing dot, absolute-form
//! authority), registered routes with hosts, duplicates refused by `check` and with 409, and
//! `switchyard route -H 'Host: …'`. Backends are hyper echo servers that name themselves.
mod support;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn config(b: &[&Backend]) -> String {
    format!(
        r#"{listen}
[[targets]]
address = "{t}"

[[backends]]
name = "exact"
addresses = ["{e}"]
[[backends]]
name = "wild"
addresses = ["{w}"]
[[backends]]
name = "plain"
addresses = ["{p}"]
[[backends]]
name = "deep"
addresses = ["{d}"]

# Exact host: less specific than the host-less route below, but its group comes first.
[[routes]]
path = "/*"
backend = "exact"
hosts = ["api.example.com"]

[[routes]]
path = "/api/*"
backend = "wild"
hosts = ["*.example.com"]

# The longer wildcard suffix is tried before *.example.com.
[[routes]]
path = "/api/*"
backend = "deep"
hosts = ["*.eu.example.com"]

[[routes]]
path = "/api/special/*"
backend = "plain"

[[routes]]
path = "/api/*"
backend = "plain"
"#,
        listen = listen_section(""),
        t = b[0].addr,
        e = b[1].addr,
        w = b[2].addr,
        p = b[3].addr,
        d = b[4].addr,
    )
}

/// Sends one request with these head lines; returns (status, the backend that answered).
fn ask(sy: &Switchyard, target: &str, host_lines: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n");
    let r = raw(sy.http, req.as_bytes(), Duration::from_secs(5));
    let v = json_body(&r);
    (
        status_of(&r),
        v["backend"].as_str().unwrap_or("-").to_string(),
    )
}

fn backend_for(sy: &Switchyard, host: &str, path: &str) -> String {
    let (status, b) = ask(sy, path, &format!("Host: {host}\r\n"));
    assert_eq!(status, 200, "{host} {path}");
    b
}

#[test]
fn exact_then_wildcard_then_hostless_then_catch_all() {
    let bs: Vec<Backend> = ["catch", "exact", "wild", "plain", "deep"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    let sy = Switchyard::start(&config(&refs));

    // Exact host wins even over a more specific host-less route.
    assert_eq!(
        backend_for(&sy, "api.example.com", "/api/special/x"),
        "exact"
    );
    assert_eq!(backend_for(&sy, "api.example.com", "/anything"), "exact");
    // Case, port and trailing dot are not part of the host.
    assert_eq!(backend_for(&sy, "API.Example.COM", "/x"), "exact");
    assert_eq!(backend_for(&sy, "api.example.com:8443", "/x"), "exact");
    assert_eq!(backend_for(&sy, "api.example.com.", "/x"), "exact");
    assert_eq!(backend_for(&sy, "Api.Example.Com.:80", "/x"), "exact");
    // Wildcards: one or more labels, the longest suffix first, never the bare domain.
    assert_eq!(backend_for(&sy, "www.example.com", "/api/x"), "wild");
    assert_eq!(backend_for(&sy, "a.b.example.com", "/api/x"), "wild");
    assert_eq!(backend_for(&sy, "x.eu.example.com", "/api/x"), "deep");
    assert_eq!(backend_for(&sy, "eu.example.com", "/api/x"), "wild");
    assert_eq!(backend_for(&sy, "example.com", "/api/x"), "plain");
    assert_eq!(backend_for(&sy, "wwwexample.com", "/api/x"), "plain");
    // A wildcard group without a rule for the path: host-less rules, then the catch-all.
    assert_eq!(
        backend_for(&sy, "www.example.com", "/api/special/y"),
        "wild"
    );
    assert_eq!(backend_for(&sy, "www.example.com", "/other"), "catch");
    assert_eq!(backend_for(&sy, "other.org", "/api/special/y"), "plain");
    assert_eq!(backend_for(&sy, "other.org", "/other"), "catch");
    // No Host at all (HTTP/1.0): host-less rules only.
    let r = raw(
        sy.http,
        b"GET /api/x HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(json_body(&r)["backend"], "plain", "{r}");
    // The absolute-form target's authority wins over the Host header.
    let (status, b) = ask(&sy, "http://api.example.com/api/x", "Host: other.org\r\n");
    assert_eq!((status, b.as_str()), (200, "exact"));
    let (status, b) = ask(
        &sy,
        "http://www.Example.com:81/api/x",
        "Host: api.example.com\r\n",
    );
    assert_eq!((status, b.as_str()), (200, "wild"));

    // Each request on one keep-alive connection is routed by its own host.
    let mut c = RawConn::connect(sy.http);
    for (host, want) in [
        ("api.example.com", "exact"),
        ("www.example.com", "wild"),
        ("other.org", "plain"),
    ] {
        c.send(format!("GET /api/x HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .expect("send");
        let r = c.read_response(false).expect("response");
        assert_eq!(r.json()["backend"], want, "{host}");
    }

    // /health and the status page name the hosts of their rules.
    let h: Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let rules = h["host_rules"].as_array().expect("host_rules");
    assert_eq!(rules.len(), 3, "{h}");
    assert_eq!(rules[0]["hosts"], json!(["api.example.com"]));
    assert_eq!(rules[1]["hosts"], json!(["*.example.com"]));
    assert_eq!(rules[1]["origin"], "routes[1]");
    let page = client()
        .get(sy.admin_url("/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("/api/* @ *.eu.example.com"), "status page");
}

#[test]
fn registered_routes_with_hosts_and_duplicates_refused() {
    let plain = Backend::start("plain");
    let reg_a = Backend::start("reg-a");
    let reg_b = Backend::start("reg-b");
    let sy = Switchyard::start(&format!(
        r#"{}
[[backends]]
name = "plain"
addresses = ["{}"]
[[routes]]
path = "/api/*"
backend = "plain"
[[routes]]
path = "/static/*"
backend = "plain"
hosts = ["static.example.com"]
"#,
        listen_section(""),
        plain.addr
    ));
    let register = |body: Value| {
        let r = client()
            .post(sy.admin_url("/internal/register-service"))
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    // Same path as a host-less static route, but for hosts: not a duplicate.
    let (status, v) = register(
        json!({"service": "a", "url": format!("http://{}", reg_a.addr),
        "routes": [{"path": "/api/*", "hosts": ["A.example.com", "*.a.example.com"]}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(backend_for(&sy, "a.example.com", "/api/x"), "reg-a");
    assert_eq!(backend_for(&sy, "x.a.example.com", "/api/x"), "reg-a");
    assert_eq!(backend_for(&sy, "b.example.com", "/api/x"), "plain");
    // Another service with the same path and an exact host in common: 409.
    let (status, v) = register(
        json!({"service": "b", "url": format!("http://{}", reg_b.addr),
        "routes": [{"path": "/api/*", "hosts": ["b.example.com", "a.example.com"]}]}),
    );
    assert_eq!(status, 409, "{v}");
    // The same against a static route with hosts.
    let (status, v) = register(
        json!({"service": "b", "url": format!("http://{}", reg_b.addr),
        "routes": [{"path": "/static/*", "hosts": ["static.example.com"]}]}),
    );
    assert_eq!(status, 409, "{v}");
    // Same path, other host: fine.
    let (status, v) = register(
        json!({"service": "b", "url": format!("http://{}", reg_b.addr),
        "routes": [{"path": "/api/*", "hosts": ["b.example.com"]}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(backend_for(&sy, "b.example.com", "/api/x"), "reg-b");
    assert_eq!(backend_for(&sy, "a.example.com", "/api/x"), "reg-a");
    // Bad host entries are 400 naming the field.
    for (hosts, field) in [
        (json!(["a.com:80"]), "routes[0].hosts[0]"),
        (json!(["*"]), "routes[0].hosts[0]"),
        (json!([]), "routes[0].hosts"),
        (json!("a.com"), "routes[0].hosts"),
        (json!(["a.com", "A.com."]), "routes[0].hosts[1]"),
    ] {
        let (status, v) = register(
            json!({"service": "c", "url": format!("http://{}", reg_b.addr),
            "routes": [{"path": "/c/*", "hosts": hosts}]}),
        );
        assert_eq!(status, 400, "{v}");
        assert!(v.to_string().contains(field), "{v} should name {field}");
    }
    // The registry keeps the hosts; /health lists them per service.
    let reg: Value = client()
        .get(sy.admin_url("/internal/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(reg.to_string().contains("*.a.example.com"), "{reg}");
    let h: Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        h["services"]["a"]["hosts"],
        json!(["a.example.com", "*.a.example.com"]),
        "{h}"
    );
}

/// Runs `switchyard` with `args`, bounded; returns (exit code, stdout + stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_refuses_duplicates_and_route_explains_hosts() {
    let dir = TempDir::new("hosts-cli");
    let dup = dir.0.join("dup.toml");
    std::fs::write(
        &dup,
        r#"[[backends]]
name = "b"
addresses = ["127.0.0.1:7000"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["a.example.com", "b.example.com"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["c.example.com", "B.example.com"]
[[path_routes]]
path = "/files"
address = "127.0.0.1:7001"
hosts = ["f.example.com"]
[[path_routes]]
path = "/files/"
address = "127.0.0.1:7002"
hosts = ["f.example.com"]
"#,
    )
    .unwrap();
    let (code, out) = run(&["check", "-c", dup.to_str().unwrap()]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("dup.toml:9: routes[1].path: duplicate route /api/* (also routes[0])"),
        "{out}"
    );
    assert!(
        out.contains("dup.toml:17: path_routes[1].path: duplicate path route /files"),
        "{out}"
    );

    let bs: Vec<Backend> = ["catch", "exact", "wild", "plain", "deep"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = bs.iter().collect();
    let cfg = dir.0.join("hosts.toml");
    std::fs::write(&cfg, config(&refs)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (code, out) = run(&[
        "route",
        "-c",
        cfg,
        "-H",
        "Host: WWW.example.com:8080",
        "GET",
        "/api/x",
    ]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "host: www.example.com (from the Host header)",
        "pattern /api/* (routes[1], any method, hosts *.example.com) matches the path",
        "pattern /api/* (routes[4], any method) matches the path",
        "rule: route /api/* (routes[1])",
        "host group: rules for *.example.com (after exact hosts, longest suffix first)",
        "hosts: *.example.com",
    ] {
        assert!(out.contains(want), "{want:?} missing in\n{out}");
    }
    // routes[2] (*.eu.example.com) does not apply to www.example.com.
    assert!(!out.contains("routes[2]"), "{out}");
    let (_, out) = run(&[
        "route",
        "-c",
        cfg,
        "-H",
        "Host: api.example.com",
        "GET",
        "/api/special/x",
    ]);
    assert!(out.contains("rule: route /* (routes[0])"), "{out}");
    assert!(
        out.contains("host group: rules naming the host api.example.com exactly"),
        "{out}"
    );
    let (_, out) = run(&["route", "-c", cfg, "GET", "/api/special/x"]);
    assert!(out.contains("host: none"), "{out}");
    assert!(
        out.contains("rule: route /api/special/* (routes[3])"),
        "{out}"
    );
    assert!(out.contains("host group: rules without hosts"), "{out}");
    let (_, out) = run(&[
        "route",
        "-c",
        cfg,
        "-H",
        "Host: other.org",
        "GET",
        "http://api.example.com/x",
    ]);
    assert!(
        out.contains("host: api.example.com (from the request target's authority)"),
        "{out}"
    );
    assert!(out.contains("rule: route /* (routes[0])"), "{out}");
    let (_, out) = run(&[
        "route",
        "-c",
        cfg,
        "-H",
        "Host: www.example.com",
        "GET",
        "/zzz",
    ]);
    assert!(out.contains("rule: catch_all"), "{out}");
    assert!(
        out.contains("host group: the catch-all serves every host"),
        "{out}"
    );
}

/// README's Hosts example: its config checks, and `switchyard route` prints the lines shown.
#[test]
fn the_readme_hosts_example_routes_as_shown() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n### Hosts\n")
        .nth(1)
        .and_then(|s| s.split("\n### Rewrites\n").next())
        .expect("README has a Hosts section");
    let block = |lang: &str| {
        section
            .split(&format!("```{lang}\n"))
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap_or_else(|| panic!("a {lang} block"))
            .to_string()
    };
    let dir = TempDir::new("readme-hosts");
    let cfg = dir.0.join("hosts.toml");
    std::fs::write(&cfg, block("toml")).unwrap();
    let (code, out) = run(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let text = block("text");
    let mut lines = text.lines();
    let cmd = lines.next().unwrap();
    assert_eq!(
        cmd,
        "$ switchyard route -c hosts.toml -H 'Host: Shop.Example.com:8443' GET '/app/login?next=/'"
    );
    let (code, out) = run(&[
        "route",
        "-c",
        cfg.to_str().unwrap(),
        "-H",
        "Host: Shop.Example.com:8443",
        "GET",
        "/app/login?next=/",
    ]);
    assert_eq!(code, Some(0), "{out}");
    for l in lines {
        assert!(
            out.lines().any(|o| o == l),
            "README shows {l:?}, route printed:\n{out}"
        );
    }
}
