//! A first end-to-end check of the harness: one request through switchyard to a hyper backend.
mod support;
use support::*;

#[test]
fn request_crosses_the_proxy() {
    let b = Backend::start("one");
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section(""),
        b.address()
    );
    let sy = Switchyard::start(&cfg);
    let r = client().get(sy.url("/x?y=1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway"], "switchyard");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["backend"], "one");
    assert_eq!(v["target"], "/x?y=1");
}

/// `workers = 1` runs on a single-threaded runtime: data, admin, a reload and the drain must
/// all still be served by that one thread.
#[test]
fn one_worker_serves_reloads_and_drains() {
    let b = Backend::start("one");
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("workers = 1"),
        b.address()
    );
    let mut sy = Switchyard::start(&cfg);
    let c = client();
    for i in 0..20 {
        let r = c
            .post(sy.url(&format!("/w/{i}")))
            .body("x".repeat(i * 1000))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(c.get(sy.admin_url("/ready")).send().unwrap().status(), 200);
    sy.signal("HUP");
    assert!(
        sy.wait_log("reloaded", std::time::Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    assert_eq!(c.get(sy.url("/after")).send().unwrap().status(), 200);
    sy.signal("TERM");
    assert_eq!(sy.wait_exit(std::time::Duration::from_secs(10)), Some(0));
}

/// Listening sockets on 127.0.0.1:`port` (from /proc/net/tcp: state 0A).
fn listening_sockets(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

/// `workers = 2`: two event loops, each with a thread and an SO_REUSEPORT socket of its own
/// on the data address (the kernel spreads new connections over them); new connections, a
/// reload and the drain are all served.
#[test]
fn two_workers_accept_on_a_socket_each_and_serve_reloads_and_drains() {
    let b = Backend::start("one");
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("workers = 2"),
        b.address()
    );
    let mut sy = Switchyard::start(&cfg);
    assert_eq!(
        listening_sockets(sy.http.port()),
        2,
        "one socket per worker"
    );
    assert_eq!(
        listening_sockets(sy.admin.port()),
        1,
        "the admin one stays single"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", sy.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "switchyard-w1")
        .count();
    assert_eq!(threads, 1, "worker 1 runs on a thread of its own");
    // New connections, each hashed by the kernel to one of the two sockets.
    for i in 0..40 {
        let r = raw(
            sy.http,
            format!("GET /n/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(status_of(&r), 200, "{r}");
    }
    sy.signal("HUP");
    assert!(
        sy.wait_log("reloaded", std::time::Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    assert_eq!(client().get(sy.url("/after")).send().unwrap().status(), 200);
    sy.signal("TERM");
    assert_eq!(sy.wait_exit(std::time::Duration::from_secs(10)), Some(0));
}
