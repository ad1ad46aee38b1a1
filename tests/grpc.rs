//! gRPC end to end (SPEC §10) with implementations independent of switchyard's: a real
//! Python grpcio server behind it (`protocol = "h2c"`, and `"h2"` over TLS with its own CA)
//! and a real grpcio client through it (`tests/support/grpc_peer.py`, generic handlers with
//! raw bytes: no stubs, no protoc). Unary, server and bidirectional streaming (with bodies
//! far larger than the flow-control windows), trailers, deadlines, cancellation, switchyard's
//! own errors as gRPC statuses, and the gRPC health check.
mod support;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;
use support::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/grpc_peer.py");

fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let local = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
        assert!(
            std::path::Path::new(local).exists(),
            "these tests need the Python grpcio package: run scripts/test.sh (it builds \
             target/pyenv and sets SWITCHYARD_PYTHON)"
        );
        local.to_string()
    })
}

/// The grpcio server, killed on drop.
struct GrpcServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl GrpcServer {
    fn start(tls: Option<(&std::path::Path, &std::path::Path)>) -> GrpcServer {
        let mut cmd = Command::new(python());
        cmd.arg(PEER).arg("server");
        if let Some((c, k)) = tls {
            cmd.arg(c).arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v.get("error").is_none(), "{v}");
        let port = v["port"].as_u64().unwrap() as u16;
        GrpcServer {
            child,
            stdin,
            stdout,
            port,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn cmd(&mut self, c: Value) -> Value {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn events(&mut self) -> Vec<Value> {
        self.cmd(json!({"op": "events"}))["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits for an event with `m` == `kind` and `tag` (when given).
    fn wait_event(&mut self, kind: &str, tag: Option<&str>) -> Value {
        let mut found = Value::Null;
        wait_until(Duration::from_secs(10), || {
            found = self
                .events()
                .into_iter()
                .find(|e| e["m"] == kind && tag.is_none_or(|t| e["tag"] == t))
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        assert!(!found.is_null(), "no {kind} event: {:?}", self.events());
        found
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call with the grpcio client.
fn call(target: &str, c: Value) -> Value {
    let mut c = c;
    c["target"] = json!(target);
    let out = Command::new(python())
        .arg(PEER)
        .arg("client")
        .arg(c.to_string())
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(v.get("error").is_none(), "{v}");
    v
}

const KEYS: &str = r#"
[[api_keys]]
name = "caller"
key = "grpc-secret"
permissions = ["echo:call"]
"#;

/// switchyard in front of `server` (h2c), plus the routes the error cases need.
fn gateway(server: &GrpcServer, extra: &str) -> Switchyard {
    let cfg = format!(
        r#"{listen}
[[backends]]
name = "echo"
addresses = ["{addr}"]
protocol = "h2c"

[[backends]]
name = "plain"
addresses = ["{plain}"]

[[backends]]
name = "gone"
addresses = ["127.0.0.1:{dead}"]
protocol = "h2c"

[[routes]]
path = "/test.Echo/*"
backend = "echo"

[[routes]]
path = "/keyed.Echo/*"
backend = "echo"
permission = "echo:call"

[[routes]]
path = "/old.Echo/*"
backend = "plain"

[[routes]]
path = "/down.Echo/*"
backend = "gone"
{KEYS}{extra}"#,
        listen = listen_section(""),
        addr = server.address(),
        // An HTTP/1.1 backend that must never be reached by a gRPC request.
        plain = "127.0.0.1:9",
        dead = dead_port(),
    );
    Switchyard::start(&cfg)
}

fn target(sy: &Switchyard) -> String {
    format!("127.0.0.1:{}", sy.http.port())
}

#[test]
fn unary_server_streaming_and_bidi_through_an_h2c_backend() {
    let mut server = GrpcServer::start(None);
    let sy = gateway(&server, "");
    let t = target(&sy);
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Unary", "data": "hi",
               "metadata": [["x-custom", "v1"]]}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["head"], "echo:hi");
    // The backend's trailers crossed switchyard (HTTP/2 to HTTP/2).
    assert_eq!(r["trailing"]["x-trailer"], "t-2", "{r}");
    let seen = server.wait_event("unary", None);
    assert_eq!(seen["md"]["x-custom"], "v1", "{seen}");
    assert!(seen["md"]["x-request-id"].as_str().is_some(), "{seen}");
    assert_eq!(seen["md"]["x-forwarded-proto"], "http", "{seen}");

    // A 3 MB answer: three times the stream window switchyard offers the backend.
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Unary", "data": "big:3000000"}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["len"], 3_000_000);

    // Server streaming: 300 messages of 32 KiB (~10 MB), in order, then its trailers.
    let r = call(
        &t,
        json!({"kind": "server_stream", "method": "/test.Echo/ServerStream", "data": "300:32768"}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["n"], 300);
    assert_eq!(r["in_order"], true);
    assert_eq!(r["bytes"], 300 * 32768);
    assert_eq!(r["trailing"]["x-count"], "300");

    // Bidi in lock step: every message waits for the echo of the previous one, so a proxy
    // that held either direction back would stall it.
    let r = call(
        &t,
        json!({"kind": "bidi", "method": "/test.Echo/Bidi", "n": 50, "size": 20000, "timeout": 20}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["n"], 50);
    assert_eq!(r["echoed"], true);
    let b = server.wait_event("bidi", None);
    assert_eq!(b["n"], 50);
    // The access log names the client's protocol.
    assert!(
        sy.wait_log("HTTP/2", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
}

#[test]
fn a_deadline_reaches_the_backend_and_expires_as_deadline_exceeded() {
    let mut server = GrpcServer::start(None);
    let sy = gateway(&server, "");
    let t = target(&sy);
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Slow", "data": "deadline", "timeout": 0.8}),
    );
    assert_eq!(r["code"], "DEADLINE_EXCEEDED", "{r}");
    let started = server.wait_event("slow", Some("deadline"));
    // The grpc-timeout header went through: the backend knows its deadline.
    let left = started["time_remaining"].as_f64().expect("time_remaining");
    assert!(left > 0.0 && left <= 0.8, "{started}");
    // And the call ended there, well before the handler's own 10 s.
    let end = server.wait_event("slow_end", Some("deadline"));
    assert_eq!(end["active"], false, "{end}");
    assert!(end["elapsed"].as_f64().unwrap() < 5.0, "{end}");
}

#[test]
fn a_client_cancel_cancels_the_backend_call() {
    let mut server = GrpcServer::start(None);
    let sy = gateway(&server, "");
    let t = target(&sy);
    let r = call(
        &t,
        json!({"kind": "cancel", "method": "/test.Echo/Slow", "data": "cancel", "after": 0.7}),
    );
    assert_eq!(r["code"], "CANCELLED", "{r}");
    let started = server.wait_event("slow", Some("cancel"));
    // No deadline was set, and none was invented on the way (grpcio reports "infinite").
    let left = started["time_remaining"].as_f64().unwrap_or(f64::MAX);
    assert!(left > 1e6, "{started}");
    let end = server.wait_event("slow_end", Some("cancel"));
    assert_eq!(end["active"], false, "{end}");
    assert!(end["elapsed"].as_f64().unwrap() < 5.0, "{end}");
}

#[test]
fn switchyards_own_errors_are_grpc_statuses() {
    let server = GrpcServer::start(None);
    let sy = gateway(&server, "");
    let t = target(&sy);
    let unary = |method: &str, md: Value| {
        call(
            &t,
            json!({"kind": "unary", "method": method, "data": "x", "metadata": md, "timeout": 10}),
        )
    };
    // No route: UNIMPLEMENTED, as for a method the server does not have.
    let r = unary("/nowhere.Svc/M", json!([]));
    assert_eq!(r["code"], "UNIMPLEMENTED", "{r}");
    // Missing API key: UNAUTHENTICATED; with the key it goes through.
    let r = unary("/keyed.Echo/Unary", json!([]));
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/keyed.Echo/Unary", "data": "x",
               "metadata": [["x-api-key", "grpc-secret"]]}),
    );
    // The server has no keyed.Echo service: the backend's own UNIMPLEMENTED, relayed.
    assert_eq!(r["code"], "UNIMPLEMENTED", "{r}");
    assert!(
        !r["details"].as_str().unwrap_or("").contains("switchyard"),
        "{r}"
    );
    // No reachable backend: UNAVAILABLE.
    let r = unary("/down.Echo/Unary", json!([]));
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    // gRPC to an HTTP/1.1 backend is refused before anything is sent: UNAVAILABLE, saying why.
    let r = unary("/old.Echo/Unary", json!([]));
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    assert!(
        r["details"].as_str().unwrap().contains("HTTP/2 backend"),
        "{r}"
    );
}

fn health_status(sy: &Switchyard, addr: &str) -> String {
    let v: Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["backends"]
        .as_object()
        .and_then(|p| p.values().find_map(|p| p.get(addr)))
        .map(|e| e["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn the_grpc_health_check_marks_a_backend_up_and_down() {
    let mut server = GrpcServer::start(None);
    let cfg = format!(
        r#"{listen}[gateway]
health_check_interval = 0.2
down_check_interval = 0.2
max_consecutive_failures = 2
health_check_timeout = 2

[[backends]]
name = "echo"
addresses = ["{addr}"]
protocol = "h2c"
health_check_endpoint = "grpc"

[[routes]]
path = "/test.Echo/*"
backend = "echo"
"#,
        listen = listen_section(""),
        addr = server.address(),
    );
    let sy = Switchyard::start(&cfg);
    let a = server.address();
    assert!(
        wait_until(Duration::from_secs(10), || health_status(&sy, &a) == "UP"),
        "{}",
        sy.log_text()
    );
    // The check was the gRPC health protocol: an empty HealthCheckRequest.
    let e = server.wait_event("health", None);
    assert_eq!(e["req"], "");
    let t = target(&sy);
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Unary", "data": "up"}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    server.cmd(json!({"op": "serving", "value": false}));
    assert!(
        wait_until(Duration::from_secs(10), || health_status(&sy, &a) == "DOWN"),
        "{}",
        sy.log_text()
    );
    assert!(sy.log_text().contains("NOT_SERVING"), "{}", sy.log_text());
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Unary", "data": "down"}),
    );
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    server.cmd(json!({"op": "serving", "value": true}));
    assert!(
        wait_until(Duration::from_secs(10), || health_status(&sy, &a) == "UP"),
        "{}",
        sy.log_text()
    );
}

#[test]
fn grpc_to_an_h2_backend_over_tls_with_its_own_ca() {
    let dir = TempDir::new("grpc-tls");
    let ca = tls::Ca::new("grpc-backend");
    std::fs::write(dir.0.join("backend-ca.pem"), &ca.cert_pem).unwrap();
    let (c, k) = ca.leaf(&["grpc.test"]).write(&dir.0, "leaf", "");
    let mut server = GrpcServer::start(Some((&c, &k)));
    let cfg = format!(
        r#"{listen}
[[backends]]
name = "secure"
addresses = ["{addr}"]
protocol = "h2"
tls_ca = "backend-ca.pem"
tls_server_name = "grpc.test"

[[backends]]
name = "wrongname"
addresses = ["{addr}"]
protocol = "h2"
tls_ca = "backend-ca.pem"

[[routes]]
path = "/test.Echo/*"
backend = "secure"

[[routes]]
path = "/wrong.Echo/*"
backend = "wrongname"
"#,
        listen = listen_section(""),
        addr = server.address(),
    );
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let t = target(&sy);
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/test.Echo/Unary", "data": "tls"}),
    );
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["head"], "echo:tls");
    assert_eq!(r["trailing"]["x-trailer"], "t-3");
    let r = call(
        &t,
        json!({"kind": "server_stream", "method": "/test.Echo/ServerStream", "data": "40:1000"}),
    );
    assert_eq!(r["n"], 40, "{r}");
    server.wait_event("unary", None);
    // The certificate names grpc.test, not 127.0.0.1: verification fails, no call is made.
    let r = call(
        &t,
        json!({"kind": "unary", "method": "/wrong.Echo/Unary", "data": "x"}),
    );
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
}
