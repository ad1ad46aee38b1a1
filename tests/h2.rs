//! HTTP/2 towards clients (SPEC §10), tried with implementations independent of switchyard's
//! own `h2` crate: curl (nghttp2) over TLS with ALPN and with prior knowledge, the Python `h2`
//! package as a raw client (flow control, gRPC error answers, floods made by hand) and h2load.
mod support;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::backend::{fnv, pattern};
use support::*;

const KEYS: &str = r#"
[[api_keys]]
name = "reader"
key = "read-secret"
permissions = ["things:read"]
"#;

/// Two path-routed backends behind a keyed route, a catch-all, and the key.
struct Fleet {
    a: Backend,
    b: Backend,
    sy: Switchyard,
}

fn fleet(extra_server: &str) -> Fleet {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let cfg = format!(
        r#"{listen}{targets}
[[backends]]
name = "b"
addresses = ["{b}"]

[[routes]]
path = "/b/*"
backend = "b"

[[routes]]
path = "/*"
hosts = ["b.test"]
backend = "b"
set_response_headers = {{ "x-via-host" = "b" }}

[[routes]]
path = "/keyed/*"
backend = "b"
permission = "things:read"
{KEYS}"#,
        listen = listen_section(extra_server),
        targets = targets_toml(&[a.address()]),
        b = b.address(),
    );
    let sy = Switchyard::start(&cfg);
    Fleet { a, b, sy }
}

fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let local = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
        assert!(
            std::path::Path::new(local).exists(),
            "these tests need the Python h2 package: run scripts/test.sh (it builds target/pyenv \
             and sets SWITCHYARD_PYTHON)"
        );
        local.to_string()
    })
}

/// Runs one command of `support/h2client.py`.
fn py(cmd: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h2client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(cmd.to_string())
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(v.get("error").is_none(), "{v}");
    v
}

fn requests(port: u16, reqs: Value) -> Vec<Value> {
    let v = py(json!({"op": "requests", "port": port, "requests": reqs}));
    v["responses"].as_array().unwrap().clone()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn prior_knowledge_many_requests_on_one_connection_go_to_their_own_backends() {
    let f = fleet("");
    let port = f.sy.http.port();
    // curl with prior knowledge (curl 7.88 reuses an h2c connection badly, so one URL per
    // run; the multiplexed case is the Python client's below and h2load's).
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &f.sy.url("/b/two"),
    ]);
    assert!(out.ends_with("\n2 200"), "{out}");
    let j: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(j["backend"], "b");
    // What the HTTP/1.1 backend saw: Host from :authority, the usual forwarding headers.
    let h = &j["headers"];
    assert_eq!(h["host"], format!("127.0.0.1:{port}"));
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h["x-request-id"].as_str().is_some_and(|s| s.len() >= 16));
    // Twenty concurrent streams on one connection, alternating between the two backends.
    let reqs: Vec<Value> = (0..20)
        .map(|i| json!({"path": if i % 2 == 0 { format!("/b/s{i}") } else { format!("/a{i}") }}))
        .collect();
    let r = requests(port, json!(reqs));
    for (i, x) in r.iter().enumerate() {
        assert_eq!(x["status"], 200, "{x}");
        let j: Value = serde_json::from_str(x["text"].as_str().unwrap()).unwrap();
        assert_eq!(j["backend"], if i % 2 == 0 { "b" } else { "a" }, "{j}");
    }
    assert_eq!(f.a.hits(), 10);
    assert_eq!(f.b.hits(), 11);
    // By host: the same path on the same connection goes by :authority, and the rule's
    // response header edit reaches the HTTP/2 client.
    let r = requests(
        port,
        json!([{"path": "/h", "authority": "b.test"}, {"path": "/h", "authority": "a.test"}]),
    );
    let j0: Value = serde_json::from_str(r[0]["text"].as_str().unwrap()).unwrap();
    let j1: Value = serde_json::from_str(r[1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        (j0["backend"].clone(), j1["backend"].clone()),
        (json!("b"), json!("a"))
    );
    assert_eq!(r[0]["headers"]["x-via-host"], "b", "{:?}", r[0]);
    assert!(r[1]["headers"].get("x-via-host").is_none());
    // The access log names the protocol.
    assert!(
        f.sy.wait_log("\"GET /b/two HTTP/2\" 200", Duration::from_secs(5)),
        "{}",
        f.sy.log_text()
    );
}

