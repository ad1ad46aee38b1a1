//! Issue 12, data plane, over real sockets: every vector found in the adversarial pass, sent
//! byte for byte by a raw client, against backends that record exactly what they received.
mod support;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const KEY: &str = "ops-secret";

/// An app behind the catch-all, the same app behind `/admin/*` with a permission, a key for
/// it, and `server` extra keys.
fn setup(server_extra: &str) -> (Backend, Switchyard) {
    let app = Backend::start("app");
    let cfg = format!(
        "{}{}[[backends]]\nname = \"app\"\naddresses = [\"{a}\"]\n\n[[routes]]\npath = \"/admin/*\"\nbackend = \"app\"\npermission = \"admin\"\n\n[[api_keys]]\nname = \"ops\"\nkey = \"{KEY}\"\npermissions = [\"admin\"]\n",
        listen_section(server_extra),
        targets_toml(&[app.address()]),
        a = app.address()
    );
    let sy = Switchyard::start(&cfg);
    (app, sy)
}

fn send(sy: &Switchyard, raw: &str) -> RawResponse {
    let mut c = RawConn::connect(sy.http);
    c.send(raw.as_bytes()).unwrap();
    c.read_response(false).expect("an answer")
}

fn get(sy: &Switchyard, target: &str, extra: &str) -> RawResponse {
    send(
        sy,
        &format!("GET {target} HTTP/1.1\r\nHost: good.example\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// The last request head the backend recorded.
fn last_seen(b: &Backend) -> (String, String, Vec<(String, String)>) {
    b.stats
        .seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("backend saw a request")
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn refused_400(sy: &Switchyard, app: &Backend, r: RawResponse, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}\n{}", r.head, r.text());
    assert_eq!(r.json()["error"], "bad_request", "{what}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(app.hits(), 0, "{what} reached the backend");
    let _ = sy;
}

#[test]
fn encoded_and_doubled_paths_cannot_skip_the_permission() {
    let (app, sy) = setup("");
    // Same URI as /admin/x (RFC 3986 §6.2.2.2), and merged slashes: the permission applies.
    for t in [
        "/%61dmin/x",
        "//admin/x",
        "/%61%64%6D%69%6E//x",
        "/admin//x",
    ] {
        let r = get(&sy, t, "");
        assert_eq!(r.status, 401, "{t}: {}", r.text());
    }
    assert_eq!(app.hits(), 0);
    // With the key, the backend gets the canonical path, the query exactly as sent.
    let r = get(
        &sy,
        "/%61dmin//x%7e?a=%2f&b=%7E",
        &format!("X-API-Key: {KEY}\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, target, h) = last_seen(&app);
    assert_eq!(target, "/admin/x~?a=%2f&b=%7E");
    assert_eq!(header(&h, "x-api-key-name"), ["ops"]);
    // Other escapes are kept, hex uppercased.
    let r = get(&sy, "/pub/%c3%a9%20x", "");
    assert_eq!(r.status, 200);
    assert_eq!(last_seen(&app).1, "/pub/%C3%A9%20x");
}

#[test]
fn slash_backslash_fragment_nul_dots_and_bad_escapes_are_400() {
    let (app, sy) = setup("");
    for t in [
        "/admin%2fx",
        "/admin%2Fx",
        "/admin%5cx",
        "/admin\\x",
        "/pub#/../admin/x",
        "/pub?x#/../admin",
        "/pub/%2e%2E/admin/x",
        "/pub/./x",
        "/pub/../admin/x",
        "/pub%00x",
        "/%G1",
        "/%4",
    ] {
        let r = get(&sy, t, &format!("X-API-Key: {KEY}\r\n"));
        refused_400(&sy, &app, r, t);
    }
}

#[test]
fn patterns_that_never_match_a_canonical_path_are_config_errors() {
    let dir = TempDir::new("canon-check");
    let cfg = dir.0.join("c.toml");
    std::fs::write(
        &cfg,
        "[[backends]]\nname = \"b\"\naddresses = [\"127.0.0.1:1\"]\n\n[[routes]]\npath = \"/a/../b\"\nbackend = \"b\"\n\n[[routes]]\npath = \"/%61dmin/*\"\nbackend = \"b\"\n\n[[path_routes]]\npath = \"/files%2fx\"\naddress = \"127.0.0.1:1\"\n\n[[shards]]\nname = \"g\"\npath = \"/g/./*\"\nkey = \"path:1\"\npods = 1\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        ":6: routes[0].path",
        ":10: routes[1].path",
        ":14: path_routes[0].path",
        ":19: shards[0].path",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    assert!(text.contains("write \"/admin/*\""), "{text}");

    // A registration with such a route is a 400 naming the field.
    let (app, sy) = setup("");
    let body = serde_json::json!({"service": "s", "url": format!("http://{}", app.addr),
        "routes": [{"path": "/ok/*"}, {"path": "/x/%2e%2e/*"}]});
    let r = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("routes[1].path"),
        "{v}"
    );
}

#[test]
fn connect_only_in_authority_form_and_only_where_allowed() {
    let (app, sy) = setup("");
    // Origin-form CONNECT, then a forged identity on the same connection: a 400 and a close;
    // nothing reaches the app.
    let mut c = RawConn::connect(sy.http);
    c.send(b"CONNECT /pub HTTP/1.1\r\nHost: good.example\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: good.example\r\nX-Api-Key-Name: ops\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(c.closed_within(Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(app.hits(), 0);
    assert_eq!(
        app.stats
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Authority-form, but the rule (the catch-all) does not list CONNECT: 405.
    let r = send(
        &sy,
        "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    );
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.json()["error"], "method_not_allowed");
    assert_eq!(app.hits(), 0);
}

#[test]
fn connect_tunnels_on_a_route_that_lists_it() {
    let tunnel = RawBackend::start(|mut s| {
        let head = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
        let _ = s.write_all(&head);
        let mut b = [0u8; 64];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 || s.write_all(&b[..n]).is_err() {
                break;
            }
        }
    });
    let app = Backend::start("app");
    let sy = Switchyard::start(&format!(
        "{}{}[[backends]]\nname = \"t\"\naddresses = [\"{}\"]\n\n[[routes]]\npath = \"/\"\nmethods = [\"CONNECT\"]\nbackend = \"t\"\n",
        listen_section("via_name = \"fleet-t\""),
        targets_toml(&[app.address()]),
        tunnel.address()
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
        .unwrap();
    let r = c.read_head().unwrap();
    assert_eq!(r.status, 200);
    // The backend echoes the head it received first, then our bytes.
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        got.extend(c.read_exact_bytes(1).unwrap());
    }
    let head = String::from_utf8_lossy(&got);
    assert!(
        head.starts_with("CONNECT db.internal:5432 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nVia: 1.1 fleet-t\r\n"), "{head}");
    c.send(b"ping").unwrap();
    assert_eq!(c.read_exact_bytes(4).unwrap(), b"ping");
    // GET on the CONNECT-only route is not routed there (only other methods match: 404).
    let r = get(&sy, "/", "");
    assert_eq!(r.status, 404);
}

#[test]
fn underscore_names_and_every_spelling_of_asserted_headers_are_dropped() {
    let forged = "X_Api_Key_Name: ops\r\nx-api-key-name: ops\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\nX_Forwarded_Host: evil\r\nX-Shard: 9\r\nX_Shard: 9\r\nX-Retry-Attempt: 7\r\nX_Request_Id: forged\r\nX_Custom: c\r\nX-Fine: f\r\n";
    let check = |h: &[(String, String)]| {
        for (k, v) in h {
            assert!(
                !["ops", "6.6.6.6", "gopher", "evil", "9", "7", "forged"].contains(&v.as_str()),
                "forged {k}: {v} reached the backend"
            );
        }
        assert_eq!(header(h, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(header(h, "x-forwarded-proto"), ["http"]);
        assert_eq!(header(h, "x-fine"), ["f"]);
        assert!(header(h, "x-api-key-name").is_empty());
    };
    // Default: drop.
    let (app, sy) = setup("");
    assert_eq!(get(&sy, "/pub", forged).status, 200);
    let (_, _, h) = last_seen(&app);
    check(&h);
    assert!(h.iter().all(|(k, _)| !k.contains('_')), "{h:?}");
    drop(sy);
    // allow: other `_` names pass, spellings of asserted ones still do not.
    let (app, sy) = setup("underscore_headers = \"allow\"");
    assert_eq!(get(&sy, "/pub", forged).status, 200);
    let (_, _, h) = last_seen(&app);
    check(&h);
    assert_eq!(header(&h, "x_custom"), ["c"]);
    assert_eq!(
        h.iter().filter(|(k, _)| k.contains('_')).count(),
        1,
        "{h:?}"
    );
    drop(sy);
    // reject: 400.
    let (app, sy) = setup("underscore_headers = \"reject\"");
    let r = get(&sy, "/pub", "X_Custom: c\r\n");
    refused_400(&sy, &app, r, "underscore with reject");
}

#[test]
fn absolute_form_authority_is_the_host_and_bad_hosts_are_400() {
    let (app, sy) = setup("");
    let r = get(&sy, "http://evil.example/p?q", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, target, h) = last_seen(&app);
    assert_eq!(target, "/p?q");
    assert_eq!(header(&h, "host"), ["evil.example"]);
    assert_eq!(header(&h, "x-forwarded-host"), ["evil.example"]);
    assert_eq!(app.hits(), 1);
    for host in ["a/b", "a@b", "a b", "", "x:notaport", "u@good.example"] {
        let r = send(
            &sy,
            &format!("GET /p HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 400, "Host {host:?}: {}", r.text());
    }
    let r = get(&sy, "http://user@evil.example/p", "");
    assert_eq!(r.status, 400, "userinfo: {}", r.text());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(app.hits(), 1, "an invalid host reached the backend");
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_backend_that_is_switchyard_itself_never_loops() {
    // The data port is the catch-all target: refused at connect (503), no connection opened.
    let port = dead_port();
    let sy = Switchyard::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[backends]]\nname = \"self\"\naddresses = [\"localhost:{port}\"]\n\n[[routes]]\npath = \"/by-name/*\"\nbackend = \"self\"\n\n{}",
        targets_toml(&[format!("127.0.0.1:{port}")])
    ));
    let before = fds(sy.pid());
    let r = get(&sy, "/x", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("own listeners"), "{}", r.text());
    // Named, without the address (SPEC §11: error bodies carry no internals).
    assert!(!r.text().contains(&port.to_string()), "{}", r.text());
    // By name (localhost may also resolve to ::1, where nothing listens: 503 either way).
    let r = get(&sy, "/by-name/x", "");
    assert_eq!(r.status, 503, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    let after = fds(sy.pid());
    assert!(after <= before + 2, "fds {before} -> {after}");
}

#[test]
fn an_http2_backend_that_is_switchyard_itself_never_loops() {
    // The plain listener speaks h2c by default, so an `h2c` backend on it would be a loop of
    // HTTP/2 streams: the HTTP/2 pool opens its connections through the same refusal.
    let port = dead_port();
    let sy = Switchyard::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[backends]]\nname = \"self\"\naddresses = [\"127.0.0.1:{port}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath = \"/h2/*\"\nbackend = \"self\"\n"
    ));
    let before = fds(sy.pid());
    for _ in 0..3 {
        let r = get(&sy, "/h2/x", "");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("own listeners"), "{}", r.text());
        assert!(!r.text().contains(&port.to_string()), "{}", r.text());
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = fds(sy.pid());
    assert!(after <= before + 2, "fds {before} -> {after}");
}

#[test]
fn a_request_that_comes_back_to_the_fleet_is_508() {
    // Two processes of one fleet (same via_name), each forwarding /loop/* to the other: the
    // second hop sees the marker and answers 508, which comes back to the client.
    let port_a = dead_port();
    let port_b = (0..100)
        .map(|_| dead_port())
        .find(|p| *p != port_a)
        .unwrap();
    let cfg = |me: u16, other: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{me}\"\nvia_name = \"fleet-one\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
            targets_toml(&[format!("127.0.0.1:{other}")])
        )
    };
    let a = Switchyard::start(&cfg(port_a, port_b));
    let b = Switchyard::start(&cfg(port_b, port_a));
    let (fa, fb) = (fds(a.pid()), fds(b.pid()));
    let r = get(&a, "/loop", "");
    assert_eq!(r.status, 508, "{}", r.text());
    assert_eq!(r.json()["error"], "loop_detected");
    // A client that sends the marker itself gets the same, and nothing is forwarded.
    let r = get(&b, "/x", "Via: 1.0 somewhere, 1.1 fleet-one\r\n");
    assert_eq!(r.status, 508);
    std::thread::sleep(Duration::from_millis(200));
    let (fa2, fb2) = (fds(a.pid()), fds(b.pid()));
    assert!(
        fa2 <= fa + 3 && fb2 <= fb + 3,
        "fds a {fa}->{fa2}, b {fb}->{fb2}"
    );
}

#[test]
fn two_fleets_with_default_markers_chain_without_508() {
    // Default via_name differs per fleet (here: per store file), so an edge switchyard in
    // front of another one works, and the backend sees both hops.
    let app = Backend::start("app");
    let inner = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[app.address()])
    ));
    let edge = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[inner.http.to_string()])
    ));
    let r = get(&edge, "/chain", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, _, h) = last_seen(&app);
    let via = header(&h, "via").join(", ");
    let hops: Vec<&str> = via.split(',').map(str::trim).collect();
    assert_eq!(hops.len(), 2, "{via}");
    assert_ne!(hops[0], hops[1], "{via}");
    assert!(
        hops.iter().all(|h| h.starts_with("1.1 switchyard-")),
        "{via}"
    );
}

