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
