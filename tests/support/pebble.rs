//! pebble (Debian's `pebble` package) and `pebble-challtestsrv` on loopback for the ACME
//! tests: pebble's DNS is the challenge test server resolving every name to 127.0.0.1, and its
//! http-01 port is a switchyard plain listener. Every process is killed on drop.
use super::tls::Ca;
use super::wait_until;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (Debian package pebble)")),
    )
}

pub fn curl(args: &[&str]) -> (bool, String, String) {
    let o = Command::new("curl").args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// pebble and its DNS on loopback, pointed at `http_port` for http-01.
pub struct Pebble {
    _procs: (Proc, Proc),
    pub directory: String,
    pub mgmt_port: u16,
    pub ca_file: String,
    pub log: std::path::PathBuf,
}

impl Pebble {
    pub fn start(d: &Path, http_port: u16, validity_secs: Option<u64>) -> Pebble {
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
    pub fn root(&self, d: &Path) -> String {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Pebble {
    /// New orders pebble accepted: its WFE logs `Added order "<id>" to the db` once for each
    /// newOrder request it stores (pebble's log is unbuffered Go `log` output).
    pub fn orders(&self) -> usize {
        self.log().matches("Added order ").count()
    }

    /// Serials of the certificates pebble issued (`Issued certificate serial <hex> for order
    /// <id>`), in order.
    pub fn issued_serials(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split("Issued certificate serial ").nth(1))
            .filter_map(|r| r.split_whitespace().next())
            // Hex of the serial's bytes; without leading zeros, as TLS clients print it.
            .map(|h| h.trim_start_matches('0').to_lowercase())
            .collect()
    }
}
