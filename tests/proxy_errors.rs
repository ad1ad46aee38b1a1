//! Black-box failure tests (SPEC §4 error table): JSON errors, connect retries without replays,
//! timeouts, broken backends and oversized heads, each bounded in time.
mod support;
use std::io::Write;
use std::time::{Duration, Instant};
use support::*;

fn assert_json_error(r: &RawResponse, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{}\n{}", r.head, r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-gateway"), Some("switchyard"));
    let v = r.json();
    assert_eq!(v["error"], code, "{}", r.text());
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(v["request_id"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(v["request_id"].as_str(), r.header("x-request-id"));
    v
}

fn get(sy: &Switchyard, head: &str) -> RawResponse {
    let mut c = RawConn::connect(sy.http);
    c.send(head.as_bytes()).unwrap();
    c.read_response(false).expect("response")
}

#[test]
fn no_route_is_a_json_404_echoing_the_request_id() {
    let b = Backend::start("only");
    let cfg = format!(
        "{}[[path_routes]]\npath = \"/api\"\naddress = \"{}\"\n",
        listen_section(""),
        b.address()
    );
    let sy = Switchyard::start(&cfg);
    let r = get(
        &sy,
        "GET /nothing HTTP/1.1\r\nHost: t\r\nX-Request-Id: client-rid-42\r\n\r\n",
    );
    let v = assert_json_error(&r, 404, "no_route");
    assert_eq!(v["request_id"], "client-rid-42");
    // Without one, an id is generated, and each request gets its own.
    let r1 = get(&sy, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
    let r2 = get(&sy, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
    let v1 = assert_json_error(&r1, 404, "no_route");
    let v2 = assert_json_error(&r2, 404, "no_route");
    assert_ne!(v1["request_id"], v2["request_id"]);
    assert_eq!(b.hits(), 0);
}

#[test]
fn unreachable_pool_is_a_json_503_and_never_falls_through() {
    let live = Backend::start("catch-all");
    let cfg = format!(
        "{}{}[[backends]]\nname = \"gone\"\naddresses = [\"127.0.0.1:{}\"]\n\n[[routes]]\npath = \"/svc/*\"\nbackend = \"gone\"\n",
        listen_section(""),
        targets_toml(&[live.address()]),
        dead_port()
    );
    let sy = Switchyard::start(&cfg);
    let r = get(
        &sy,
        "GET /svc/x HTTP/1.1\r\nHost: t\r\nX-Request-Id: rid-503\r\n\r\n",
    );
    let v = assert_json_error(&r, 503, "service_unavailable");
    assert_eq!(v["request_id"], "rid-503");
    assert_eq!(live.hits(), 0, "a 503 route fell through to the catch-all");
}

#[test]
fn pool_with_only_down_addresses_is_503() {
    let sick = Backend::start("sick");
    sick.set_health(500);
    let live = Backend::start("catch-all");
    let cfg = format!(
        "{}{}[gateway]\nhealth_check_interval = 0.1\nmax_consecutive_failures = 1\n\n[[backends]]\nname = \"sick\"\naddresses = [\"{}\"]\nhealth_check_endpoint = \"/health\"\n\n[[routes]]\npath = \"/svc/*\"\nbackend = \"sick\"\n",
        listen_section(""),
        targets_toml(&[live.address()]),
        sick.address()
    );
    let sy = Switchyard::start(&cfg);
    assert!(
        sy.wait_log("is DOWN", Duration::from_secs(3)),
        "{}",
        sy.log_text()
    );
    let r = get(&sy, "GET /svc/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_json_error(&r, 503, "service_unavailable");
    assert_eq!(sick.hits(), 0);
    assert_eq!(live.hits(), 0);
}

#[test]
fn connection_refused_moves_to_the_next_target() {
    let live = Backend::start("live");
    let dead = format!("127.0.0.1:{}", dead_port());
    let cfg = format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[dead, live.address()])
    );
    let sy = Switchyard::start(&cfg);
    let c = client();
    for i in 0..8 {
        let r = c.get(sy.url(&format!("/r/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(live.hits(), 8);
}

/// A backend that reads a request head and hangs up without answering.
fn hang_up_backend() -> RawBackend {
    RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
    })
}

#[test]
fn a_request_that_reached_a_backend_is_never_replayed() {
    let rude = hang_up_backend();
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[rude.address()])
    ));
    let r = get(
        &sy,
        "POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_json_error(&r, 502, "bad_gateway");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rude.accepted(), 1, "the request was sent again");

    // With a healthy second target, a failure after sending is still a 502, not a retry.
    let live = Backend::start("live");
    let rude = hang_up_backend();
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[rude.address(), live.address()])
    ));
    let mut bad = 0;
    for _ in 0..6 {
        // A POST without Idempotency-Key: never retried once sent (GETs are, SPEC §11,
        // tests/resilience.rs).
        let r = get(
            &sy,
            "POST /once HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        match r.status {
            200 => {}
            502 => bad += 1,
            s => panic!("unexpected {s}"),
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(bad > 0, "round robin never chose the hanging-up backend");
    assert_eq!(rude.accepted(), bad);
    assert_eq!(live.hits(), 6 - bad);
}

#[test]
fn slow_backend_is_a_504_within_upstream_timeout() {
    let b = Backend::start("slow");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section("upstream_timeout = 0.3"),
        targets_toml(&[b.address()])
    ));
    let started = Instant::now();
    let r = get(&sy, "GET /sleep/2000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let took = started.elapsed();
    assert_json_error(&r, 504, "gateway_timeout");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn backend_closing_mid_body_closes_the_client_connection() {
    let b = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    });
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    c.send(b"GET /short HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let started = Instant::now();
    match c.read_response(false) {
        // The head may not have gone out yet: then a 502 is the honest answer.
        Ok(r) => assert_eq!(r.status, 502, "a truncated body was delivered as complete"),
        // Otherwise the client must see the connection end, not wait for 90 more bytes.
        Err(e) => assert_eq!(e, WireError::Closed),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn invalid_response_head_is_a_502() {
    let b = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
    });
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    let r = get(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_json_error(&r, 502, "bad_gateway");
}

#[test]
fn slow_head_is_a_408_and_the_connection_closes() {
    let b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section("request_header_timeout = 0.3"),
        targets_toml(&[b.address()])
    ));
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    let started = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Half").unwrap();
    let r = c.read_response(false).expect("408");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_json_error(&r, 408, "request_timeout");
    assert!(c.closed_within(Duration::from_secs(2)));
    assert_eq!(b.hits(), 0);
}

