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

/// pebble and its DNS on loopback, pointed at `http_port` for http-01.
struct Pebble {
    _procs: (Proc, Proc),
    directory: String,
    mgmt_port: u16,
    ca_file: String,
    log: std::path::PathBuf,
}

impl Pebble {
    fn start(d: &Path, http_port: u16, validity_secs: Option<u64>) -> Pebble {
        // Pebble's own HTTPS certificate, from a CA made here (switchyard trusts it through
        // `[tls.acme] ca`, as for any private ACME server).
        let ca = Ca::new("pebble-https");
        std::fs::write(d.join("pebble-ca.pem"), &ca.cert_pem).unwrap();
        let (pc, pk) = ca.leaf(&["localhost", "127.0.0.1"]).write(d, "pebble", "");
        let (dns, chall_mgmt) = (free_udp_port(), free_tcp_port());
        let (acme_port, mgmt_port) = (free_tcp_port(), free_tcp_port());
        let mut conf = json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": pc, "privateKey": pk,
            "httpPort": http_port, "tlsPort": free_tcp_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false});
        if let Some(v) = validity_secs {
            conf["certificateValidityPeriod"] = json!(v);
        }
        std::fs::write(d.join("pebble.json"), json!({ "pebble": conf }).to_string()).unwrap();
        let chall = spawn(
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
        let log = d.join("pebble.log");
        let pebble = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(d.join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns}"))
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            &log,
        );
        let ca_file = d.join("pebble-ca.pem").display().to_string();
        let directory = format!("https://127.0.0.1:{acme_port}/dir");
        assert!(
            wait_until(Duration::from_secs(20), || curl(&[
                "-sf", "--cacert", &ca_file, &directory
            ])
            .0),
            "pebble did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Pebble {
            _procs: (chall, pebble),
            directory,
            mgmt_port,
            ca_file,
            log,
        }
    }

    /// Pebble's root for the chains it issues, as a file in `d`.
    fn root(&self, d: &Path) -> String {
        let (ok, root, err) = curl(&[
            "-sS",
            "--cacert",
            &self.ca_file,
            &format!("https://127.0.0.1:{}/roots/0", self.mgmt_port),
        ]);
        assert!(ok, "{err}");
        std::fs::write(d.join("root.pem"), &root).unwrap();
        d.join("root.pem").display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

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
