//! The admin listener from outside (SPEC §5): `/metrics` as promtool reads it, the counters
//! behind it, and bad input answered with JSON 4xx without disturbing the data plane.
mod support;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};
use support::metrics::{promtool, sample};
use support::*;

fn config(backends: &[&Backend], dead: u16) -> String {
    let mut c = listen_section("");
    c.push_str(
        "[gateway]\nhealth_check_interval = 0.1\ndown_check_interval = 0.2\n\
         max_consecutive_failures = 2\nhealth_check_timeout = 1\n\n",
    );
    for b in backends {
        c.push_str(&format!(
            "[[targets]]\naddress = \"{}\"\nhealth_check_endpoint = \"/health\"\n\n",
            b.address()
        ));
    }
    c.push_str(&format!(
        "[[path_routes]]\npath = \"/dead\"\naddress = \"127.0.0.1:{dead}\"\n\n"
    ));
    c
}

fn wait_up(sy: &Switchyard, addr: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        client()
            .get(sy.admin_url("/health"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["targets"][addr]["status"] == "UP")
    });
    assert!(ok, "{addr} never UP:\n{}", sy.log_text());
}

#[test]
fn metrics_pass_promtool_and_count_what_happened() {
    let a = Backend::start("a");
    let mut b = Backend::start("b");
    let dead = dead_port();
    let sy = Switchyard::start(&config(&[&a, &b], dead));
    wait_up(&sy, &a.address());
    wait_up(&sy, &b.address());
    b.stop();
    let ok = wait_until(Duration::from_secs(10), || {
        client()
            .get(sy.admin_url("/health"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["targets"][b.address()]["status"] == "DOWN")
    });
    assert!(ok, "b never DOWN");

    let c = client();
    for i in 0..7 {
        assert_eq!(
            c.get(sy.url(&format!("/ok/{i}"))).send().unwrap().status(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(c.get(sy.url("/status/418")).send().unwrap().status(), 418);
    }
    // A path route to a port nobody listens on: connect refused, 503.
    assert_eq!(c.get(sy.url("/dead/x")).send().unwrap().status(), 503);
    // Unrouted: a malformed request answered by switchyard itself.
    let r = raw(sy.http, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&r), 400, "{r}");

    let r = c.get(sy.admin_url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().unwrap();
    let (ok, msg) = promtool(&text);
    assert!(
        ok,
        "promtool check metrics refused the output: {msg}\n{text}"
    );

    let aa = a.address();
    let ba = b.address();
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        get(&format!(
            "switchyard_requests_total{{route=\"catch-all\",backend=\"{aa}\",code=\"200\"}}"
        )),
        7.0
    );
    assert_eq!(
        get(&format!(
            "switchyard_requests_total{{route=\"catch-all\",backend=\"{aa}\",code=\"4xx\"}}"
        )),
        2.0,
        "418 has no slot of its own: counted as 4xx"
    );
    assert_eq!(
        get("switchyard_requests_total{route=\"/dead\",backend=\"-\",code=\"503\"}"),
        1.0
    );
    assert_eq!(
        get("switchyard_requests_total{route=\"-\",backend=\"-\",code=\"400\"}"),
        1.0
    );
    assert_eq!(get("switchyard_request_duration_seconds_count"), 11.0);
    assert_eq!(
        get("switchyard_request_duration_seconds_bucket{le=\"+Inf\"}"),
        11.0
    );
    assert_eq!(
        get(&format!("switchyard_upstream_up{{address=\"{aa}\"}}")),
        1.0
    );
    assert_eq!(
        get(&format!("switchyard_upstream_up{{address=\"{ba}\"}}")),
        0.0
    );
    assert_eq!(
        get(&format!(
            "switchyard_upstream_status{{address=\"{ba}\",status=\"DOWN\"}}"
        )),
        1.0
    );
    assert!(
        get(&format!(
            "switchyard_upstream_uptime_seconds{{address=\"{aa}\"}}"
        )) > 0.0
    );
    assert_eq!(
        get(&format!(
            "switchyard_upstream_uptime_seconds{{address=\"{ba}\"}}"
        )),
        0.0
    );
    assert!(
        get(&format!(
            "switchyard_health_checks_total{{address=\"{aa}\",result=\"success\"}}"
        )) >= 1.0
    );
    assert!(
        get(&format!(
            "switchyard_health_checks_total{{address=\"{ba}\",result=\"failure\"}}"
        )) >= 2.0
    );
    assert!(
        get(&format!(
            "switchyard_upstream_requests_total{{address=\"{aa}\"}}"
        )) >= 9.0
    );
    assert_eq!(
        get(&format!(
            "switchyard_upstream_connect_failures_total{{address=\"127.0.0.1:{dead}\"}}"
        )),
        1.0
    );
    // The client above is idle; the scrape itself is not a data-port connection. The raw
    // 400 connection may take a moment to be seen closed on a loaded machine.
    let settled = wait_until(Duration::from_secs(3), || {
        let t = c
            .get(sy.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        sample(&t, "switchyard_open_connections").is_some_and(|v| v <= 1.0)
    });
    assert!(settled, "open connections never settled to <= 1");
    assert_eq!(
        get(&format!(
            "switchyard_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    // OpenMetrics for scrapers that ask for it.
    let r = c
        .get(sy.admin_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = r.text().unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE switchyard_requests counter\n"));
    assert!(om.contains("# UNIT switchyard_request_duration_seconds seconds\n"));
}

#[test]
fn bad_admin_input_is_json_4xx_and_the_data_plane_carries_on() {
    let a = Backend::start("a");
    let sy = Switchyard::start(&config(&[&a], dead_port()));
    wait_up(&sy, &a.address());
    let quick = Duration::from_secs(3);

    // A handful of clients that never finish their head: they must not block anyone.
    let hold: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(sy.admin).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();

    let cases: &[(&[u8], u16, &str)] = &[
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
        (
            b"GET /health/x HTTP/1.1\r\nHost: x\r\n\r\n",
            404,
            "not_found",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            405,
            "method_not_allowed",
        ),
        (
            b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "method_not_allowed",
        ),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bad_request"),
        (b"\x00\x01\x02\x03\xff\xfe garbage", 400, "bad_request"),
        // The start of a TLS ClientHello: refused at once, not after the read timeout.
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            400,
            "bad_request",
        ),
    ];
    for (req, status, code) in cases {
        let t = Instant::now();
        let r = raw(sy.admin, req, quick);
        assert_eq!(
            status_of(&r),
            *status,
            "{:?} -> {r}",
            String::from_utf8_lossy(req)
        );
        assert!(
            t.elapsed() < quick,
            "answered without waiting for a timeout"
        );
        assert!(r.contains("Content-Type: application/json"), "{r}");
        assert_eq!(json_body(&r)["error"], *code, "{r}");
        if *status == 405 {
            assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        }
    }
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(sy.admin, big.as_bytes(), quick);
    assert_eq!(status_of(&r), 431, "{r}");

    // HEAD: the head of the GET answer, no body.
    let r = raw(sy.admin, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", quick);
    assert_eq!(status_of(&r), 200);
    assert!(r.ends_with("\r\n\r\n"), "no body after a HEAD: {r}");

    // The data plane and the admin listener still answer.
    let c = client();
    for i in 0..5 {
        let r = c.get(sy.url(&format!("/after/{i}"))).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(c.get(sy.admin_url("/ready")).send().unwrap().status(), 200);
    assert!(a.hits() >= 5);
    drop(hold);
}

#[test]
fn keep_alive_error_answers_are_counted_once() {
    // Regression: a 404 or 503 answered on a kept-alive connection used to leave its request
    // head in the buffer, and the loop answered the same request again and again.
    let a = Backend::start("a");
    let cfg = format!(
        "{}[[path_routes]]\npath = \"/only\"\naddress = \"{}\"\n\n[[path_routes]]\npath = \"/dead\"\naddress = \"127.0.0.1:{}\"\n",
        listen_section(""),
        a.address(),
        dead_port()
    );
    let sy = Switchyard::start(&cfg);
    let mut s = std::net::TcpStream::connect(sy.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /dead/x HTTP/1.1\r\nHost: x\r\n\r\nGET /only/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    // Bounded read: with the bug the server never stops answering.
    let mut raw_out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw_out.len() < 64 * 1024 && Instant::now() < deadline {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw_out.extend_from_slice(&buf[..n]),
        }
    }
    let out = String::from_utf8_lossy(&raw_out).into_owned();
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["404", "503", "200"], "{out}");
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total{route=\"-\",backend=\"-\",code=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total{route=\"/dead\",backend=\"-\",code=\"503\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "switchyard_request_duration_seconds_count"),
        Some(3.0)
    );
}
