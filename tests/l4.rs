//! `[[tcp]]` L4 listeners over real loopback sockets: balancing, failover, half-close, PROXY
//! protocol bytes, TCP health checks, and listeners following a reload.
mod support;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// A std echo service: greets each connection with `<name>\n`, then echoes until the client
/// half-closes, then closes its side. Stops accepting (and closes its socket) on drop.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(name: &str) -> Echo {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    fn start_on(name: &str, addr: SocketAddr) -> Echo {
        let l = std::net::TcpListener::bind(addr).expect("bind echo");
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let greeting = format!("{name}\n");
        let thread = std::thread::spawn(move || {
            while !st.load(SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let g = greeting.clone();
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                            let _ = s.write_all(g.as_bytes());
                            let mut b = [0u8; 4096];
                            loop {
                                match s.read(&mut b) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if s.write_all(&b[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = s.shutdown(Shutdown::Write);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An L4 client connection with bounded reads.
struct L4Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl L4Conn {
    fn connect(addr: SocketAddr) -> L4Conn {
        Self::from(TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect"))
    }

    /// Connects from a chosen loopback source address (all of 127/8 is local on Linux).
    fn connect_from(src: &str, addr: SocketAddr) -> L4Conn {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let from: SocketAddr = format!("{src}:0").parse().unwrap();
        sock.bind(&from.into()).expect("bind source");
        sock.connect_timeout(&addr.into(), Duration::from_secs(3))
            .expect("connect");
        Self::from(TcpStream::from(sock))
    }

    fn from(s: TcpStream) -> L4Conn {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        L4Conn { s, buf: Vec::new() }
    }

    /// Reads until `n` bytes are buffered; returns them.
    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = [0u8; 4096];
        while self.buf.len() < n {
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.buf.extend_from_slice(&b[..k]),
            }
        }
        let k = n.min(self.buf.len());
        self.buf.drain(..k).collect()
    }

    /// The echo service's greeting line: which target answered.
    fn greeting(&mut self) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            let b = self.read_n(1);
            if b.is_empty() {
                break;
            }
            line.extend_from_slice(&b);
        }
        String::from_utf8_lossy(&line).trim().to_string()
    }

    fn echo(&mut self, data: &[u8]) -> Vec<u8> {
        self.s.write_all(data).expect("write");
        self.read_n(data.len())
    }

    fn rest(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let _ = self.s.read_to_end(&mut out);
        out
    }
}

/// The address of each listener bound (`tcp listener on ADDR -> ...`), in log order.
fn tcp_addrs(sy: &Switchyard) -> Vec<SocketAddr> {
    let log = sy.log_text();
    log.match_indices("tcp listener on ")
        .filter_map(|(i, m)| {
            let mut words = log[i + m.len()..].split_whitespace();
            let addr = words.next()?.parse().ok()?;
            (words.next() == Some("->")).then_some(addr)
        })
        .collect()
}

fn tcp_section(listen: &str, targets: &[String], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[tcp]]\nlisten = \"{listen}\"\ntargets = [{}]\n{extra}\n\n",
        list.join(", ")
    )
}

fn start_l4(tcp: &str) -> (Switchyard, Vec<SocketAddr>) {
    let sy = Switchyard::start(&format!("{}{tcp}", listen_section("")));
    let want = tcp.matches("[[tcp]]").count();
    assert!(
        wait_until(Duration::from_secs(5), || tcp_addrs(&sy).len() >= want),
        "{}",
        sy.log_text()
    );
    let addrs = tcp_addrs(&sy);
    (sy, addrs)
}

#[test]
fn round_robin_spreads_and_half_close_keeps_the_echo() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let (_sy, l) = start_l4(&tcp_section("127.0.0.1:0", &[a.address(), b.address()], ""));
    let mut seen = Vec::new();
    for i in 0..6 {
        let mut c = L4Conn::connect(l[0]);
        seen.push(c.greeting());
        let msg = format!("message {i} ").repeat(1000);
        c.s.write_all(msg.as_bytes()).unwrap();
        // FIN towards the target; the way back stays open for the rest of the echo.
        c.s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(c.rest(), msg.as_bytes(), "connection {i}");
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 3, "{seen:?}");
}

