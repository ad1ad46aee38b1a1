//! SPEC §11 over real sockets, against backends written to fail on purpose: retries (by
//! method, by Idempotency-Key, X-Retry-Attempt, the budget), outlier ejection and its probe,
//! max_ejection_percent, holding through a cold start, error bodies without internals, and
//! the per-pool figures in /metrics. Every test is bounded in time.
mod support;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::metrics::{promtool, sample};
use support::*;

/// A keep-alive backend that answers every request with `status` (and records each head).
struct Faulty {
    raw: RawBackend,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Faulty {
    fn answering(status: u16) -> Faulty {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        let raw = RawBackend::start(move |mut s: TcpStream| loop {
            let head = read_request_head(&mut s);
            if head.is_empty() {
                return;
            }
            h.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let body = format!("status {status}");
            let r = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(r.as_bytes()).is_err() {
                return;
            }
        });
        Faulty { raw, heads }
    }

    /// Reads the head, then closes without a byte of an answer.
    fn hanging_up() -> Faulty {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        let raw = RawBackend::start(move |mut s: TcpStream| {
            let head = read_request_head(&mut s);
            h.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
        });
        Faulty { raw, heads }
    }

    fn address(&self) -> String {
        self.raw.address()
    }

    fn hits(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn send(sy: &Switchyard, head: &str) -> RawResponse {
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c.send(head.as_bytes()).unwrap();
    c.read_response(false).expect("response")
}

fn metrics(sy: &Switchyard) -> String {
    client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn idempotent_or_keyed_requests_are_retried_on_the_next_address() {
    let rude = Faulty::hanging_up();
    let good = Faulty::answering(200);
    let sy = Switchyard::start(&format!(
        "{}[outlier]\nconsecutive_failures = 0\n[retry]\nmin_retries_per_second = 100\n\n{}",
        listen_section(""),
        targets_toml(&[rude.address(), good.address()])
    ));
    for _ in 0..6 {
        let r = send(&sy, "GET /g HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        rude.hits() >= 1,
        "round robin never chose the failing address"
    );
    let retried: Vec<_> = good
        .heads()
        .into_iter()
        .filter(|h| h.to_ascii_lowercase().contains("x-retry-attempt: 2\r\n"))
        .collect();
    assert_eq!(
        retried.len(),
        rude.hits(),
        "each retry says it is the second try"
    );
    assert!(good
        .heads()
        .iter()
        .all(|h| !h.to_ascii_lowercase().contains("x-retry-attempt: 1")));

    // A POST with an Idempotency-Key is retried too; one without is not (proxy_errors.rs).
    let before = (rude.hits(), good.hits());
    for _ in 0..6 {
        let r = send(
            &sy,
            "POST /p HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(good.hits() - before.1, 6);
    assert!(rude.hits() > before.0);

    // A client cannot forge the header.
    let good_only = Faulty::answering(200);
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[good_only.address()])
    ));
    let r = send(
        &sy,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Retry-Attempt: 7\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(!good_only.heads()[0]
        .to_ascii_lowercase()
        .contains("x-retry-attempt"));
}

#[test]
fn the_budget_bounds_retries_and_the_floor_keeps_a_few() {
    let (a, b) = (Faulty::answering(503), Faulty::answering(503));
    let sy = Switchyard::start(&format!(
        "{}[retry]\nmin_retries_per_second = 0\n\n{}",
        listen_section(""),
        targets_toml(&[a.address(), b.address()])
    ));
    for _ in 0..100 {
        let r = send(&sy, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 503);
        // The backend's own answer is relayed when no retry is left.
        assert!(r.text().contains("status 503") || r.json()["error"] == "service_unavailable");
    }
    let tries = a.hits() + b.hits();
    assert!(
        (100..=121).contains(&tries),
        "{tries} tries for 100 requests"
    );

    // With the defaults, a pool with little traffic keeps its retries (5 per second).
    let (c, d) = (Faulty::answering(503), Faulty::answering(503));
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[c.address(), d.address()])
    ));
    for _ in 0..3 {
        assert_eq!(send(&sy, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n").status, 503);
    }
    assert_eq!(c.hits() + d.hits(), 6, "every request got its retry");
}

#[test]
fn consecutive_5xx_eject_and_one_probe_returns_or_reejects() {
    let bad = Faulty::answering(500);
    let good = Faulty::answering(200);
    let sy = Switchyard::start(&format!(
        "{}[outlier]\nconsecutive_5xx = 3\nbase_ejection_time = 1\n\n{}",
        listen_section(""),
        targets_toml(&[bad.address(), good.address()])
    ));
    for _ in 0..12 {
        send(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert_eq!(bad.hits(), 3, "ejected after its third 5xx in a row");
    let m = metrics(&sy);
    let series = format!(
        "switchyard_upstream_ejections_total{{address=\"{}\"}}",
        bad.address()
    );
    assert_eq!(sample(&m, &series), Some(1.0), "{m}");
    assert!(sy.wait_log("ejected from pool targets", Duration::from_secs(2)));
    // /health says until when (RFC 3339 ms, so later times sort later as text).
    let now_text = |d: u64| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + d;
        // The same text form the admin API uses, via a tiny civil-date conversion.
        civil_rfc3339_ms(ms)
    };
    let h: serde_json::Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let (eb, eg) = (&h["targets"][bad.address()], &h["targets"][good.address()]);
    let until = eb["ejected_until"]
        .as_str()
        .unwrap_or_else(|| panic!("{h}"));
    assert!(
        until > now_text(0).as_str() && until <= now_text(1100).as_str(),
        "{until}"
    );
    assert_eq!(eb["ejections"], 1);
    assert_eq!(eg["ejected_until"], serde_json::Value::Null, "{h}");
    assert_eq!(eg["ejections"], 0);
    // Time up: one request probes it; it fails again, so it is out for twice as long.
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..10 {
        send(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert_eq!(bad.hits(), 4, "exactly one probe");
    assert_eq!(sample(&metrics(&sy), &series), Some(2.0));
}

/// Unix ms as `YYYY-MM-DDTHH:MM:SS.mmmZ` (Howard Hinnant's days-to-civil), for comparing
/// with the admin API's times as text.
fn civil_rfc3339_ms(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[test]
fn max_ejection_percent_keeps_half_the_pool() {
    let backends: Vec<Faulty> = (0..4).map(|_| Faulty::answering(500)).collect();
    let addrs: Vec<String> = backends.iter().map(Faulty::address).collect();
    let sy = Switchyard::start(&format!(
        "{}[outlier]\nconsecutive_5xx = 1\nbase_ejection_time = 30\n\n{}",
        listen_section(""),
        targets_toml(&addrs)
    ));
    for _ in 0..20 {
        send(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    let m = metrics(&sy);
    let ejected: f64 = addrs
        .iter()
        .filter_map(|a| {
            sample(
                &m,
                &format!("switchyard_upstream_ejected{{address=\"{a}\"}}"),
            )
        })
        .sum();
    assert_eq!(ejected, 2.0, "{m}");
}

#[test]
fn a_cold_start_is_held_until_the_backend_is_up() {
    let port = dead_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sy = Switchyard::start(&format!(
        "{}[gateway]\nhealth_check_interval = 0.2\ndown_check_interval = 0.2\nhealth_check_timeout = 0.5\n\n\
         [[targets]]\naddress = \"{addr}\"\nhealth_check_endpoint = \"/health\"\n",
        listen_section("hold_timeout = 10\nhold_max = 2")
    ));
    let started = Instant::now();
    let sy_http = sy.http;
    let waiter = std::thread::spawn(move || {
        let mut c = RawConn::connect(sy_http);
        c.set_timeout(Duration::from_secs(15));
        c.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        c.read_response(false).expect("response")
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiter.is_finished(), "answered before the backend existed");
    let m = metrics(&sy);
    assert_eq!(
        sample(&m, "switchyard_pool_held{pool=\"targets\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "switchyard_pool_in_flight{pool=\"targets\"}"),
        Some(1.0)
    );
    let backend = Backend::start_on("late", addr, Default::default());
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(backend.hits(), 1);
    let m = metrics(&sy);
    assert_eq!(
        sample(&m, "switchyard_pool_hold_served_total{pool=\"targets\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "switchyard_pool_in_flight{pool=\"targets\"}"),
        Some(0.0)
    );
    let (ok, out) = promtool(&m);
    assert!(ok, "{out}");
}

#[test]
fn hold_overflow_and_timeout_are_503_without_internals() {
    let port = dead_port();
    let sy = Switchyard::start(&format!(
        "{}[[targets]]\naddress = \"127.0.0.1:{port}\"\nhealth_check_endpoint = \"/health\"\n",
        listen_section("hold_timeout = 0.4\nhold_max = 1")
    ));
    let sy_http = sy.http;
    let first = std::thread::spawn(move || {
        let mut c = RawConn::connect(sy_http);
        c.set_timeout(Duration::from_secs(5));
        let t = Instant::now();
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        (c.read_response(false).expect("response"), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(150));
    // The one place is taken: the next request is refused at once.
    let t = Instant::now();
    let r = send(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let (r1, took) = first.join().unwrap();
    assert_eq!(r1.status, 503);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    for r in [&r, &r1] {
        let text = r.text();
        assert!(
            !text.contains("127.0.0.1") && !text.contains(&port.to_string()),
            "{text}"
        );
        assert!(!text.to_lowercase().contains("refused"), "{text}");
        assert_eq!(r.json()["error"], "service_unavailable");
    }
    let m = metrics(&sy);
    assert_eq!(
        sample(&m, "switchyard_pool_hold_overflows_total{pool=\"targets\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "switchyard_pool_hold_timeouts_total{pool=\"targets\"}"),
        Some(1.0)
    );
    // The address and the OS error are in the log, with the request id.
    let rid = r1.header("x-request-id").unwrap().to_string();
    assert!(sy.wait_log(&format!("(request {rid})"), Duration::from_secs(2)));
}

#[test]
fn a_502_body_names_no_address() {
    let rude = Faulty::hanging_up();
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[rude.address()])
    ));
    let r = send(&sy, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(!r.text().contains(&rude.address()), "{}", r.text());
    assert!(sy.wait_log(&rude.address(), Duration::from_secs(2)));
}

#[test]
fn a_registered_service_still_starting_is_held_with_its_own_hold_timeout() {
    let port = dead_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // No hold in [server]: the registration's own hold_timeout is what holds.
    let sy = Switchyard::start(&format!(
        "{}[gateway]\nhealth_check_interval = 0.2\ndown_check_interval = 0.2\nhealth_check_timeout = 0.5\n",
        listen_section("")
    ));
    let doc = serde_json::json!({
        "service": "late", "url": format!("http://{addr}"), "health_endpoint": "/health",
        "hold_timeout": 10, "hold_max": 1, "routes": [{"path": "/late/*"}]
    });
    let r = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(&doc)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let started = Instant::now();
    let sy_http = sy.http;
    let waiter = std::thread::spawn(move || {
        let mut c = RawConn::connect(sy_http);
        c.set_timeout(Duration::from_secs(15));
        c.send(b"GET /late/x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        c.read_response(false).expect("response")
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(!waiter.is_finished(), "answered before the service existed");
    let m = metrics(&sy);
    assert_eq!(
        sample(&m, "switchyard_pool_held{pool=\"late\"}"),
        Some(1.0),
        "{m}"
    );
    // Its hold_max is 1: a second request is refused at once.
    let t = Instant::now();
    assert_eq!(
        send(&sy, "GET /late/y HTTP/1.1\r\nHost: t\r\n\r\n").status,
        503
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    let backend = Backend::start_on("late", addr, Default::default());
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(backend.hits(), 1);
}
