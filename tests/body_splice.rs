//! splice(2) for HTTP/1.1 Content-Length bodies (issue 17) over real sockets: 1 and 8 MiB
//! downloads and uploads byte-exact on one keep-alive connection (and the backend connection
//! pooled after each), a backend that closes mid-body, a client that gives up mid-upload, a
//! body over TLS (not spliced, still exact), and a retryable PUT kept for its replay (not
//! spliced, replayed exact). `switchyard_body_spliced_bytes_total` shows which path a body
//! took; every other assertion holds for the copy loop as well. Every test is bounded in time.
mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use support::backend::{fnv, pattern};
use support::*;

const MIB: usize = 1024 * 1024;
/// Body bytes that may go with the head (coalesced) or through the first buffer instead of
/// the pipe, per body.
const FIRST: usize = 32 * 1024;

fn config(targets: &[String], extra: &str) -> String {
    format!(
        "{}{}{extra}\n",
        listen_section("access_log = true\naccess_log_format = \"json\"\naccess_log_path = \"access.log\"\nidle_timeout = 5"),
        targets_toml(targets)
    )
}

fn spliced(sy: &Switchyard) -> u64 {
    let text = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    support::metrics::sample(&text, "switchyard_body_spliced_bytes_total")
        .unwrap_or_else(|| panic!("no spliced counter in /metrics")) as u64
}

fn log_path(sy: &Switchyard) -> PathBuf {
    sy.config_path.parent().unwrap().join("access.log")
}

/// The access log's lines as JSON, once it has at least `n`.
fn log_lines(sy: &Switchyard, n: usize) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), || {
        got = std::fs::read_to_string(log_path(sy))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        got.len() >= n
    });
    assert!(got.len() >= n, "{} line(s): {got:?}", got.len());
    got
}

/// A body that is not the backend's own pattern, so an echo cannot pass by coincidence.
fn upload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) % 253) as u8).collect()
}

fn conn(sy: &Switchyard) -> RawConn {
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c
}

#[test]
fn downloads_are_spliced_byte_exact_and_both_connections_carry_the_next_request() {
    let b = Backend::start("down");
    let sy = Switchyard::start(&config(&[b.address()], ""));
    let before = spliced(&sy);
    let mut c = conn(&sy);
    let mut heads = Vec::new();
    for n in [MIB, 8 * MIB] {
        c.send(format!("GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.read_response(false).expect("an answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n);
        assert_eq!(fnv(&r.body), fnv(&pattern(n)), "{n} bytes arrived altered");
        heads.push(r.head.len() + 4);
    }
    // The same client connection reads the next request after exactly the body.
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("the next answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/after");
    assert_eq!(
        b.connections(),
        1,
        "the backend connection went back to the pool after each body"
    );
    let moved = spliced(&sy) - before;
    // The access log counts what reached the client, spliced bytes included.
    let lines = log_lines(&sy, 3);
    for (i, n) in [MIB, 8 * MIB].into_iter().enumerate() {
        assert_eq!(lines[i]["status"], 200);
        assert_eq!(lines[i]["bytes_out"], (heads[i] + n) as u64, "{}", lines[i]);
    }
    assert!(
        moved >= (9 * MIB - 2 * FIRST) as u64 && moved <= (9 * MIB) as u64,
        "spliced {moved} of {} body bytes",
        9 * MIB
    );
}

#[test]
fn uploads_are_spliced_byte_exact_and_both_connections_carry_the_next_request() {
    let b = Backend::start("up");
    let sy = Switchyard::start(&config(&[b.address()], ""));
    let before = spliced(&sy);
    let mut c = conn(&sy);
    // A PUT over max_retry_body (65536 by default) is not kept, a POST without a key never.
    let mut sent = Vec::new();
    for (method, n) in [("PUT", MIB), ("POST", 8 * MIB)] {
        let data = upload(n);
        let head = format!("{method} /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n");
        c.send(head.as_bytes()).unwrap();
        let mut data_next = data.clone();
        if n > MIB {
            // Pipelined right behind the body, in the same segments: it must stay for the
            // next read, not be spliced up with the body.
            data_next.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        c.send(&data_next).unwrap();
        let r = c.read_response(false).expect("an answer");
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["method"], method);
        assert_eq!(v["body_len"], n);
        assert_eq!(
            v["body_fnv"],
            fnv(&data).to_string(),
            "{n} bytes arrived altered"
        );
        sent.push(head.len() + n);
    }
    let r = c.read_response(false).expect("the next answer");
    assert_eq!(r.json()["target"], "/after");
    assert_eq!(r.json()["body_len"], 0);
    assert_eq!(
        b.connections(),
        1,
        "the backend connection was pooled each time"
    );
    assert_eq!(b.complete(), 3);
    let moved = spliced(&sy) - before;
    let lines = log_lines(&sy, 3);
    for (i, n) in sent.into_iter().enumerate() {
        assert_eq!(lines[i]["bytes_in"], n as u64, "{}", lines[i]);
    }
    assert!(
        moved >= (9 * MIB - 2 * FIRST) as u64 && moved <= (9 * MIB) as u64,
        "spliced {moved} of {} body bytes",
        9 * MIB
    );
}

#[test]
fn a_backend_that_closes_mid_body_cuts_the_client_off_after_every_byte_it_sent() {
    // 4 MiB announced, 1 MiB sent, then the connection closes.
    let back = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n");
        let _ = s.write_all(&pattern(MIB));
    });
    let sy = Switchyard::start(&config(&[back.address()], ""));
    let before = spliced(&sy);
    let mut c = conn(&sy);
    c.send(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = c.read_head().expect("the head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("4194304"));
    let got = c.read_to_end();
    assert_eq!(
        got.len(),
        MIB,
        "every byte the backend sent, then the close"
    );
    assert!(got == pattern(MIB), "bytes differ");
    assert!(c.closed_within(Duration::from_secs(2)));
    let moved = spliced(&sy) - before;
    // The head was relayed: the log says 200, with the bytes that reached the client.
    let lines = log_lines(&sy, 1);
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(
        lines[0]["bytes_out"],
        (head.head.len() + 4 + MIB) as u64,
        "{}",
        lines[0]
    );
    // The proxy goes on serving.
    let mut c2 = conn(&sy);
    c2.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c2.read_head().expect("a second answer").status, 200);
    assert!(moved > (MIB - FIRST) as u64, "spliced {moved}");
}

