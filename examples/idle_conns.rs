//! Memory per idle client connection, and the latency of a few active ones next to them:
//! starts switchyard on loopback with its own tiny backend, opens idle keep-alive connections
//! in steps up to N (each made one request), and at every step reports the VmRSS delta per
//! connection and the p50/p99 of a small keep-alive load on a few other connections.
//!
//! Usage: idle_conns <switchyard binary> [connections, default 10000] [options]
//!   --split          the idle clients live in a child process (this binary again), so that
//!                    the client ends do not share one fd limit with the measuring side
//!   --sources K      bind the idle clients to 127.0.0.2 .. 127.0.0.(K+1) in turn: each source
//!                    address has its own ephemeral port range (28,232 ports to one listener)
//!   --steps S        measure at N/S, 2N/S, .. N (default 4)
//!   --active C       active keep-alive connections for the latency load (default 8)
//!   --load-secs T    seconds of active load per step (default 3)
//!   --workers W      switchyard's `workers` (default 1)
//! (scripts/idle-conns.sh builds both and raises the fd limit first.)
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Answers every request on a connection with a small fixed body, until the peer closes.
fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
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

/// A client socket from source address number `i % sources` (127.0.0.2, .3, ..), or the
/// kernel's choice of 127.0.0.1 when `sources` is 0.
fn connect(addr: SocketAddr, i: usize, sources: usize) -> std::io::Result<TcpStream> {
    if sources == 0 {
        return TcpStream::connect(addr);
    }
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // The port is picked at connect, per (source, destination): without this a bind takes a
    // port of the source address's range for good, whatever the destination.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % sources) as u8);
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    s.connect(&addr.into())?;
    Ok(s.into())
}

/// The idle client ends: `connect K` opens K more that send nothing, `request` makes one
/// request on each that has not made one yet; both answer `ok <open>` or `err <why>`.
struct Idle {
    addr: SocketAddr,
    sources: usize,
    conns: Vec<TcpStream>,
    requested: usize,
}

impl Idle {
    fn command(&mut self, line: &str) -> String {
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|v| v.parse::<usize>().ok())) {
            (Some("connect"), Some(k)) => {
                for _ in 0..k {
                    let i = self.conns.len();
                    match connect(self.addr, i, self.sources) {
                        Ok(s) => self.conns.push(s),
                        Err(e) => return format!("err connection {i}: {e} (raise ulimit -n)"),
                    }
                }
            }
            (Some("request"), _) => {
                while self.requested < self.conns.len() {
                    let i = self.requested;
                    if let Err(e) = one_request(&mut self.conns[i]) {
                        return format!("err request on connection {i}: {e}");
                    }
                    self.requested += 1;
                }
            }
            _ => return format!("err unknown command {line:?}"),
        }
        format!("ok {}", self.conns.len())
    }
}

/// The idle clients, here or in a child process.
enum Clients {
    Here(Idle),
    Child(Child, ChildStdin, BufReader<ChildStdout>),
}

