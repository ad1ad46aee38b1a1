//! Black-box tests of the command line (SPEC §1, §2): `check`, `route`, and a config in the
//! older format (top-level `listen`, only targets and path routes) run as it is.
mod support;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Runs the binary with `args` (bounded: killed after 10 s); returns (exit code, stdout, stderr).
fn run(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.is_some(), "the command hung: {args:?}\n{out}\n{err}");
    (status.and_then(|s| s.code()), out, err)
}

fn with_config(text: &str) -> (TempDir, String) {
    let dir = TempDir::new("cli");
    let path = dir.0.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

const GOOD: &str = r#"[server]
listen = "127.0.0.1:18080"

[admin]
listen = "127.0.0.1:19901"

[[targets]]
address = "127.0.0.1:8001"

[[targets]]
address = "127.0.0.1:8002"

[[path_routes]]
path = "/files"
address = "127.0.0.1:8007"

[[backends]]
name = "comments"
addresses = ["127.0.0.1:7812", "127.0.0.1:7813"]
health_check_endpoint = "/health"

[[routes]]
path = "/api/comments/*"
methods = ["GET"]
backend = "comments"
"#;

#[test]
fn check_accepts_a_good_config_with_a_summary() {
    let (dir, p) = with_config(GOOD);
    let (code, out, err) = run(&["check", "-c", &p], &dir.0);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("ok"), "{out}");
    assert!(out.contains("127.0.0.1:18080"), "{out}");
    assert!(out.contains("1 pattern routes"), "{out}");
    assert!(out.contains("1 path routes"), "{out}");
    assert!(out.contains("2 targets"), "{out}");
}

#[test]
fn check_reports_every_problem_with_key_and_line() {
    let bad = r#"[server]
listen = "127.0.0.1:18080"
idle_timeout = 0

[[targets]]
address = "no-port-here"

[[backends]]
name = "comments"
addresses = ["127.0.0.1:7812"]

[[routes]]
path = "/api/comments/*"
backend = "missing"

[[routes]]
path = "api/no-slash"
backend = "comments"
"#;
    let (dir, p) = with_config(bad);
    let (code, out, err) = run(&["check", "-c", &p], &dir.0);
    assert_eq!(code, Some(1), "{out}\n{err}");
    for (line, key) in [
        (3, "server.idle_timeout"),
        (6, "targets[0].address"),
        (14, "routes[0].backend"),
        (17, "routes[1].path"),
    ] {
        let needle = format!("config.toml:{line}: {key}");
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("4 problem(s)"), "{err}");
}

#[test]
fn unknown_key_is_an_error_naming_it_and_its_line() {
    let (dir, p) = with_config(
        "[server]\nlisten = \"127.0.0.1:18080\"\n\n[[targets]]\naddress = \"127.0.0.1:1\"\nhealth_chek_endpoint = \"/h\"\n",
    );
    let (code, out, err) = run(&["check", "-c", &p], &dir.0);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("config.toml:6:"), "{err}");
    assert!(err.contains("health_chek_endpoint"), "{err}");
    // The same config refuses to run, too.
    let (code, _, err) = run(&["-c", &p], &dir.0);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn route_explains_rule_and_candidates() {
    let (dir, p) = with_config(GOOD);
    let (code, out, err) = run(&["route", "-c", &p, "GET", "/api/comments/x"], &dir.0);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("rule: route /api/comments/*"), "{out}");
    assert!(out.contains("routes[0]"), "{out}");
    assert!(out.contains("127.0.0.1:7812"), "{out}");
    assert!(out.contains("127.0.0.1:7813"), "{out}");
    // Other methods: no fall-through.
    let (_, out, _) = run(&["route", "-c", &p, "POST", "/api/comments/x"], &dir.0);
    assert!(out.contains("404"), "{out}");
    // A prefix route, and the catch-all without the path-routed address.
    let (_, out, _) = run(&["route", "-c", &p, "GET", "/files/a"], &dir.0);
    assert!(out.contains("path_route /files"), "{out}");
    assert!(out.contains("127.0.0.1:8007"), "{out}");
    let (_, out, _) = run(&["route", "-c", &p, "GET", "/filesystem"], &dir.0);
    assert!(out.contains("catch_all"), "{out}");
    assert!(!out.contains("127.0.0.1:8007"), "{out}");
}

#[test]
fn older_format_config_runs_unchanged() {
    let api = Backend::start("api");
    let files = Backend::start("files");
    // The older shape: a top-level listen, [[targets]] and [[path_routes]], nothing else
    // (so the admin listener takes its default address).
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\n\n[[targets]]\naddress = \"{}\"\nhealth_check_endpoint = \"/healthz\"\n\n[[path_routes]]\npath = \"/files\"\naddress = \"{}\"\n",
        api.address(),
        files.address()
    );
    let (dir, p) = with_config(&cfg);
    let (code, out, err) = run(&["check", "-c", &p], &dir.0);
    assert_eq!(code, Some(0), "{out}\n{err}");
    // The default admin address is shared by every such config on this machine.
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpListener::bind(
            "127.0.0.1:9901"
        )
        .is_ok()),
        "127.0.0.1:9901 (the default admin address) stays busy"
    );
    let sy = Switchyard::start(&cfg);
    let c = client();
    let r = c.get(sy.url("/files/report.pdf")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["backend"], "files");
    let r = c.get(sy.url("/anything")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["backend"], "api");
    assert_eq!(sy.admin.port(), 9901);
}

#[test]
fn check_reports_schema_and_semantic_problems_together() {
    let (dir, p) = with_config(
        "[server]\nlisten = \"127.0.0.1:18080\"\nlisen = 3\n\n[[targets]]\naddress = \"no-port-here\"\n",
    );
    let (code, _, err) = run(&["check", "-c", &p], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("config.toml:3:"), "{err}");
    assert!(err.contains("config.toml:6: targets[0].address"), "{err}");
}

#[test]
fn help_for_every_command_version_and_usage_errors_exit_2() {
    let dir = TempDir::new("cli-help");
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["check", "--help"],
        &["route", "--help"],
        &["demo", "--help"],
        &["help", "route"],
    ] {
        let (code, out, err) = run(args, &dir.0);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.contains("Usage: switchyard"), "{args:?}:\n{out}");
    }
    let (code, out, _) = run(&["route", "--help"], &dir.0);
    assert_eq!(code, Some(0));
    assert!(out.contains("Usage: switchyard route [-c PATH] METHOD PATH [-H 'Name: value']..."));
    assert!(out.contains("-H, --header"), "{out}");
    let (code, out, _) = run(&["--version"], &dir.0);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("switchyard {}", env!("CARGO_PKG_VERSION"))
    );
    let (_, out, _) = run(&["--help"], &dir.0);
    assert!(out.contains("--version"), "{out}");

    for args in [
        &["frobnicate"][..],
        &["-x"],
        &["route", "GET"],
        &["route", "GET", "/a", "-H", "no-colon"],
        &["check", "extra"],
        &["demo", "-c", "x.toml"],
        &["demo", "--listen"],
    ] {
        let (code, out, err) = run(args, &dir.0);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // `-c` before the command is the same as after it.
    let (code, _, err) = run(&["-c", "missing.toml", "check"], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.toml"), "{err}");
}