#[test]
fn a_client_that_gives_up_mid_upload_closes_the_backend_connection_after_what_it_sent() {
    // The backend reads the body to its end or to EOF, and reports what it got.
    let got = Arc::new(AtomicUsize::new(0));
    let eof = Arc::new(AtomicBool::new(false));
    let (g, e) = (got.clone(), eof.clone());
    let back = RawBackend::start(move |mut s| {
        let head = read_request_head(&mut s);
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        let mut n = head.len() - end;
        let mut b = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    e.store(true, SeqCst);
                    break;
                }
                Ok(k) => n += k,
                Err(_) => break,
            }
        }
        g.store(n, SeqCst);
    });
    let sy = Switchyard::start(&config(&[back.address()], ""));
    let before = spliced(&sy);
    let mut s = TcpStream::connect(sy.http).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n")
        .unwrap();
    s.write_all(&upload(2 * MIB)).unwrap();
    drop(s);
    assert!(
        wait_until(Duration::from_secs(5), || eof.load(SeqCst)),
        "the backend connection was not closed"
    );
    assert_eq!(
        got.load(SeqCst),
        2 * MIB,
        "every byte the client sent went up"
    );
    let moved = spliced(&sy) - before;
    // Nothing was answered, so nothing is logged for it; the next request is.
    let mut c = conn(&sy);
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let _ = c.read_head();
    let lines = log_lines(&sy, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["path"], "/next");
    assert!(moved > (2 * MIB - FIRST) as u64, "spliced {moved}");
}

#[test]
fn bodies_through_tls_are_copied_not_spliced_and_stay_exact() {
    let b = Backend::start("tls");
    let dir = TempDir::new("splice-tls");
    let ca = support::tls::Ca::new("front");
    let leaf = ca.leaf(&["a.test"]);
    leaf.write(&dir.0, "a", &ca.cert_pem);
    std::fs::write(dir.0.join("ca.pem"), &ca.cert_pem).unwrap();
    let cfg = config(
        &[b.address()],
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
    );
    let sy = Switchyard::start_in(&cfg, &[], dir);
    let port = support::tls::https_port(&sy);
    let work = sy.config_path.parent().unwrap().to_path_buf();
    let data = upload(2 * MIB);
    std::fs::write(work.join("up.bin"), &data).unwrap();
    let before = spliced(&sy);
    let url = |p: &str| format!("https://a.test:{port}{p}");
    // One curl, one HTTP/1.1 connection (ALPN would pick HTTP/2, a path that never splices):
    // a 2 MiB download, then a 2 MiB upload.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--max-time", "20", "--cacert"])
        .arg(work.join("ca.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .arg(url(&format!("/bytes/{}", 2 * MIB)))
        .arg("-o")
        .arg(work.join("down.bin"))
        .arg("--next")
        .args(["-sS", "--http1.1", "--max-time", "20", "--cacert"])
        .arg(work.join("ca.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", work.join("up.bin").display()))
        .arg(url("/upload"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down = std::fs::read(work.join("down.bin")).unwrap();
    assert_eq!(down.len(), 2 * MIB);
    assert_eq!(fnv(&down), fnv(&pattern(2 * MIB)));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body_len"], 2 * MIB);
    assert_eq!(v["body_fnv"], fnv(&data).to_string());
    assert_eq!(spliced(&sy) - before, 0, "TLS bytes went through a pipe");
}

#[test]
fn a_retryable_put_under_max_retry_body_is_kept_and_replayed_not_spliced() {
    // The first address takes part of the body and resets; the PUT (idempotent, 1 MiB, under
    // a 4 MiB max_retry_body) is sent again, whole, to the second.
    let rude = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let mut b = vec![0u8; 100 * 1024];
        let _ = s.read(&mut b);
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    });
    let good = Backend::start("good");
    let sy = Switchyard::start(&config(
        &[rude.address(), good.address()],
        "[outlier]\nconsecutive_failures = 0\n[retry]\nmin_retries_per_second = 1000\nmax_retry_body = 4194304\n",
    ));
    let before = spliced(&sy);
    let data = upload(MIB);
    let mut c = conn(&sy);
    for i in 0..2 {
        let head = format!(
            "PUT /upload HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nContent-Length: {MIB}\r\n\r\n"
        );
        c.send(head.as_bytes()).unwrap();
        c.send(&data).unwrap();
        let r = c.read_response(false).expect("an answer");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_len"], MIB);
        assert_eq!(r.json()["body_fnv"], fnv(&data).to_string());
    }
    assert!(
        rude.accepted() >= 1,
        "round robin never chose the failing address"
    );
    assert_eq!(good.complete(), 2);
    assert_eq!(spliced(&sy) - before, 0, "a kept body went through a pipe");
}