#[test]
fn source_hash_sticks_to_a_target_and_fails_over() {
    let mut echos = [Echo::start("e0"), Echo::start("e1"), Echo::start("e2")];
    let targets: Vec<String> = echos.iter().map(Echo::address).collect();
    let (sy, l) = start_l4(&tcp_section(
        "127.0.0.1:0",
        &targets,
        "balance = \"source_hash\"",
    ));
    let pick = |src: &str| L4Conn::connect_from(src, l[0]).greeting();
    let mut firsts = std::collections::HashSet::new();
    for src in [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ] {
        let first = pick(src);
        for _ in 0..4 {
            assert_eq!(pick(src), first, "{src} moved");
        }
        firsts.insert(first);
    }
    assert!(
        firsts.len() >= 2,
        "five clients all on one target: {firsts:?}"
    );
    // The sticky target dies: its clients go to the next target, and stick there.
    let before = pick("127.0.0.1");
    let idx: usize = before[1..].parse().unwrap();
    echos[idx].stop();
    let after = pick("127.0.0.1");
    assert_ne!(after, before);
    assert_eq!(
        after,
        format!("e{}", (idx + 1) % 3),
        "failover goes to the next in order"
    );
    assert_eq!(pick("127.0.0.1"), after);
    assert!(sy.log_text().contains("trying the next candidate"));
}

#[test]
fn dead_target_is_skipped_and_tcp_health_check_marks_it_down() {
    let live = Echo::start("live");
    let dead = format!("127.0.0.1:{}", dead_port());
    let tcp = tcp_section(
        "127.0.0.1:0",
        &[dead.clone(), live.address()],
        "health_check = \"tcp\"",
    );
    let cfg = format!(
        "{}[gateway]\nhealth_check_interval = 0.2\nhealth_check_timeout = 1\nmax_consecutive_failures = 2\ndown_check_interval = 30\n\n{tcp}",
        listen_section("")
    );
    let sy = Switchyard::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || !tcp_addrs(&sy).is_empty()));
    let l = tcp_addrs(&sy)[0];
    // Before the checks settle, a connect failure moves on to the next target.
    for _ in 0..4 {
        assert_eq!(L4Conn::connect(l).greeting(), "live");
    }
    assert!(
        sy.wait_log(&format!("{dead} is DOWN"), Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    let tries = sy.log_text().matches("trying the next candidate").count();
    for _ in 0..6 {
        let mut c = L4Conn::connect(l);
        assert_eq!(c.greeting(), "live");
        assert_eq!(c.echo(b"ping"), b"ping");
    }
    assert_eq!(
        sy.log_text().matches("trying the next candidate").count(),
        tries,
        "a DOWN target is not tried"
    );
    // /health shows the listener's targets; /metrics has them too.
    let h: serde_json::Value = client()
        .get(sy.admin_url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listener = &h["tcp"][l.to_string()];
    assert_eq!(listener[&dead]["status"], "DOWN", "{h}");
    assert_eq!(listener[live.address()]["status"], "UP", "{h}");
    assert_eq!(h["status"], "degraded");
    let m = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains(&format!("switchyard_upstream_up{{address=\"{dead}\"}} 0")),
        "{m}"
    );
}

#[test]
fn proxy_protocol_v1_and_v2_header_bytes_are_exact() {
    // The target records everything it got before the client's "ping".
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let g = got.clone();
    let raw = RawBackend::start(move |mut s| {
        let mut all = Vec::new();
        let mut b = [0u8; 512];
        while !all.ends_with(b"ping") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&b[..n]),
            }
        }
        g.lock().unwrap().push(all);
        let _ = s.write_all(b"pong");
    });
    let tcp = format!(
        "{}{}",
        tcp_section("127.0.0.1:0", &[raw.address()], "send_proxy = \"v1\""),
        tcp_section("127.0.0.1:0", &[raw.address()], "send_proxy = \"v2\"")
    );
    let (_sy, l) = start_l4(&tcp);

    let mut c = L4Conn::connect(l[0]);
    let cport = c.s.local_addr().unwrap().port();
    assert_eq!(c.echo(b"ping"), b"pong");
    let v1 = got.lock().unwrap().pop().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v1),
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {cport} {}\r\nping",
            l[0].port()
        )
    );

    let mut c = L4Conn::connect(l[1]);
    let cport = c.s.local_addr().unwrap().port();
    assert_eq!(c.echo(b"ping"), b"pong");
    let v2 = got.lock().unwrap().pop().unwrap();
    let mut want = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&cport.to_be_bytes());
    want.extend_from_slice(&l[1].port().to_be_bytes());
    want.extend_from_slice(b"ping");
    assert_eq!(v2, want);
}

