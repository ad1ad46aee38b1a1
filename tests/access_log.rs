//! The access log (SPEC §12) end to end: every JSON field with the values the client and the
//! backend saw (byte counts counted on the client's socket), the query left out unless asked
//! for, the tunnel's closing line, rotation on SIGHUP (rename, signal, new lines in a new
//! file), and a reload to an unopenable path refused. Every test is bounded in time.
mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;
use support::*;

fn log_path(sy: &Switchyard) -> PathBuf {
    sy.config_path.parent().unwrap().join("access.log")
}

/// The log's lines once it has at least `n` (parsed as JSON when `json`).
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        got.len() >= n
    });
    assert!(
        got.len() >= n,
        "{} line(s) in {}: {got:?}",
        got.len(),
        path.display()
    );
    got
}

/// Sends `req` on a fresh connection and reads until the server closes; the raw bytes.
fn exchange(sy: &Switchyard, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(sy.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn config(server: &str, rest: &str) -> String {
    format!(
        "{}{rest}",
        listen_section(&format!("access_log_path = \"access.log\"\n{server}"))
    )
}

#[test]
fn every_json_field_end_to_end() {
    let b = Backend::start("a");
    let rest = format!(
        "[[backends]]\nname = \"pool\"\naddresses = [\"{}\"]\n\n\
         [[routes]]\npath = \"/api/*\"\nbackend = \"pool\"\npermission = \"p:read\"\n\n\
         [[api_keys]]\nname = \"reader\"\nkey = \"secret-key\"\npermissions = [\"p:read\"]\n",
        b.address()
    );
    let sy = Switchyard::start(&config("access_log_format = \"json\"", &rest));
    let req = b"POST /api/x?token=hunter2 HTTP/1.1\r\nHost: example.test\r\n\
User-Agent: sy-test/1 \"quoted\"\r\nX-API-Key: secret-key\r\nX-Request-Id: rid-abc-123\r\n\
Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    let answer = exchange(&sy, req);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // An answer of switchyard's own, without a route: the nulls.
    let req404 = b"GET /nowhere HTTP/1.0\r\n\r\n";
    let answer404 = exchange(&sy, req404);
    assert!(answer404.starts_with(b"HTTP/1.0 404") || answer404.starts_with(b"HTTP/1.1 404"));

    let got = lines(&log_path(&sy), 2);
    assert_eq!(got.len(), 2, "{got:?}");
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("a JSON line");
    let keys = [
        "ts",
        "request_id",
        "client",
        "method",
        "host",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "rule",
        "upstream",
        "attempts",
        "api_key_name",
        "user_agent",
        "tls",
    ];
    let obj = v.as_object().unwrap();
    for k in keys {
        assert!(obj.contains_key(k), "{k} missing: {v}");
    }
    assert_eq!(obj.len(), keys.len(), "{v}");
    // RFC 3339 with milliseconds, UTC.
    let ts = v["ts"].as_str().unwrap();
    assert_eq!(ts.len(), "2025-11-14T20:30:00.123Z".len(), "{ts}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
        "{ts}"
    );
    assert!(ts[..4].parse::<u32>().unwrap() >= 2025);
    assert_eq!(v["request_id"], "rid-abc-123");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["host"], "example.test");
    assert_eq!(v["path"], "/api/x", "the query is left out by default");
    assert!(!got[0].contains("hunter2"));
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], req.len() as u64, "head and body as sent");
    assert_eq!(
        v["bytes_out"],
        answer.len() as u64,
        "what reached the client"
    );
    let (d, u) = (
        v["duration_ms"].as_f64().unwrap(),
        v["upstream_ms"].as_f64().unwrap(),
    );
    assert!(u > 0.0 && d >= u, "duration {d} upstream {u}");
    assert_eq!(v["rule"], "/api/*");
    assert_eq!(v["upstream"], b.address());
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["api_key_name"], "reader");
    assert_eq!(v["user_agent"], "sy-test/1 \"quoted\"");
    assert_eq!(v["tls"], serde_json::Value::Null);

    let v: serde_json::Value = serde_json::from_str(&got[1]).expect("a JSON line");
    assert_eq!(v["status"], 404);
    assert_eq!(v["protocol"], "HTTP/1.0");
    assert_eq!(v["path"], "/nowhere");
    assert_eq!(v["bytes_in"], req404.len() as u64);
    assert_eq!(v["bytes_out"], answer404.len() as u64);
    assert_eq!(v["attempts"], 0);
    for k in [
        "host",
        "upstream_ms",
        "rule",
        "upstream",
        "api_key_name",
        "user_agent",
        "tls",
    ] {
        assert_eq!(v[k], serde_json::Value::Null, "{k}: {v}");
    }
    assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
}

#[test]
fn a_tunnel_gets_a_closing_line_with_its_bytes() {
    let b = Backend::start("ws");
    let sy = Switchyard::start(&config(
        "access_log_format = \"json\"",
        &targets_toml(&[b.address()]),
    ));
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c.send(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\nX-Request-Id: tun-1\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_head().expect("101").status, 101);
    let msg = b"twenty bytes of echo";
    for _ in 0..3 {
        c.send(msg).unwrap();
        assert_eq!(c.read_exact_bytes(msg.len()).unwrap(), msg);
    }
    let first = lines(&log_path(&sy), 1);
    let v: serde_json::Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(v["status"], 101);
    assert_eq!(v["request_id"], "tun-1");
    assert!(v.get("event").is_none(), "{v}");
    drop(c);
    let got = lines(&log_path(&sy), 2);
    let v: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(v["event"], "tunnel_closed", "{v}");
    assert_eq!(v["request_id"], "tun-1");
    assert_eq!(v["status"], 101);
    assert_eq!(v["bytes_in"], 3 * msg.len() as u64);
    assert_eq!(v["bytes_out"], 3 * msg.len() as u64);
    assert_eq!(v["upstream"], b.address());
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn sighup_reopens_the_file_after_rotation() {
    let b = Backend::start("a");
    let sy = Switchyard::start(&config(
        "access_log_query = true",
        &targets_toml(&[b.address()]),
    ));
    let path = log_path(&sy);
    let get = |p: &str| {
        let r = client().get(sy.url(p)).send().unwrap();
        assert_eq!(r.status(), 200);
    };
    get("/before?q=1");
    let got = lines(&path, 1);
    assert!(
        got[0].contains("\"GET /before?q=1 HTTP/1.1\" 200"),
        "{got:?}"
    );
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    // Until the signal, lines follow the open file to its new name.
    get("/between");
    assert_eq!(lines(&rotated, 2).len(), 2);
    sy.signal("HUP");
    assert!(
        sy.wait_log("reloaded", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    get("/after");
    let new = lines(&path, 1);
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("/after"), "{new:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 2, "{old}");
    assert!(!old.contains("/after"));
}

#[test]
fn a_reload_to_an_unopenable_path_is_refused_and_logging_goes_on() {
    let b = Backend::start("a");
    let sy = Switchyard::start(&config("", &targets_toml(&[b.address()])));
    let path = log_path(&sy);
    let cfg = std::fs::read_to_string(&sy.config_path).unwrap().replace(
        "access_log_path = \"access.log\"",
        "access_log_path = \"no-such-dir/access.log\"",
    );
    std::fs::write(&sy.config_path, cfg).unwrap();
    sy.signal("HUP");
    assert!(
        sy.wait_log("reload refused", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    assert!(sy.log_text().contains("no-such-dir/access.log"));
    assert_eq!(client().get(sy.url("/x")).send().unwrap().status(), 200);
    assert!(lines(&path, 1)[0].contains("/x"));
}
