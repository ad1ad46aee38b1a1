//! Memory per idle client connection: starts switchyard on loopback with its own tiny backend,
//! opens N keep-alive connections that each made one request, and reports the VmRSS delta / N.
//!
//! Usage: idle_conns <switchyard binary> [connections, default 10000]
//! (scripts/idle-conns.sh builds both and raises the fd limit first.)
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Answers every request on a connection with a small fixed body, until the peer closes.
fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                let mut line = String::new();
                loop {
                    // Requests from switchyard here have no body: read to the blank line.
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends one GET and reads its answer whole (Content-Length framed), leaving the connection
/// idle in keep-alive.
fn one_request(s: &mut TcpStream) -> std::io::Result<()> {
    // Bounded: a stuck proxy fails the run instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-conns\r\n\r\n")?;
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: idle_conns <switchyard binary> [connections]");
    let n: usize = args.next().map_or(10_000, |v| v.parse().expect("count"));
    let back = backend();
    let (http, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("switchyard-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{http}\"\nworkers = 1\naccess_log = false\n\
             idle_timeout = 600\nmax_connections = {}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
             [[targets]]\naddress = \"127.0.0.1:{back}\"\n",
            n + 100
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchyard");
    let proxy = Proxy(child);
    let pid = proxy.0.id();
    let addr = format!("127.0.0.1:{http}");
    let start = Instant::now();
    let mut warm = loop {
        match TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("switchyard did not start: {e}"),
        }
    };
    // Warm-up: the first requests pay for the runtime, the pool and the allocator's arenas.
    for _ in 0..200 {
        one_request(&mut warm).expect("warm-up request");
    }
    let mut warmers: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    for s in &mut warmers {
        one_request(s).expect("warm-up request");
    }
    drop(warmers);
    settle();
    let base = rss_kib(pid);

    // Phase 1: connections that were accepted and have sent nothing yet.
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(&addr) {
            Ok(s) => conns.push(s),
            Err(e) => panic!("connection {i} failed: {e} (raise ulimit -n)"),
        }
    }
    settle();
    let connected = rss_kib(pid);

    // Phase 2: each made one request and now sits idle in keep-alive.
    for (i, s) in conns.iter_mut().enumerate() {
        if let Err(e) = one_request(s) {
            panic!("request on connection {i} failed: {e}");
        }
    }
    settle();
    let idle = rss_kib(pid);
    let per = |kib: u64| kib.saturating_sub(base) as f64 / n as f64;
    println!("switchyard VmRSS: {base} KiB before, {connected} KiB with {n} fresh connections, {idle} KiB with {n} idle keep-alive connections");
    println!(
        "RSS per connection: {:.2} KiB fresh (no request yet), {:.2} KiB idle after one request (goal <= 16 KiB)",
        per(connected),
        per(idle)
    );
    drop(conns);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