#[test]
fn long_request_line_is_414_and_big_head_is_431() {
    let b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section("max_header_bytes = 1024"),
        targets_toml(&[b.address()])
    ));
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    assert_json_error(&get(&sy, &long), 414, "uri_too_long");
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    assert_json_error(&get(&sy, &big), 431, "headers_too_large");
    // Just under the limit still works.
    let fits = format!(
        "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(900)
    );
    assert_eq!(get(&sy, &fits).status, 200);
    assert_eq!(b.hits(), 1);
}

#[test]
fn error_answer_to_head_has_no_body() {
    let b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}[[path_routes]]\npath = \"/api\"\naddress = \"{}\"\n",
        listen_section(""),
        b.address()
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"HEAD /nothing HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.read_response(true).expect("404 head");
    assert_eq!(r.status, 404);
    // A body after a HEAD answer would be read as the start of the next response.
    c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("next response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["target"], "/api/x");
}

#[test]
fn big_body_to_a_missing_route_still_gets_its_404() {
    let b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}[[path_routes]]\npath = \"/api\"\naddress = \"{}\"\n",
        listen_section(""),
        b.address()
    ));
    for _ in 0..3 {
        let r = client()
            .post(sy.url("/nothing"))
            .body(vec![b'x'; 4 << 20])
            .send()
            .expect("the 404, not a reset");
        assert_eq!(r.status(), 404);
    }
    assert_eq!(b.hits(), 0);
}

#[test]
fn keep_alive_goes_on_cleanly_after_404_and_503() {
    let b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}[[path_routes]]\npath = \"/api\"\naddress = \"{}\"\n\n[[path_routes]]\npath = \"/gone\"\naddress = \"127.0.0.1:{}\"\n",
        listen_section(""),
        b.address(),
        dead_port()
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).expect("404").status, 404);
    c.send(b"GET /gone/x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).expect("503").status, 503);
    // Exactly one answer per request: nothing more may arrive unasked.
    c.set_timeout(Duration::from_millis(300));
    assert_eq!(c.read_head().map(|r| r.head), Err(WireError::Timeout));
    c.set_timeout(Duration::from_secs(3));
    c.send(b"GET /api/next HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).expect("next");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["target"], "/api/next");
}

#[test]
fn pooled_connection_closed_by_a_restarted_backend_is_not_used() {
    let mut b = Backend::start("b");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    let c = client();
    assert_eq!(c.get(sy.url("/one")).send().unwrap().status(), 200);
    // The proxy now holds an idle connection to the backend; the restart closes it.
    b.restart();
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..3 {
        let r = c.get(sy.url(&format!("/again/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200, "request {i} after the backend restarted");
    }
    assert_eq!(b.hits(), 4);
    assert!(
        b.stats
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
}