#[test]
fn headers_are_translated_for_http1_backends() {
    let f = fleet("");
    let port = f.sy.http.port();
    let r = requests(
        port,
        json!([{"path": "/b/x?q=1", "authority": "Api.Test:8443",
                "headers": [["cookie", "a=1"], ["accept", "*/*"], ["cookie", "b=2"],
                             ["te", "trailers"], ["x-api-key", "secret-stays-here"]]}]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    let seen = f.b.stats.seen.lock().unwrap().clone();
    let (method, target, headers) = &seen[0];
    assert_eq!((method.as_str(), target.as_str()), ("GET", "/b/x?q=1"));
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("host"), ["Api.Test:8443"]);
    // RFC 9113 §8.2.3: one cookie field for HTTP/1.1.
    assert_eq!(get("cookie"), ["a=1; b=2"]);
    assert!(
        get("te").is_empty(),
        "TE is hop-by-hop for an HTTP/1.1 backend"
    );
    assert!(get("x-api-key").is_empty());
    assert_eq!(get("x-forwarded-host"), ["Api.Test:8443"]);
    // The answer: x-gateway and server-timing added, no connection-specific fields.
    let h = &r[0]["headers"];
    assert_eq!(h["x-gateway"], "switchyard");
    assert!(h["server-timing"]
        .as_str()
        .unwrap()
        .starts_with("upstream;dur="));
    assert!(h.get("connection").is_none() && h.get("transfer-encoding").is_none());
}

#[test]
fn bodies_stream_both_ways_within_flow_control() {
    let f = fleet("");
    let port = f.sy.http.port();
    // 3 MB up with a length and 1 MB without one (chunked to the backend), echoed back while
    // the client's own window is small and it reads slowly: the Python h2 state machine
    // raises on any frame beyond its window, so a completed exchange proves we respected it.
    let v = py(
        json!({"op": "requests", "port": port, "window": 16384, "timeout": 60,
        "requests": [
            {"method": "POST", "path": "/echo", "body_len": 3_000_000,
             "headers": [["content-length", "3000000"]]},
            {"method": "POST", "path": "/echo", "body_len": 1_000_000},
            {"method": "POST", "path": "/b/json", "body_len": 200_000},
        ]}),
    );
    let r = v["responses"].as_array().unwrap();
    assert_eq!(r[0]["status"], 200, "{r:?}");
    assert_eq!(r[0]["len"], 3_000_000);
    assert_eq!(r[0]["fnv"], r[0]["sent_fnv"]);
    assert_eq!(r[1]["len"], 1_000_000, "{}", r[1]["text"]);
    assert_eq!(r[1]["fnv"], r[1]["sent_fnv"]);
    let j: Value = serde_json::from_str(r[2]["text"].as_str().unwrap()).unwrap();
    assert_eq!(j["body_len"], 200_000);
    assert_eq!(j["headers"]["transfer-encoding"], "chunked");
    assert_eq!(
        j["body_fnv"].as_str().unwrap(),
        r[2]["sent_fnv"].as_str().unwrap()
    );
    // A large download to a client that reads slowly arrives whole.
    let v = py(
        json!({"op": "requests", "port": port, "window": 65535, "slow_reader": 0.001,
        "timeout": 60, "requests": [{"path": "/bytes/2000000"}, {"path": "/chunked/700000"}]}),
    );
    let r = v["responses"].as_array().unwrap();
    assert_eq!(
        (r[0]["status"].clone(), r[0]["len"].clone()),
        (json!(200), json!(2_000_000))
    );
    assert_eq!(
        (r[1]["status"].clone(), r[1]["len"].clone()),
        (json!(200), json!(700_000))
    );
    // Bodies either side of the one-frame bound (sent with the head, or through the copy
    // loop), to a client with a window smaller than the larger ones: whole, and the access
    // log counts exactly what went out.
    let sizes = [0, 1, 64, 16_384, 16_385, 70_000];
    let reqs: Vec<Value> = sizes
        .iter()
        .map(|n| json!({"path": format!("/bytes/{n}")}))
        .collect();
    let v = py(json!({"op": "requests", "port": port, "window": 8192, "requests": reqs}));
    let r = v["responses"].as_array().unwrap();
    for (x, n) in r.iter().zip(sizes) {
        assert_eq!(
            (x["status"].clone(), x["len"].clone()),
            (json!(200), json!(n))
        );
        // `in/out`: the head's bytes in, the body's bytes out.
        let line = format!("\"GET /bytes/{n} HTTP/2\" 200 ");
        assert!(f.sy.wait_log(&line, Duration::from_secs(5)), "{line}");
        let log = f.sy.log_text();
        let counts = log
            .lines()
            .find_map(|l| l.split_once(&line))
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|c| c.split_once('/'))
            .map(|(_, out)| out.to_string());
        assert_eq!(counts, Some(n.to_string()), "{log}");
    }
}