#[test]
fn forbidden_trailer_fields_are_dropped_both_ways() {
    // Request direction: the hyper backend reports the trailers it got.
    let (_app, sy) = setup("");
    let mut c = RawConn::connect(sy.http);
    c.send(b"POST /pub HTTP/1.1\r\nHost: good.example\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 99\r\nHost: evil\r\nX-Api-Key-Name: ops\r\nX_Forwarded_For: 6.6.6.6\r\nAuthorization: Basic Zm9vOmJhcg==\r\nX-Checksum: ok\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["body_len"], 5);
    let t = v["trailers"].as_object().expect("trailers");
    assert_eq!(t.keys().collect::<Vec<_>>(), ["x-checksum"], "{t:?}");

    // Response direction: a raw backend sends forbidden trailers; the client gets only the
    // allowed one.
    let up = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\nSet-Cookie: session=stolen\r\nContent-Length: 1\r\nTransfer-Encoding: gzip\r\nX-Checksum: fine\r\n\r\n");
    });
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[up.address()])
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body, "2\r\nok\r\n0\r\nX-Checksum: fine\r\n\r\n", "{raw}");
}

/// A raw connection from a given loopback source address.
fn connect_from(src: &str, to: SocketAddr) -> RawConn {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    RawConn::from_stream(stream)
}