#[test]
fn reload_adds_removes_and_retargets_listeners_without_touching_connections() {
    let (e1, e2) = (Echo::start("one"), Echo::start("two"));
    let (p1, p2) = (dead_port(), dead_port());
    let (l1, l2): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{p1}").parse().unwrap(),
        format!("127.0.0.1:{p2}").parse().unwrap(),
    );
    let mut sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        tcp_section(&l1.to_string(), &[e1.address()], "")
    ));
    assert!(wait_until(Duration::from_secs(5), || tcp_addrs(&sy).len() == 1));
    let mut old = L4Conn::connect(l1);
    assert_eq!(old.greeting(), "one");
    assert_eq!(old.echo(b"before"), b"before");

    // l1 removed, l2 added.
    std::fs::write(
        &sy.config_path,
        format!(
            "{}{}",
            listen_section(""),
            tcp_section(&l2.to_string(), &[e2.address()], "")
        ),
    )
    .unwrap();
    sy.signal("HUP");
    assert!(sy.wait_log("reloaded", Duration::from_secs(5)));
    assert!(sy.wait_log(
        &format!("tcp listener on {l1} removed"),
        Duration::from_secs(5)
    ));
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect(l1).is_err()),
        "a removed listener stops accepting"
    );
    assert_eq!(old.echo(b"after"), b"after", "the open connection goes on");
    let mut on_l2 = L4Conn::connect(l2);
    assert_eq!(on_l2.greeting(), "two");

    // l2 kept with a new target: new connections use it, the open one stays where it was.
    std::fs::write(
        &sy.config_path,
        format!(
            "{}{}",
            listen_section(""),
            tcp_section(&l2.to_string(), &[e1.address()], "")
        ),
    )
    .unwrap();
    sy.signal("HUP");
    assert!(sy.wait_log(
        &format!("tcp listener on {l2} now ->"),
        Duration::from_secs(5)
    ));
    assert_eq!(L4Conn::connect(l2).greeting(), "one");
    assert_eq!(on_l2.echo(b"still"), b"still");
    assert_eq!(old.echo(b"and still"), b"and still");
    assert_eq!(
        sy.log_text()
            .matches(&format!("tcp listener on {l2} -> "))
            .count(),
        1,
        "a kept listener is not bound again"
    );

    // SIGTERM: the L4 listener stops; open L4 connections get up to drain_timeout.
    drop(old);
    drop(on_l2);
    sy.signal("TERM");
    assert_eq!(sy.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn check_counts_tcp_listeners() {
    let dir = TempDir::new("l4check");
    let p = dir.0.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "{}{}",
            listen_section(""),
            tcp_section("127.0.0.1:5433", &["127.0.0.1:5432".into()], "")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("-c")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tcp 1"), "{text}");
}