#[test]
fn a_stream_starts_clean_with_the_buffers_of_an_earlier_one() {
    // A finished stream's buffers go to the next stream on the same thread (one worker here,
    // so every stream below gets the one before it's): nothing of it may show.
    let f = fleet("workers = 1");
    let port = f.sy.http.port();
    let long = "x".repeat(3000);
    let one = |path: &str, headers: Value| {
        let r = requests(port, json!([{"path": path, "headers": headers}]));
        assert_eq!(r[0]["status"], 200, "{r:?}");
        let j: Value = serde_json::from_str(r[0]["text"].as_str().unwrap()).unwrap();
        j
    };
    let first = one(
        &format!("/b/first?{long}"),
        json!([["x-request-id", "first-id-0001"], ["x-only-first", "1"]]),
    );
    assert_eq!(first["headers"]["x-request-id"], "first-id-0001");
    let second = one("/b/second", json!([["x-request-id", "second-id-0002"]]));
    assert_eq!(second["target"], "/b/second");
    assert_eq!(second["headers"]["x-request-id"], "second-id-0002");
    assert!(second["headers"]["x-only-first"].is_null(), "{second}");
    let third = one("/b/third", json!([]));
    let id = third["headers"]["x-request-id"].as_str().unwrap();
    assert!(!id.contains("-id-") && id.len() >= 16, "{id}");
    assert_eq!(third["target"], "/b/third");
}

#[test]
fn errors_are_json_and_grpc_errors_are_trailers_only() {
    let f = fleet("");
    let port = f.sy.http.port();
    let grpc = json!([["content-type", "application/grpc"], ["te", "trailers"]]);
    let r = requests(
        port,
        json!([
            {"path": "/keyed/x"},
            {"path": "/keyed/x", "headers": [["x-api-key", "wrong"]]},
            {"path": "/keyed/x", "headers": [["x-api-key", "read-secret"]]},
            {"method": "POST", "path": "/keyed/svc/Method", "headers": grpc, "body_len": 5},
            {"method": "POST", "path": "/b/svc/Method", "headers": grpc, "body_len": 5},
            {"path": "/a/../etc"},
        ]),
    );
    assert_eq!(r[0]["status"], 401, "{r:?}");
    let j: Value = serde_json::from_str(r[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(j["error"], "unauthorized");
    assert_eq!(r[0]["headers"]["content-type"], "application/json");
    assert_eq!(j["request_id"], r[0]["headers"]["x-request-id"]);
    assert_eq!(r[1]["status"], 401);
    assert_eq!(r[2]["status"], 200);
    // gRPC: HTTP 200, one HEADERS frame with grpc-status, no body, no trailers.
    for (i, status) in [(3, "16"), (4, "14")] {
        let h = &r[i]["headers"];
        assert_eq!(r[i]["status"], 200, "{:?}", r[i]);
        assert_eq!(h["grpc-status"], status, "{:?}", r[i]);
        assert_eq!(h["content-type"], "application/grpc");
        assert!(h["grpc-message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(r[i]["len"], 0);
        assert!(r[i]["trailers"].is_null());
    }
    assert!(r[4]["headers"]["grpc-message"]
        .as_str()
        .unwrap()
        .contains("HTTP/2 backend"));
    assert_eq!(r[5]["status"], 400);
    // No gRPC request reached the HTTP/1.1 backend.
    let seen = f.b.stats.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, t, _)| !t.contains("svc")), "{seen:?}");
}

#[test]
fn upgrade_h2c_is_dropped_and_served_as_http1() {
    let f = fleet("");
    let resp = raw(
        f.sy.http,
        b"GET /b/u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = f.b.stats.seen.lock().unwrap().clone();
    let names: Vec<&str> = seen[0].2.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        !names.contains(&"upgrade") && !names.contains(&"http2-settings"),
        "{names:?}"
    );
}

#[test]
fn h2c_can_be_turned_off() {
    let f = fleet("h2c = false");
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &f.sy.url("/x"),
    ]);
    // The preface is then an HTTP/1 request line with an unknown version: no HTTP/2 answer.
    assert_ne!(out, "200", "{out}");
    assert_eq!(f.a.hits(), 0);
}

