//! A real etcd for the fleet tests: started on free loopback ports with a temporary data dir,
//! stoppable and restartable on the same ports. A missing etcd binary fails loudly.
use super::{dead_port, wait_until, TempDir};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            client_port: dead_port(),
            peer_port: dead_port(),
            dir: TempDir::new("etcd"),
        };
        e.resume();
        e
    }

    /// An etcd that will listen on this client port once `resume` is called.
    pub fn on_port_not_started(client_port: u16) -> Etcd {
        Etcd {
            child: None,
            client_port,
            peer_port: dead_port(),
            dir: TempDir::new("etcd"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts (again) on the same ports and data dir; waits until it answers.
    pub fn resume(&mut self) {
        assert!(
            Command::new("etcd")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok(),
            "the fleet tests need etcd: apt-get install etcd-server (.ci/run does)"
        );
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.0.join("data"))
            .args([
                "--listen-client-urls",
                &self.endpoint(),
                "--advertise-client-urls",
                &self.endpoint(),
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(20), || {
            self.ctl(&["endpoint", "health"]).is_ok()
        });
        assert!(ok, "etcd did not become healthy");
    }

    /// Kills etcd (the data dir stays for `resume`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// etcd's own count of bytes sent to its gRPC clients (from its `/metrics`): what the
    /// replicas cost it on the wire, measured by etcd and not by switchyard.
    pub fn grpc_sent_bytes(&self) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.endpoint()))
            .and_then(|r| r.text())
            .expect("etcd /metrics");
        super::metrics::sample(&text, "etcd_network_client_grpc_sent_bytes_total")
            .expect("etcd_network_client_grpc_sent_bytes_total in etcd's /metrics")
    }

    /// Runs etcdctl against this etcd; Ok(stdout) on success.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint(),
                "--dial-timeout",
                "1s",
                "--command-timeout",
                "2s",
            ])
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e} (apt-get install etcd-client)"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
