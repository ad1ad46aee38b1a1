//! ACME end to end (SPEC §9) against a real ACME server on loopback: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS resolving every name to 127.0.0.1 and its http-01 port
//! pointed at switchyard's plain listener. Then Python `ssl` and curl, trusting only pebble's
//! root, verify the chain switchyard serves; a restart serves the stored certificate without
//! ordering again.
mod support;
use serde_json::json;
use std::time::Duration;
use support::pebble::{curl, free_tcp_port, Pebble};
use support::tls::{https_port, PyClient};
use support::*;

fn acme_config(http_port: u16, pebble: &Pebble, backend: &Backend, domains: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{http_port}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n\
[tls]\nlisten = \"127.0.0.1:0\"\nredirect_http = true\n\n\
[tls.acme]\ndirectory = \"{}\"\nemail = \"ops@acme-a.test\"\n\
domains = [{domains}]\nca = \"pebble-ca.pem\"\n",
        targets_toml(&[backend.address()]),
        pebble.directory,
    )
}

#[test]
fn pebble_issues_certificates_that_clients_verify_and_a_restart_reuses_them() {
    let dir = TempDir::new("acme");
    let d = dir.0.clone();
    let http_port = free_tcp_port();
    let pebble = Pebble::start(&d, http_port, None);
    let b = Backend::start("one");
    let cfg = acme_config(http_port, &pebble, &b, "\"acme-a.test\", \"acme-b.test\"");
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = https_port(&sy);
    for dom in ["acme-a.test", "acme-b.test"] {
        assert!(
            sy.wait_log(
                &format!("acme: certificate for {dom} installed"),
                Duration::from_secs(90)
            ),
            "{}\n--- pebble:\n{}",
            sy.log_text(),
            pebble.log()
        );
    }
    let root_file = pebble.root(&d);
    let mut py = PyClient::start();
    for dom in ["acme-a.test", "acme-b.test"] {
        let r = py.call(json!({"op": "handshake", "port": port, "sni": dom, "ca": root_file}));
        assert_eq!(r["ok"], true, "{dom}: {r}");
    }
    let (ok, body, err) = curl(&[
        "-sS",
        "--cacert",
        &root_file,
        "--resolve",
        &format!("acme-a.test:{port}:127.0.0.1"),
        &format!("https://acme-a.test:{port}/through"),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    // The redirect covers ACME domains too.
    let r = raw(
        sy.http,
        b"GET /x HTTP/1.1\r\nHost: acme-b.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&r), 308, "{r}");

    let h: serde_json::Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let certs = h["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{h}");
    assert!(certs.iter().all(|c| c["source"] == "acme"), "{h}");
    let orders = sy.log_text().matches("acme: ordering").count();
    assert_eq!(orders, 2);
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());

    // A restart serves the stored certificates without a new order.
    let state = sy
        .config_path
        .parent()
        .unwrap()
        .join("switchyard-state.acme.json");
    assert!(state.exists());
    let dir = sy.kill();
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = https_port(&sy);
    assert!(wait_until(Duration::from_secs(10), || {
        py.call(json!({"op": "handshake", "port": port, "sni": "acme-a.test", "ca": root_file}))
            ["ok"]
            == true
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !sy.log_text().contains("acme: ordering"),
        "{}",
        sy.log_text()
    );
}

#[test]
fn a_short_lived_certificate_is_renewed_and_swapped_in_without_a_restart() {
    let dir = TempDir::new("acme-renew");
    let d = dir.0.clone();
    let http_port = free_tcp_port();
    // Six-second certificates: renewed at half their life, whatever renew_before says.
    let pebble = Pebble::start(&d, http_port, Some(6));
    let b = Backend::start("one");
    let sy = Switchyard::start_in(
        &acme_config(http_port, &pebble, &b, "\"acme-r.test\""),
        &[],
        dir,
    );
    let port = https_port(&sy);
    let installed = |n: usize| {
        sy.wait_log_count(
            "acme: certificate for acme-r.test installed",
            n,
            Duration::from_secs(60),
        )
    };
    assert!(
        installed(1),
        "{}\n--- pebble:\n{}",
        sy.log_text(),
        pebble.log()
    );
    let root_file = pebble.root(&d);
    let mut py = PyClient::start();
    let first =
        py.call(json!({"op": "handshake", "port": port, "sni": "acme-r.test", "ca": root_file}));
    assert_eq!(first["ok"], true, "{first}");
    assert!(installed(2), "{first}\n{}", sy.log_text());
    let second =
        py.call(json!({"op": "handshake", "port": port, "sni": "acme-r.test", "ca": root_file}));
    assert_eq!(second["ok"], true, "{second}");
    assert_ne!(
        first["sha256"], second["sha256"],
        "the renewed leaf is served"
    );
    // Renewal waits for half the lifetime: not an order per loop turn.
    std::thread::sleep(Duration::from_secs(1));
    let orders = sy.log_text().matches("acme: ordering").count();
    assert!(orders <= 3, "{orders} orders:\n{}", sy.log_text());
}
