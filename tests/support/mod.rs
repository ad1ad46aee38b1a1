//! Test harness: starts the real switchyard binary on loopback with a config, and backends
//! built on hyper (an HTTP stack independent of switchyard's own parser).
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod etcd;
pub mod metrics;
pub mod pebble;
pub mod tls;
pub mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use backend::Backend;
pub use wire::{chunk_encode, RawConn, RawResponse, WireError};

/// `[server]` and `[admin]` on loopback ephemeral ports, plus `extra` server keys.
pub fn listen_section(extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n")
}

/// A running switchyard process.
pub struct Switchyard {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub config_path: PathBuf,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("switchyard-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Switchyard {
    pub fn start(config: &str) -> Switchyard {
        Self::start_with(config, &[])
    }

    /// Starts the binary with `config` written to a file and extra environment variables;
    /// returns once both listeners are bound (their real ports read from the log).
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Switchyard {
        Self::start_in(config, env, TempDir::new("sy"))
    }

    /// Starts in a given working directory (where the file store lives), so that a restart
    /// can find the previous process's state.
    pub fn start_in(config: &str, env: &[(&str, &str)], dir: TempDir) -> Switchyard {
        Self::start_prepared(config, env, dir, |_| {})
    }

    /// Starts with the file descriptor limit (soft, hard) of the child set before it runs.
    pub fn start_with_nofile(config: &str, soft: u64, hard: u64) -> Switchyard {
        Self::start_prepared(config, &[], TempDir::new("sy"), move |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child here.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        })
    }

    /// Starts with `prepare` applied to the command first.
    pub fn start_prepared(
        config: &str,
        env: &[(&str, &str)],
        dir: TempDir,
        prepare: impl FnOnce(&mut Command),
    ) -> Switchyard {
        let config_path = dir.0.join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("-c")
            .arg(&config_path)
            .current_dir(&dir.0)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        prepare(&mut cmd);
        let mut child = cmd.spawn().expect("spawn switchyard");
        let log = Arc::new(Mutex::new(String::new()));
        // Logs on stderr and the access log on stdout (its default, SPEC §12) land in one
        // text, line by line, so tests can wait for either.
        fn collect(out: impl std::io::Read + Send + 'static, log: Arc<Mutex<String>>) {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var("SWITCHYARD_TEST_ECHO").is_ok() {
                        eprintln!("[switchyard] {line}");
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        collect(child.stderr.take().expect("stderr"), log.clone());
        collect(child.stdout.take().expect("stdout"), log.clone());
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut http, mut admin) = (None, None);
        while Instant::now() < deadline && (http.is_none() || admin.is_none()) {
            {
                let l = log.lock().unwrap();
                http = http.or_else(|| find_addr(&l, "http listener on "));
                admin = admin.or_else(|| find_addr(&l, "admin listener on "));
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "switchyard exited early ({status}):\n{}",
                    log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (Some(http), Some(admin)) = (http, admin) else {
            let _ = child.kill();
            panic!("switchyard did not start:\n{}", log.lock().unwrap());
        };
        Switchyard {
            child,
            http,
            admin,
            log,
            config_path,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (HUP, TERM, INT) to this process only.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().matches(needle).count() >= n)
    }
}

impl Switchyard {
    /// Kills the process and hands back its working directory for a restart.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self._dir, TempDir(PathBuf::new()))
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_addr(log: &str, prefix: &str) -> Option<SocketAddr> {
    let i = log.find(prefix)?;
    let rest = &log[i + prefix.len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Polls `f` every 10 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A blocking HTTP client (reqwest) with short timeouts, no proxy from the environment.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw answer.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw answer with a Content-Length body.
pub fn json_body(raw: &str) -> serde_json::Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// A loopback port that nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A hand-written backend on a std listener, for misbehaviour hyper will not produce: each
/// accepted connection goes to `handler` on its own thread. Stops accepting on drop.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RawBackend {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> RawBackend {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind raw backend");
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            while !st.load(SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        acc.fetch_add(1, SeqCst);
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let h = handler.clone();
                        std::thread::spawn(move || h(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawBackend {
            addr,
            accepted,
            stop,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads from `s` until a whole request head (CRLF CRLF) has arrived; returns it, or what
/// arrived before EOF or the read timeout.
pub fn read_request_head(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    got
}

/// `[[targets]]` entries for these addresses, without health checks.
pub fn targets_toml(addrs: &[String]) -> String {
    addrs
        .iter()
        .map(|a| format!("[[targets]]\naddress = \"{a}\"\n\n"))
        .collect()
}
