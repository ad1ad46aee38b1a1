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