#[test]
fn tls_alpn_h2() {
    let b = Backend::start("t");
    let dir = TempDir::new("h2tls");
    let ca = support::tls::Ca::new("h2");
    ca.leaf(&["localhost"]).write(&dir.0, "leaf", "");
    std::fs::write(dir.0.join("ca.pem"), &ca.cert_pem).unwrap();
    let cfg = format!(
        "{}{}\n[tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert = \"leaf.pem\"\nkey = \"leaf.key\"\ndefault = true\n",
        listen_section(""),
        targets_toml(&[b.address()])
    );
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = support::tls::https_port(&sy);
    let ca_path = sy.config_path.parent().unwrap().join("ca.pem");
    let url = format!("https://localhost:{port}/over-tls");
    let out = curl(&[
        "--http2",
        "--cacert",
        ca_path.to_str().unwrap(),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
        &url,
    ]);
    assert!(out.ends_with("\n2 200"), "{out}");
    assert_eq!(out.matches("\n2 200").count(), 2, "{out}");
    let j: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(j["headers"]["x-forwarded-proto"], "https");
    // A client offering only http/1.1 still gets it.
    let out = curl(&[
        "--http1.1",
        "--cacert",
        ca_path.to_str().unwrap(),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert!(out.ends_with("\n1.1 200"), "{out}");
    // And the Python h2 client over TLS.
    let v = py(json!({"op": "requests", "port": port, "tls": true,
        "requests": [{"path": "/py", "authority": "localhost"}]}));
    assert_eq!(v["responses"][0]["status"], 200, "{v}");
}

/// A GET through another connection, timed.
fn timed_get(url: &str) -> (String, Duration) {
    let t = Instant::now();
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]);
    (out, t.elapsed())
}

#[test]
fn rapid_reset_gets_goaway_and_others_are_not_slowed() {
    let f = fleet("");
    let port = f.sy.http.port();
    let url = f.sy.url("/sleep/0");
    let (_, baseline) = timed_get(&url);
    let attack = std::thread::spawn(move || {
        py(
            json!({"op": "rapid_reset", "port": port, "n": 5000, "path": "/sleep/50", "timeout": 10}),
        )
    });
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let (code, took) = timed_get(&url);
        assert_eq!(code, "200");
        worst = worst.max(took);
    }
    let v = attack.join().unwrap();
    // ENHANCE_YOUR_CALM (0xb), and the connection closed.
    assert_eq!(v["goaway"], 11, "{v}");
    assert!(v["eof"].as_bool().unwrap(), "{v}");
    assert!(
        worst < baseline + Duration::from_secs(1),
        "another client waited {worst:?} (baseline {baseline:?})"
    );
    let m = reqwest::blocking::get(f.sy.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let n = support::metrics::sample(&m, "switchyard_h2_goaway_total{reason=\"rapid_reset\"}");
    assert!(n.is_some_and(|n| n >= 1.0), "{m}");
    // Far fewer than the 5000 streams reached the backend.
    assert!(f.a.hits() < 1000, "{} hits", f.a.hits());
}