fn key_request(c: &mut RawConn, key: Option<&str>, path: &str) -> RawResponse {
    let k = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{k}\r\n").as_bytes())
        .unwrap();
    c.read_response(false).unwrap()
}

#[test]
fn failed_key_checks_are_rate_limited_per_address() {
    let (app, sy) = setup("");
    let mut c = connect_from("127.0.0.1", sy.http);
    for i in 0..20 {
        let r = key_request(&mut c, Some(&format!("guess-{i}")), "/admin/x");
        assert_eq!(r.status, 401, "guess {i}: {}", r.text());
    }
    // Past 20 failures in the minute every key is a 429, the right one too: a guesser cannot
    // tell a hit.
    let r = key_request(&mut c, Some("guess-21"), "/admin/x");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(key_request(&mut c, Some(KEY), "/admin/x").status, 429);
    // No key is no guess: still 401. Routes without a permission are untouched.
    assert_eq!(key_request(&mut c, None, "/admin/x").status, 401);
    assert_eq!(key_request(&mut c, None, "/pub").status, 200);
    // Another source address is not affected.
    let mut other = connect_from("127.0.0.2", sy.http);
    assert_eq!(key_request(&mut other, Some(KEY), "/admin/x").status, 200);
    assert_eq!(
        key_request(&mut other, Some("nope"), "/admin/x").status,
        401
    );
    assert_eq!(app.hits(), 2);
    drop(sy);

    // Configurable.
    let (_app, sy) = setup("auth_failure_limit = 2");
    let mut c = connect_from("127.0.0.1", sy.http);
    assert_eq!(key_request(&mut c, Some("a"), "/admin/x").status, 401);
    assert_eq!(key_request(&mut c, Some("b"), "/admin/x").status, 401);
    assert_eq!(key_request(&mut c, Some(KEY), "/admin/x").status, 429);
}
