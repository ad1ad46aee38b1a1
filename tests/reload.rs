//! SIGHUP reload and SIGTERM drain over real sockets (SPEC §8): nothing in flight is lost,
//! bad configs change nothing, tunnels and health survive, the drain ends with exit 0.
mod support;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// `/common` and `/sleep` (both configs, to one) and one route of its own: `/alpha` → one (A)
/// or `/beta` → two (B).
fn config(one: &Backend, two: &Backend, b: bool) -> String {
    let own = if b {
        format!(
            "[[path_routes]]\npath = \"/beta\"\naddress = \"{}\"\n",
            two.address()
        )
    } else {
        format!(
            "[[path_routes]]\npath = \"/alpha\"\naddress = \"{}\"\n",
            one.address()
        )
    };
    format!(
        "{head}[[path_routes]]\npath = \"/common\"\naddress = \"{a}\"\n\n[[path_routes]]\npath = \"/sleep\"\naddress = \"{a}\"\n\n{own}",
        head = listen_section("access_log = false"),
        a = one.address(),
    )
}

fn reloads(sy: &Switchyard) -> usize {
    sy.log_text().matches("reloaded ").count()
}

fn hup_and_wait(sy: &Switchyard, n: usize) {
    sy.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || reloads(sy) >= n),
        "reload {n} not logged:\n{}",
        sy.log_text()
    );
}