#[test]
fn continuation_ping_and_settings_floods_get_goaway() {
    let f = fleet("");
    let port = f.sy.http.port();
    for (kind, n) in [
        ("continuation", 10_000),
        ("ping", 20_000),
        ("settings", 20_000),
    ] {
        let v = py(json!({"op": "raw_flood", "port": port, "kind": kind, "n": n, "timeout": 10}));
        assert!(v["eof"].as_bool().unwrap(), "{kind}: {v}");
        // ENHANCE_YOUR_CALM from our guard, or the h2 crate's own refusal of the same block
        // (a header list past max_header_bytes is a connection error, COMPRESSION/PROTOCOL).
        let code = v["goaway"].as_u64();
        assert!(code.is_some_and(|c| c != 0), "{kind}: {v}");
    }
    // The process still serves.
    let (code, _) = timed_get(&f.sy.url("/b/ok"));
    assert_eq!(code, "200");
    let m = reqwest::blocking::get(f.sy.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let flood =
        support::metrics::sample(&m, "switchyard_h2_goaway_total{reason=\"control_flood\"}");
    assert!(flood.is_some_and(|n| n >= 2.0), "{m}");
}

#[test]
fn oversized_header_lists_are_refused() {
    let f = fleet("max_header_bytes = 4096");
    let port = f.sy.http.port();
    let big = "x".repeat(6000);
    let r = requests(
        port,
        json!([{"path": "/b/big", "headers": [["x-big", big]]}]),
    );
    // The h2 crate answers 431 itself or resets the stream; either way nothing was forwarded.
    let st = r[0]["status"].as_u64().unwrap_or(0);
    assert!(st == 431 || r[0]["reset"].is_number(), "{r:?}");
    assert_eq!(f.b.hits(), 0);
}

#[test]
fn h2load_short_load_has_no_errors() {
    let f = fleet("");
    let out = Command::new("h2load")
        .args(["-n", "3000", "-c", "4", "-m", "25", "-T", "10"])
        .arg(f.sy.url("/b/small"))
        .output()
        .expect("h2load (Debian nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 3000 2xx"), "{text}");
    // Server-side count of HTTP/2 streams.
    let m = reqwest::blocking::get(f.sy.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let n = support::metrics::sample(&m, "switchyard_h2_streams_total").unwrap_or(0.0);
    assert!(n >= 3000.0, "{m}");
}

#[test]
fn max_concurrent_streams_is_announced_and_held() {
    let f = fleet("h2_max_concurrent_streams = 7");
    let out = Command::new("nghttp")
        .args(["-nv"])
        .arg(f.sy.url("/b/small"))
        .output()
        .expect("nghttp (Debian nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]"),
        "{text}"
    );
    // Twenty streams sent before our SETTINGS could arrive: seven are served, the rest
    // refused with REFUSED_STREAM (0x7), which tells a client it may retry them.
    let reqs: Vec<Value> = (0..20).map(|_| json!({"path": "/sleep/300"})).collect();
    let r = requests(f.sy.http.port(), json!(reqs));
    let ok = r.iter().filter(|x| x["status"] == 200).count();
    let refused = r.iter().filter(|x| x["reset"] == 7).count();
    assert_eq!((ok, refused), (7, 13), "{r:?}");
    // A client that respects the setting gets everything.
    let out = Command::new("h2load")
        .args(["-n", "40", "-c", "1", "-m", "7"])
        .arg(f.sy.url("/sleep/20"))
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("40 succeeded, 0 failed"), "{text}");
}

#[test]
fn drain_sends_goaway_and_in_flight_streams_finish() {
    let f = fleet("drain_timeout = 10");
    let url = f.sy.url("/sleep/1500");
    // h2load (nghttp2) keeps its streams through a graceful GOAWAY as RFC 9113 §6.8 says.
    let client = std::thread::spawn(move || {
        Command::new("h2load")
            .args(["-n", "4", "-c", "1", "-m", "4", "-T", "15"])
            .arg(url)
            .output()
            .expect("h2load")
    });
    assert!(wait_until(Duration::from_secs(5), || f.a.hits() == 4));
    f.sy.signal("TERM");
    let out = client.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 succeeded, 0 failed"), "{text}");
    assert!(text.contains("status codes: 4 2xx"), "{text}");
}

/// A client connection without streams for `idle_timeout` gets GOAWAY and is closed, counted
/// from its last stream: one that came since the timer was set keeps the connection open.
#[test]
fn an_idle_client_connection_is_closed_idle_timeout_after_its_last_stream() {
    let f = fleet("idle_timeout = 0.8\ndrain_timeout = 0.3");
    let v = py(json!({"op": "idle", "port": f.sy.http.port(), "at": [0.0, 0.5], "timeout": 5}));
    assert_eq!(v["statuses"], json!([200, 200]), "{v}");
    let goaway = v["goaway"]
        .as_f64()
        .unwrap_or_else(|| panic!("no GOAWAY: {v}"));
    // The last stream came at 0.5 s: not before 1.3 s (the timer was first set for 0.8 s).
    assert!((1.25..2.2).contains(&goaway), "{v}");
    assert!(
        v["eof"].as_f64().is_some_and(|e| e >= goaway && e < 3.5),
        "{v}"
    );
}

