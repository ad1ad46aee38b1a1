//! ACME end to end (SPEC §9) against a real ACME server on loopback: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS resolving every name to 127.0.0.1 and its http-01 port
//! pointed at switchyard's plain listener. Then Python `ssl` and curl, trusting only pebble's
//! root, verify the chain switchyard serves; a restart serves the stored certificate without
//! ordering again.
mod support;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::tls::{https_port, Ca, PyClient};
use support::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (Debian package pebble)")),
    )
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let o = Command::new("curl").args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn pebble_issues_certificates_that_clients_verify_and_a_restart_reuses_them() {
    let dir = TempDir::new("acme");
    let d = dir.0.clone();
    // Pebble's own HTTPS certificate, from a CA made here (switchyard trusts it through
    // `[tls.acme] ca`, as for any private ACME server).
    let ca = Ca::new("pebble-https");
    std::fs::write(d.join("pebble-ca.pem"), &ca.cert_pem).unwrap();
    let (pc, pk) = ca.leaf(&["localhost", "127.0.0.1"]).write(&d, "pebble", "");
    let (dns, chall_mgmt) = (free_udp_port(), free_tcp_port());
    let (acme_port, mgmt_port, http_port) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    std::fs::write(
        d.join("pebble.json"),
        json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": pc, "privateKey": pk,
            "httpPort": http_port, "tlsPort": free_tcp_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false}})
        .to_string(),
    )
    .unwrap();
    let _chall = spawn(
        Command::new("pebble-challtestsrv").args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{chall_mgmt}"),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]),
        &d.join("challtestsrv.log"),
    );
    let _pebble = spawn(
        Command::new("pebble")
            .arg("-config")
            .arg(d.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns}"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0"),
        &d.join("pebble.log"),
    );
    let ca_file = d.join("pebble-ca.pem").display().to_string();
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    assert!(
        wait_until(Duration::from_secs(20), || curl(&[
            "-sf", "--cacert", &ca_file, &directory
        ])
        .0),
        "pebble did not come up: {}",
        std::fs::read_to_string(d.join("pebble.log")).unwrap_or_default()
    );

    let b = Backend::start("one");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{http_port}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n\
[tls]\nlisten = \"127.0.0.1:0\"\nredirect_http = true\n\n\
[tls.acme]\ndirectory = \"{directory}\"\nemail = \"ops@acme-a.test\"\n\
domains = [\"acme-a.test\", \"acme-b.test\"]\nca = \"pebble-ca.pem\"\n",
        targets_toml(&[b.address()])
    );
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
            std::fs::read_to_string(d.join("pebble.log")).unwrap_or_default()
        );
    }
    // Pebble's root for the chain it issued, from its management interface.
    let (ok, root, err) = curl(&[
        "-sS",
        "--cacert",
        &ca_file,
        &format!("https://127.0.0.1:{mgmt_port}/roots/0"),
    ]);
    assert!(ok, "{err}");
    std::fs::write(d.join("root.pem"), &root).unwrap();
    let root_file = d.join("root.pem").display().to_string();

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