impl Clients {
    fn run(&mut self, cmd: &str) {
        let answer = match self {
            Clients::Here(idle) => idle.command(cmd),
            Clients::Child(_, inp, out) => {
                writeln!(inp, "{cmd}").expect("to the client process");
                let mut line = String::new();
                out.read_line(&mut line).expect("from the client process");
                line.trim().to_string()
            }
        };
        if !answer.starts_with("ok") {
            panic!("{cmd}: {answer}");
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        if let Clients::Child(c, _, _) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The child side of `--split`: commands on stdin, answers on stdout.
fn client_main(addr: SocketAddr, sources: usize) {
    let mut idle = Idle {
        addr,
        sources,
        conns: Vec::new(),
        requested: 0,
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let answer = idle.command(&line);
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// `active` connections, one thread each, making requests back to back for `secs`:
/// (requests per second, p50 ms, p99 ms).
fn active_load(addr: SocketAddr, active: usize, secs: f64) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..active)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("active connect");
                s.set_nodelay(true).unwrap();
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    one_request(&mut s).expect("active request");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / secs, pct(0.50), pct(0.99))
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

/// The soft fd limit up to the hard one, for this process and what it starts.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        let addr = args[1].parse().expect("--client ADDR SOURCES");
        let sources = args[2].parse().expect("--client ADDR SOURCES");
        return client_main(addr, sources);
    }
    let bin = args
        .first()
        .expect("usage: idle_conns <switchyard binary> [connections] [options]")
        .clone();
    let mut n = 10_000usize;
    let (mut split, mut sources, mut steps, mut active, mut secs, mut workers) =
        (false, 0usize, 4usize, 8usize, 3.0f64, 1usize);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<f64>().ok()).expect(a);
        match a.as_str() {
            "--split" => split = true,
            "--sources" => sources = num() as usize,
            "--steps" => steps = (num() as usize).max(1),
            "--active" => active = (num() as usize).max(1),
            "--load-secs" => secs = num(),
            "--workers" => workers = num() as usize,
            v => n = v.parse().expect("connections"),
        }
    }
    let back = backend();
    let (http, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("switchyard-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{http}\"\nworkers = {workers}\naccess_log = false\n\
             idle_timeout = 600\nmax_connections = {}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
             [[targets]]\naddress = \"127.0.0.1:{back}\"\n",
            n + active + 100
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchyard");
    let proxy = Proxy(child);
    let pid = proxy.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let start = Instant::now();
    let mut warm = loop {
        match TcpStream::connect(addr) {
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
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    for s in &mut warmers {
        one_request(s).expect("warm-up request");
    }
    drop(warmers);
    let _ = active_load(addr, active, 1.0);
    settle();
    let base = rss_kib(pid);
    let (rps0, p50_0, p99_0) = active_load(addr, active, secs);

    let mut clients = if split {
        let exe = std::env::current_exe().expect("own path");
        let mut c = Command::new(exe)
            .args(["--client", &addr.to_string(), &sources.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let (inp, out) = (c.stdin.take().unwrap(), c.stdout.take().unwrap());
        Clients::Child(c, inp, BufReader::new(out))
    } else {
        Clients::Here(Idle {
            addr,
            sources,
            conns: Vec::new(),
            requested: 0,
        })
    };
    println!(
        "switchyard workers = {workers}, VmRSS {base} KiB before; clients {}, {} source address(es); \
         active load: {active} keep-alive connections, {secs} s per step",
        if split { "in a child process" } else { "in this process" },
        sources.max(1)
    );
    println!("| idle connections | RSS fresh KiB/conn | RSS idle KiB/conn | active req/s | p50 ms | p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!("| 0 | - | - | {rps0:.0} | {p50_0:.3} | {p99_0:.3} |");
    let per = |kib: u64, k: usize| kib.saturating_sub(base) as f64 / k as f64;
    let (mut open, mut before) = (0usize, base);
    for step in 1..=steps {
        let target = n * step / steps;
        let new = target - open;
        // Phase 1: connections that were accepted and have sent nothing yet.
        clients.run(&format!("connect {}", target - open));
        open = target;
        settle();
        let fresh = rss_kib(pid);
        // Phase 2: each made one request and now sits idle in keep-alive.
        clients.run("request");
        settle();
        let idle = rss_kib(pid);
        let (rps, p50, p99) = active_load(addr, active, secs);
        // Fresh: what this step's new connections added before their request; idle: all of
        // them over the base.
        println!(
            "| {open} | {:.2} | {:.2} | {rps:.0} | {p50:.3} | {p99:.3} |",
            fresh.saturating_sub(before) as f64 / new.max(1) as f64,
            per(idle, open)
        );
        before = idle;
    }
    println!("(fresh: the step's new connections before their first request, per connection; idle: VmRSS over the base, per idle connection; goal <= 8 KiB)");
    drop(clients);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