/// The guards hold over HTTP/2 exactly as over HTTP/1 (SPEC §3, §4): an encoded or
/// slash-doubled spelling of a keyed path still needs the key, `%2F` and dot segments are
/// 400, and a forged identity header under an `_` alias never reaches the backend.
#[test]
fn http2_streams_cannot_walk_around_a_permission() {
    let f = fleet("");
    let port = f.sy.http.port();
    let r = requests(
        port,
        json!([
            {"path": "/%6Beyed/x"},
            {"path": "//keyed/x"},
            {"path": "/keyed%2fx"},
            {"path": "/keyed/%2e%2E/x"},
        ]),
    );
    let statuses: Vec<i64> = r.iter().map(|x| x["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [401, 401, 400, 400], "{r:?}");
    assert_eq!(
        f.a.hits() + f.b.hits(),
        0,
        "a refused stream reached a backend"
    );
    // With the key, the canonical path is what the backend receives, and the forged
    // identity headers are gone.
    let r = requests(
        port,
        json!([{"path": "/%6Beyed//x", "headers": [
            ["x-api-key", "read-secret"],
            ["x_api_key_name", "ops"],
            ["x-api-key-name", "ops"],
        ]}]),
    );
    assert_eq!(r[0]["status"], 200, "{:?}", r[0]);
    let j: Value = serde_json::from_str(r[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(j["target"], "/keyed/x", "{j}");
    let h = &j["headers"];
    assert_eq!(h["x-api-key-name"], "reader", "{h}");
    assert!(h.get("x_api_key_name").is_none(), "{h}");
    assert!(h.get("x-api-key").is_none(), "{h}");
}

/// switchyard in front of an HTTP/2 (h2c) hyper backend and an HTTP/1.1 one.
fn h2c_fleet(goaway_after: usize) -> (Backend, Backend, Switchyard) {
    let h2 = Backend::start_h2("h2", goaway_after);
    let h1 = Backend::start("h1");
    let cfg = format!(
        r#"{listen}
[[backends]]
name = "h2"
addresses = ["{h2}"]
protocol = "h2c"

[[backends]]
name = "h1"
addresses = ["{h1}"]

[[routes]]
path = "/h2/*"
backend = "h2"
strip_prefix = "/h2"

[[routes]]
path = "/h1/*"
backend = "h1"
strip_prefix = "/h1"
"#,
        listen = listen_section(""),
        h2 = h2.address(),
        h1 = h1.address(),
    );
    let sy = Switchyard::start(&cfg);
    (h2, h1, sy)
}

#[test]
fn http1_client_to_an_h2c_backend_translates_the_head_and_streams_bodies() {
    let (h2, _h1, sy) = h2c_fleet(0);
    // An HTTP/1.1 request with connection-specific fields, a cookie and a chunked body with
    // trailers.
    let body = chunk_encode(b"hello world", 6);
    let body = body.strip_suffix(b"0\r\n\r\n").unwrap().to_vec();
    let mut req =
        ("POST /h2/form?x=1 HTTP/1.1\r\nHost: Svc.Test:81\r\nConnection: keep-alive, x-hop\r\n\
         X-Hop: 1\r\nKeep-Alive: timeout=5\r\nCookie: a=1; b=2\r\nTE: trailers\r\n\
         Transfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n")
            .as_bytes()
            .to_vec();
    req.extend_from_slice(&body);
    req.extend_from_slice(b"0\r\nx-sum: 42\r\n\r\n");
    let mut c = RawConn::connect(sy.http);
    c.send(&req).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["version"], "HTTP/2.0", "{j}");
    // Host became :authority, and no Host field went with it.
    assert_eq!(j["authority"], "Svc.Test:81", "{j}");
    assert_eq!(j["target"], "/form?x=1");
    let h = &j["headers"];
    for gone in [
        "connection",
        "keep-alive",
        "x-hop",
        "transfer-encoding",
        "trailer",
        "host",
    ] {
        assert!(h.get(gone).is_none(), "{gone}: {j}");
    }
    assert_eq!(j["cookies"], json!(["a=1; b=2"]));
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    // The one TE value HTTP/2 carries (RFC 9113 §8.2.2) reached the backend.
    assert_eq!(h["te"], "trailers", "{j}");
    assert_eq!(j["body_len"], 11);
    assert_eq!(j["body_fnv"], fnv(b"hello world").to_string());
    // The chunked trailer section became HTTP/2 trailers.
    assert_eq!(j["trailers"]["x-sum"], "42", "{j}");
    // Large answers, with a length and without, on the same keep-alive connection.
    for path in ["/h2/bytes/3000000", "/h2/chunked/2500000"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: svc.test\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200);
        let n: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(r.body.len(), n, "{path}");
        assert_eq!(fnv(&r.body), fnv(&pattern(n)), "{path}");
    }
    // TE: only its `trailers` member goes on, and nothing when the client sent none.
    for (te, seen) in [
        (
            "TE: deflate, trailers\r\nConnection: TE\r\n",
            Some("trailers"),
        ),
        ("TE: gzip\r\n", None),
        ("", None),
    ] {
        c.send(format!("GET /h2/te HTTP/1.1\r\nHost: svc.test\r\n{te}\r\n").as_bytes())
            .unwrap();
        let j = c.read_response(false).unwrap().json();
        assert_eq!(j["headers"]["te"].as_str(), seen, "{te:?}: {j}");
    }
    // Expect: 100-continue: HTTP/2 has nothing to forward it as; switchyard says 100 itself
    // at once (not after the 1 s it gives an HTTP/1.1 backend), then the body goes up.
    let t = std::time::Instant::now();
    c.send(b"PUT /h2/up HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let r = c.read_head().unwrap();
    assert_eq!(r.status, 100);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    c.send(b"12345").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["body_len"], 5, "{j}");
    assert!(j["headers"].get("expect").is_none(), "{j}");
    // One HTTP/2 connection carried all of it.
    assert_eq!(h2.connections(), 1);
}

#[test]
fn http2_client_to_an_h2c_backend_and_split_cookies_for_an_http1_one() {
    let (h2, h1, sy) = h2c_fleet(0);
    let port = sy.http.port();
    let r = requests(
        port,
        json!([
            {"path": "/h2/x", "authority": "api.test",
             "headers": [["cookie", "a=1"], ["cookie", "b=2"], ["te", "trailers"]]},
            {"path": "/h1/x", "authority": "api.test",
             "headers": [["cookie", "a=1"], ["cookie", "b=2"]]},
            {"path": "/h2/bytes/1000000"},
            {"path": "/h2/y", "authority": "api.test"},
            {"path": "/h1/y", "authority": "api.test", "headers": [["te", "trailers"]]}
        ]),
    );
    let j: Value = serde_json::from_str(r[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(j["version"], "HTTP/2.0");
    assert_eq!(j["authority"], "api.test");
    let joined = j["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(joined, "a=1; b=2");
    // `te: trailers` goes on to an HTTP/2 backend (RFC 9113 §8.2.2), and only when sent;
    // an HTTP/1.1 backend never gets it (hop-by-hop).
    assert_eq!(j["headers"]["te"], "trailers", "{j}");
    let y: Value = serde_json::from_str(r[3]["text"].as_str().unwrap()).unwrap();
    assert!(y["headers"].get("te").is_none(), "{y}");
    let y: Value = serde_json::from_str(r[4]["text"].as_str().unwrap()).unwrap();
    assert_eq!(y["version"], "HTTP/1.1");
    assert!(y["headers"].get("te").is_none(), "{y}");
    // The HTTP/1.1 backend gets one cookie field (RFC 9113 §8.2.3).
    let k: Value = serde_json::from_str(r[1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(k["version"], "HTTP/1.1");
    assert_eq!(k["cookies"], json!(["a=1; b=2"]), "{k}");
    assert_eq!(r[2]["status"], 200);
    assert_eq!(r[2]["len"], 1_000_000, "{:?}", r[2]);
    assert_eq!(h2.hits(), 3);
    assert_eq!(h1.hits(), 2);
}

#[test]
fn a_backend_goaway_is_replaced_by_a_new_connection_without_a_failed_request() {
    // Every backend connection says GOAWAY after its 5th request.
    let (h2, _h1, sy) = h2c_fleet(5);
    let c = client();
    for i in 0..40 {
        let r = c.get(sy.url(&format!("/h2/seq{i}"))).send().unwrap();
        assert_eq!(r.status(), 200, "request {i}: {}", sy.log_text());
    }
    // One request at a time: each connection carried exactly five.
    assert_eq!(h2.connections(), 8);
    // And concurrently: four clients, twenty requests each.
    let url = sy.url("/h2/par");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = format!("{url}{t}");
            std::thread::spawn(move || {
                let c = client();
                (0..20)
                    .filter(|_| {
                        c.get(&url)
                            .send()
                            .map(|r| r.status() == 200)
                            .unwrap_or(false)
                    })
                    .count()
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 80, "{}", sy.log_text());
    assert_eq!(h2.hits(), 120);
    // New connections replaced the ones that went away (a connection may finish more than
    // five when streams were in flight as its GOAWAY came).
    assert!(h2.connections() >= 8 + 80 / (5 + 4), "{}", h2.connections());
}

#[test]
fn h2load_through_an_h2c_backend_has_no_errors() {
    let (h2, _h1, sy) = h2c_fleet(0);
    let out = Command::new("h2load")
        .args(["-n", "3000", "-c", "4", "-m", "25", "-T", "10"])
        .arg(sy.url("/h2/small"))
        .output()
        .expect("h2load (Debian nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 3000 2xx"), "{text}");
    assert_eq!(h2.hits(), 3000);
    // 100 streams at once (4 x 25) went over a few multiplexed backend connections.
    assert!(h2.connections() <= 4, "{}", h2.connections());
}

#[test]
fn shards_and_registrations_reach_h2c_backends() {
    let pods = [Backend::start_h2("p0", 0), Backend::start_h2("p1", 0)];
    let reg = Backend::start_h2("reg", 0);
    let cfg = format!(
        r#"{listen}
[[shards]]
name = "guilds"
path = "/guilds/*"
key = "header:X-Guild-Id"
addresses = ["{p0}", "{p1}"]
protocol = "h2c"
"#,
        listen = listen_section(""),
        p0 = pods[0].address(),
        p1 = pods[1].address(),
    );
    let sy = Switchyard::start(&cfg);
    let c = client();
    let mut seen = std::collections::HashMap::new();
    for g in 0..20 {
        let r = c
            .get(sy.url("/guilds/x"))
            .header("X-Guild-Id", g.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().unwrap();
        assert_eq!(j["version"], "HTTP/2.0");
        // The shard header went on to the pod.
        let shard = j["headers"]["x-shard"].as_str().unwrap().to_string();
        let pod = j["backend"].as_str().unwrap().to_string();
        assert_eq!(*seen.entry(g).or_insert_with(|| pod.clone()), pod);
        assert_eq!(pod, format!("p{shard}"), "{j}");
    }
    assert!(pods.iter().all(|p| p.hits() > 0));
    // A registration naming its protocol.
    let r = c
        .post(sy.admin_url("/internal/register-service"))
        .json(
            &json!({"service": "h2svc", "url": format!("http://{}", reg.address()),
                      "protocol": "h2c", "routes": [{"path": "/svc/*"}]}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let ok = wait_until(Duration::from_secs(10), || {
        c.get(sy.url("/svc/x"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(ok, "{}", sy.log_text());
    let j: Value = c.get(sy.url("/svc/x")).send().unwrap().json().unwrap();
    assert_eq!(
        (j["backend"].as_str(), j["version"].as_str()),
        (Some("reg"), Some("HTTP/2.0"))
    );
    // Its health checks went over HTTP/2 too (the hyper backend speaks nothing else).
    assert!(reg.health_hits() > 0);
    // A registration with a protocol that does not exist is refused, naming the field.
    let r = c
        .post(sy.admin_url("/internal/register-service"))
        .json(
            &json!({"service": "bad", "url": "http://127.0.0.1:1", "protocol": "spdy",
                      "routes": [{"path": "/bad/*"}]}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("protocol"));
}

#[test]
fn a_backends_max_concurrent_streams_opens_more_connections_up_to_the_bound() {
    // Two streams per connection: eight slow requests at once need four connections, and
    // four is the bound, so twelve still use four (the rest wait for a free stream).
    let h2 = Backend::start_h2_with("h2", 0, Some(2));
    let cfg = format!(
        "{listen}[[backends]]\nname = \"h2\"\naddresses = [\"{a}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath = \"/*\"\nbackend = \"h2\"\n",
        listen = listen_section(""),
        a = h2.address(),
    );
    let sy = Switchyard::start(&cfg);
    // One request first, so that the backend's SETTINGS are known.
    assert_eq!(client().get(sy.url("/warm")).send().unwrap().status(), 200);
    let run = |n: usize| {
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let url = sy.url("/sleep/800");
                std::thread::sleep(Duration::from_millis(20));
                std::thread::spawn(move || {
                    let r = client().get(&url).send().unwrap();
                    (i, r.status().as_u16())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|(_, s)| *s == 200)
            .count()
    };
    assert_eq!(run(8), 8);
    assert_eq!(h2.connections(), 4);
    assert_eq!(run(12), 12);
    assert_eq!(h2.connections(), 4, "at most four connections per address");
}

#[test]
fn an_idle_backend_connection_is_not_reused_after_idle_timeout() {
    let h2 = Backend::start_h2("h2", 0);
    let cfg = format!(
        "{listen}[[backends]]\nname = \"h2\"\naddresses = [\"{a}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath = \"/*\"\nbackend = \"h2\"\n",
        listen = listen_section("idle_timeout = 0.6"),
        a = h2.address(),
    );
    let sy = Switchyard::start(&cfg);
    let get = || client().get(sy.url("/x")).send().unwrap().status();
    assert_eq!(get(), 200);
    assert_eq!(get(), 200);
    assert_eq!(h2.connections(), 1, "reused while fresh");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(get(), 200);
    assert_eq!(h2.connections(), 2, "a new connection after idle_timeout");
    assert_eq!(h2.hits(), 3);
}
