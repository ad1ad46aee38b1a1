//! Black-box header rewriting (SPEC §4): what a backend receives (hop-by-hop out, forwarding
//! headers in) and what a client receives, plus HTTP/1.0 clients.
mod support;
use std::time::Duration;
use support::*;

fn setup() -> (Backend, Switchyard) {
    let b = Backend::start("h");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    (b, sy)
}

/// The headers the backend saw for its last request.
fn last_seen(b: &Backend) -> Vec<(String, String)> {
    b.stats
        .seen
        .lock()
        .unwrap()
        .last()
        .expect("a request")
        .2
        .clone()
}

fn value<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn hop_by_hop_headers_are_removed_including_connection_listed_ones() {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.send(
        b"GET /h HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, X-Secret-Hop\r\n\
X-Secret-Hop: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
Trailer: X-T\r\nUpgrade: h2c\r\nX-Keep: yes\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    let h = last_seen(&b);
    for gone in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(value(&h, gone).is_none(), "{gone} was forwarded: {h:?}");
    }
    assert_eq!(value(&h, "x-keep"), Some("yes"));
    assert_eq!(value(&h, "host"), Some("front.example"));
}

#[test]
fn forwarding_headers_are_added() {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.send(
        b"GET /f HTTP/1.1\r\nHost: shop.example:8443\r\nX-Forwarded-For: 203.0.113.7\r\n\
X-Forwarded-Proto: https-spoofed\r\nX-Forwarded-Host: evil.example\r\nX-API-Key: sekrit\r\n\
X-Request-Id: keep-me-1\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    let h = last_seen(&b);
    assert_eq!(value(&h, "x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(value(&h, "x-forwarded-proto"), Some("http"));
    assert_eq!(value(&h, "x-forwarded-host"), Some("shop.example:8443"));
    assert_eq!(value(&h, "x-request-id"), Some("keep-me-1"));
    assert!(
        value(&h, "x-api-key").is_none(),
        "the client's API key leaked"
    );
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert_eq!(
            h.iter().filter(|(k, _)| k == name).count(),
            1,
            "{name} twice: {h:?}"
        );
    }
}

#[test]
fn request_id_is_generated_when_absent_and_differs_per_request() {
    let (b, sy) = setup();
    let cl = client();
    cl.get(sy.url("/one")).send().unwrap();
    let first = value(&last_seen(&b), "x-request-id").map(str::to_string);
    cl.get(sy.url("/two")).send().unwrap();
    let second = value(&last_seen(&b), "x-request-id").map(str::to_string);
    let first = first.expect("generated id");
    assert!(first.len() >= 16, "{first}");
    assert_ne!(Some(first), second);
    assert_eq!(value(&last_seen(&b), "x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn response_carries_gateway_and_server_timing() {
    let (_b, sy) = setup();
    let r = client().get(sy.url("/t")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway"], "switchyard");
    let st = r.headers()["server-timing"].to_str().unwrap().to_string();
    let dur = st
        .strip_prefix("upstream;dur=")
        .unwrap_or_else(|| panic!("{st}"));
    let ms: f64 = dur.parse().unwrap_or_else(|_| panic!("{st}"));
    assert!((0.0..5000.0).contains(&ms), "{st}");
}

#[test]
fn gateway_header_value_comes_from_config() {
    let b = Backend::start("g");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section("gateway_header = \"edge-7\""),
        targets_toml(&[b.address()])
    ));
    let r = client().get(sy.url("/")).send().unwrap();
    assert_eq!(r.headers()["x-gateway"], "edge-7");
    let r = client().get(sy.url("/a/../b")).send().unwrap();
    // reqwest normalizes dot segments away; either way the answer carries the header.
    assert_eq!(r.headers()["x-gateway"], "edge-7");
}

#[test]
fn http10_request_without_host_works_and_closes() {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    c.send(b"GET /old?q=1 HTTP/1.0\r\nUser-Agent: ancient\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.text());
    assert_eq!(r.json()["target"], "/old?q=1");
    // It goes upstream as HTTP/1.1, which must carry a Host (strict servers refuse it
    // otherwise): the backend's own address stands in for the one the client left out.
    assert_eq!(value(&last_seen(&b), "host"), Some(b.address().as_str()));
    assert!(
        r.head.starts_with("HTTP/1.1 200") || r.head.starts_with("HTTP/1.0 200"),
        "{}",
        r.head
    );
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "1.0 without keep-alive must close"
    );
    assert_eq!(b.hits(), 1);
}

#[test]
fn http10_keep_alive_is_honoured() {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).expect("first");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    assert!(r.header("content-length").is_some());
    c.send(b"GET /b HTTP/1.0\r\n\r\n").unwrap();
    let r = c
        .read_response(false)
        .expect("second on the same connection");
    assert_eq!(r.json()["target"], "/b");
    assert_eq!(b.hits(), 2);
}

#[test]
fn head_response_keeps_its_content_length() {
    let (_b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.send(b"HEAD /bytes/1234 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.read_response(true).expect("HEAD response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"), "{}", r.head);
    // Nothing follows the head: the next response on the connection starts clean.
    c.send(b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("next response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body.len(), 5);
}

#[test]
fn empty_content_length_is_forwarded() {
    // Some servers answer 411 to a POST without Content-Length; a `Content-Length: 0` the
    // client sent must reach them.
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.send(b"POST /empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(value(&last_seen(&b), "content-length"), Some("0"));
    assert_eq!(b.complete(), 1);
}