#[test]
fn continuous_traffic_across_five_reloads_loses_nothing() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let sy = Switchyard::start(&config(&one, &two, false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut threads = Vec::new();
    for t in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let url = sy.url(&format!("/common/{t}"));
        threads.push(std::thread::spawn(move || {
            // One pooled keep-alive client per thread: most requests reuse a connection that
            // was opened under an older table.
            let c = client();
            while !stop.load(SeqCst) {
                match c.get(&url).send() {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let c = client();
    // A keep-alive connection kept across every reload: its next request uses the new table.
    let mut kept = RawConn::connect(sy.http);
    for i in 1..=5 {
        std::thread::sleep(Duration::from_millis(150));
        let b = i % 2 == 1;
        std::fs::write(&sy.config_path, config(&one, &two, b)).unwrap();
        hup_and_wait(&sy, i);
        let (new, gone, backend) = if b {
            ("/beta/x", "/alpha/x", "two")
        } else {
            ("/alpha/x", "/beta/x", "one")
        };
        let r = c.get(sy.url(new)).send().unwrap();
        assert_eq!(r.status(), 200, "reload {i}: {new}");
        assert_eq!(r.json::<serde_json::Value>().unwrap()["backend"], backend);
        assert_eq!(c.get(sy.url(gone)).send().unwrap().status(), 404);
        kept.send(format!("GET {new} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(kept.read_response(false).unwrap().status, 200, "reload {i}");
        kept.send(format!("GET {gone} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(kept.read_response(false).unwrap().status, 404, "reload {i}");
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let n = ok.load(SeqCst);
    eprintln!("{n} requests across 5 reloads, {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(n > 100, "only {n} requests went through");
}

#[test]
fn invalid_config_is_refused_every_problem_logged_old_routes_kept() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let sy = Switchyard::start(&config(&one, &two, false));
    let good = std::fs::read_to_string(&sy.config_path).unwrap();
    std::fs::write(
        &sy.config_path,
        format!(
            "{good}\n[[path_routes]]\npath = \"nope\"\naddress = \"x\"\n\n[[tcp]]\nlisten = \"127.0.0.1:0\"\ntargets = []\n"
        ),
    )
    .unwrap();
    sy.signal("HUP");
    assert!(sy.wait_log("reload refused", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(100));
    let log = sy.log_text();
    for want in [
        "path_routes[3].path",
        "path_routes[3].address",
        "tcp[0].targets",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("reload refused") && l.contains(want)),
            "{want} not logged:\n{log}"
        );
    }
    assert!(!log.contains("reloaded "), "{log}");
    let c = client();
    let r = c.get(sy.url("/alpha")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["backend"], "one");
    // A file that cannot be read is refused the same way.
    std::fs::remove_file(&sy.config_path).unwrap();
    sy.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || sy
        .log_text()
        .contains("cannot read")));
    assert_eq!(c.get(sy.url("/alpha")).send().unwrap().status(), 200);
}

#[test]
fn failed_reload_counts_in_the_metric_counter() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = TempDir::new("reloadmetric");
        let good = format!(
            "{}[store]\npath = \"{}\"\n",
            listen_section(""),
            dir.0.join("state.json").display()
        );
        let cfg = switchyard::config::parse(&good, "t", Box::new(|_| None)).unwrap();
        let running = switchyard::server::start(cfg).await.unwrap();
        let p = dir.0.join("c.toml");
        std::fs::write(&p, format!("{good}\n[server]\n")).unwrap();
        assert!(!switchyard::control::reload(&running.shared, &p).await);
        assert!(!switchyard::control::reload(&running.shared, &dir.0.join("missing")).await);
        assert_eq!(running.shared.metrics_reload_failures.load(SeqCst), 2);
        std::fs::write(&p, &good).unwrap();
        assert!(switchyard::control::reload(&running.shared, &p).await);
        assert_eq!(running.shared.metrics_reload_failures.load(SeqCst), 2);
    });
}

#[test]
fn upgrade_tunnel_open_across_a_reload_keeps_echoing() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let sy = Switchyard::start(&config(&one, &two, false));
    let mut t = RawConn::connect(sy.http);
    t.send(
        b"GET /common/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n",
    )
    .unwrap();
    assert_eq!(t.read_head().unwrap().status, 101);
    t.send(b"first").unwrap();
    assert_eq!(t.read_exact_bytes(5).unwrap(), b"first");
    // The new config drops the route the tunnel was opened on.
    std::fs::write(
        &sy.config_path,
        format!(
            "{}[[path_routes]]\npath = \"/other\"\naddress = \"{}\"\n",
            listen_section(""),
            two.address()
        ),
    )
    .unwrap();
    hup_and_wait(&sy, 1);
    assert_eq!(
        client().get(sy.url("/common")).send().unwrap().status(),
        404
    );
    t.send(b"second").unwrap();
    assert_eq!(t.read_exact_bytes(6).unwrap(), b"second");
}

#[test]
fn health_of_addresses_that_stay_survives_a_reload() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    one.set_health(500);
    let cfg = |extra: &str| {
        format!(
            "{}[gateway]\nhealth_check_interval = 0.1\nmax_consecutive_failures = 1\nstop_ping_after_failures = 1000\ndown_check_interval = 60\n\n[[path_routes]]\npath = \"/one\"\naddress = \"{}\"\nhealth_check_endpoint = \"/health\"\n\n{extra}",
            listen_section(""),
            one.address()
        )
    };
    let sy = Switchyard::start(&cfg(""));
    assert!(
        sy.wait_log("is DOWN", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    let c = client();
    assert_eq!(c.get(sy.url("/one")).send().unwrap().status(), 503);
    let checks = one.health_hits();
    std::fs::write(
        &sy.config_path,
        cfg(&format!(
            "[[path_routes]]\npath = \"/two\"\naddress = \"{}\"\n",
            two.address()
        )),
    )
    .unwrap();
    hup_and_wait(&sy, 1);
    // Still DOWN: had the reload reset it to UNKNOWN, the request would reach the backend.
    assert_eq!(c.get(sy.url("/one")).send().unwrap().status(), 503);
    assert_eq!(c.get(sy.url("/two")).send().unwrap().status(), 200);
    assert_eq!(one.hits(), 0);
    let h: serde_json::Value = c
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(h.to_string().contains("DOWN"), "{h}");
    assert!(
        one.health_hits() <= checks + 1,
        "the kept address is not checked again at once (down interval 60 s)"
    );
}

#[test]
fn changed_listen_address_is_logged_as_needing_a_restart() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let sy = Switchyard::start(&config(&one, &two, false));
    let text = std::fs::read_to_string(&sy.config_path).unwrap().replacen(
        "127.0.0.1:0",
        &format!("127.0.0.1:{}", dead_port()),
        1,
    );
    std::fs::write(&sy.config_path, text).unwrap();
    hup_and_wait(&sy, 1);
    assert!(sy.log_text().contains("take effect at the next restart"));
    assert_eq!(client().get(sy.url("/alpha")).send().unwrap().status(), 200);
}

#[test]
fn sigterm_finishes_the_slow_request_ready_503_then_exit_0() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let mut sy = Switchyard::start(&config(&one, &two, false));
    let c = client();
    assert_eq!(c.get(sy.admin_url("/ready")).send().unwrap().status(), 200);
    // An idle keep-alive connection: closed by the drain, not waited for.
    let mut idle = RawConn::connect(sy.http);
    idle.send(b"GET /alpha HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(idle.read_response(false).unwrap().status, 200);

    let url = sy.url("/sleep/1500");
    let slow = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    assert!(wait_until(Duration::from_secs(5), || one.hits() >= 2));
    let t0 = Instant::now();
    sy.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(1), || c
            .get(sy.admin_url("/ready"))
            .send()
            .is_ok_and(|r| r.status() == 503)),
        "/ready should answer 503 while draining"
    );
    assert!(
        wait_until(Duration::from_secs(1), || std::net::TcpStream::connect(
            sy.http
        )
        .is_err()),
        "the data port stops accepting"
    );
    assert!(
        idle.closed_within(Duration::from_secs(1)),
        "idle keep-alive closed"
    );
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"slept\":1500"), "{body}");
    assert_eq!(sy.wait_exit(Duration::from_secs(10)), Some(0));
    let took = t0.elapsed();
    eprintln!("drain with a 1.5 s request in flight took {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let cfg = config(&one, &two, false).replacen(
        "access_log = false",
        "access_log = false\ndrain_timeout = 0.5",
        1,
    );
    let mut sy = Switchyard::start(&cfg);
    let url = sy.url("/sleep/5000");
    std::thread::spawn(move || {
        let _ = client().get(url).send();
    });
    assert!(wait_until(Duration::from_secs(5), || one.hits() >= 1));
    let t0 = Instant::now();
    sy.signal("TERM");
    assert_eq!(sy.wait_exit(Duration::from_secs(5)), Some(0));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(sy.log_text().contains("drain timeout"), "{}", sy.log_text());
}

#[test]
fn sigint_drains_like_sigterm() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let mut sy = Switchyard::start(&config(&one, &two, false));
    let url = sy.url("/sleep/500");
    let slow = std::thread::spawn(move || client().get(url).send().map(|r| r.status().as_u16()));
    assert!(wait_until(Duration::from_secs(5), || one.hits() >= 1));
    sy.signal("INT");
    assert_eq!(slow.join().unwrap().ok(), Some(200));
    assert_eq!(sy.wait_exit(Duration::from_secs(5)), Some(0));
}
