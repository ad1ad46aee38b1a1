//! Black-box body tests (SPEC §4): large Content-Length and chunked bodies both ways with
//! checksums, HTTP/1.0 de-chunking, Expect: 100-continue and Upgrade tunnels.
mod support;
use std::time::{Duration, Instant};
use support::backend::{fnv, pattern};
use support::*;

const FIVE_MIB: usize = 5 * 1024 * 1024;

fn one_backend(name: &str) -> (Backend, Switchyard) {
    let b = Backend::start(name);
    let cfg = format!("{}{}", listen_section(""), targets_toml(&[b.address()]));
    let sy = Switchyard::start(&cfg);
    (b, sy)
}

/// A body that is not the backend's own pattern, so an echo cannot pass by coincidence.
fn upload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) % 253) as u8).collect()
}

#[test]
fn five_mib_request_body_with_content_length() {
    let (b, sy) = one_backend("big");
    let data = upload(FIVE_MIB);
    let r = client()
        .post(sy.url("/upload"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["body_len"], FIVE_MIB);
    assert_eq!(v["body_fnv"], fnv(&data).to_string());
    assert_eq!(v["headers"]["content-length"], FIVE_MIB.to_string());
    assert_eq!(b.complete(), 1);
}

#[test]
fn five_mib_echoed_both_ways_at_once() {
    // The backend streams the body back while it is still arriving: the proxy must move
    // both directions at once or the two socket buffers fill and everything stalls.
    let (_b, sy) = one_backend("echo");
    let data = upload(FIVE_MIB);
    let started = Instant::now();
    let r = client()
        .post(sy.url("/echo"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), FIVE_MIB);
    assert_eq!(fnv(&got), fnv(&data));
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn five_mib_response_with_content_length() {
    let (_b, sy) = one_backend("bytes");
    let r = client()
        .get(sy.url(&format!("/bytes/{FIVE_MIB}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        FIVE_MIB.to_string()
    );
    let got = r.bytes().unwrap();
    assert_eq!(fnv(&got), fnv(&pattern(FIVE_MIB)));
}

#[test]
fn five_mib_chunked_request_body() {
    let (b, sy) = one_backend("chunk-in");
    let data = upload(FIVE_MIB);
    // Odd chunk sizes, an extension and a trailer: all valid framing the proxy must pass on.
    let mut body = Vec::new();
    for (i, c) in data.chunks(65_521).enumerate() {
        if i == 1 {
            body.extend_from_slice(format!("{:X};name=\"v\"\r\n", c.len()).as_bytes());
        } else {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        }
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    c.send(&body).unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}", r.head);
    let v = r.json();
    assert_eq!(v["body_len"], FIVE_MIB);
    assert_eq!(v["body_fnv"], fnv(&data).to_string());
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");
    assert!(v["headers"].get("content-length").is_none());
    assert_eq!(b.complete(), 1);
    // The connection is still usable after a chunked body.
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().json()["target"], "/after");
}

#[test]
fn five_mib_chunked_response() {
    let (_b, sy) = one_backend("chunk-out");
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c.send(format!("GET /chunked/{FIVE_MIB} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body.len(), FIVE_MIB);
    assert_eq!(fnv(&r.body), fnv(&pattern(FIVE_MIB)));
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
}

#[test]
fn chunked_request_streams_both_ways_through_echo() {
    // reqwest sends a body of unknown length chunked; /echo streams it straight back.
    let (_b, sy) = one_backend("echo-chunked");
    let data = upload(FIVE_MIB);
    let r = client()
        .post(sy.url("/echo"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            data.clone(),
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), FIVE_MIB);
    assert_eq!(fnv(&got), fnv(&data));
}

#[test]
fn http10_client_gets_a_dechunked_close_delimited_body() {
    let (_b, sy) = one_backend("old");
    let n = 100_000;
    let mut c = RawConn::connect(sy.http);
    c.send(format!("GET /chunked/{n} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    // read_response read until close: a body with leftover chunk framing would differ.
    assert_eq!(r.body.len(), n);
    assert_eq!(fnv(&r.body), fnv(&pattern(n)));
}

#[test]
fn expect_100_continue_before_the_body() {
    let (b, sy) = one_backend("expect");
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .unwrap();
    // No body sent yet: the 100 must come anyway.
    let interim = c.read_head().expect("100 Continue before the body");
    assert_eq!(interim.status, 100, "{}", interim.head);
    c.send(b"hello world").unwrap();
    let r = c.read_final().expect("final response");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 11);
    assert_eq!(r.json()["body_fnv"], fnv(b"hello world").to_string());
    assert_eq!(b.complete(), 1);
}

#[test]
fn upgrade_tunnel_echoes_both_ways() {
    let (_b, sy) = one_backend("ws");
    let mut c = RawConn::connect(sy.http);
    c.send(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n",
    )
    .unwrap();
    let r = c.read_head().expect("101");
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(r.header("upgrade"), Some("echo-proto"));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    for round in 0..3 {
        let msg = format!("round {round}: not HTTP at all \r\n\r\n\0\x01");
        c.send(msg.as_bytes()).unwrap();
        let back = c.read_exact_bytes(msg.len()).expect("echo");
        assert_eq!(back, msg.as_bytes());
    }
    let big = upload(256 * 1024);
    c.send(&big).unwrap();
    let back = c.read_exact_bytes(big.len()).expect("big echo");
    assert_eq!(fnv(&back), fnv(&big));
}

#[test]
fn close_delimited_backend_body_is_rechunked_for_http11() {
    let b = RawBackend::start(|mut s| {
        use std::io::Write;
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
        std::thread::sleep(Duration::from_millis(50));
        let _ = s.write_all(b"the end");
    });
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);
    assert_eq!(r.text(), "until the end");
    // The body had an end the client could see, so its connection stays usable.
    c.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        c.read_response(false).expect("second").text(),
        "until the end"
    );
    assert_eq!(b.accepted(), 2);
}

#[test]
fn expect_100_answered_early_by_the_backend() {
    // /status/413 answers without reading the body, so no 100 comes from the backend: the
    // client gets the final answer instead, and no body byte is needed for it.
    let (b, sy) = one_backend("early");
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    c.send(
        b"PUT /status/413 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let r = c
        .read_final()
        .expect("final answer without sending the body");
    assert_eq!(r.status, 413, "{}", r.head);
    assert_eq!(b.hits(), 1);
}

/// A backend that refuses a large upload after its head (413 and close, the body unread): the
/// client gets the 413 at once, not a 502 after a stalled upload.
#[test]
fn early_answer_to_a_large_upload_reaches_the_client() {
    use std::io::{Read, Write};
    let raw = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let body = b"{\"error\":\"too big\"}";
        let head = format!(
            "HTTP/1.1 413 Content Too Large\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(body);
        // Refuse the rest the way nginx and HAProxy do (a lingering close): stop writing,
        // read and drop what still comes for a moment, then close. A bare close with the
        // upload unread makes the kernel reset the connection, and a reset may discard the
        // answer before anyone reads it, which no proxy can relay.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut sink = [0u8; 16 * 1024];
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("idle_timeout = 20"),
        raw.addr
    );
    let sy = Switchyard::start(&cfg);
    let mut c = std::net::TcpStream::connect(sy.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let size = 32 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("too big") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too big"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    drop(c);
    let _ = writer.join();
}

/// Uploads `size` bytes of `x` on `c` from a thread of its own; returns the thread.
fn upload_in_background(c: &std::net::TcpStream, size: usize) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let mut w = c.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    })
}

/// A backend that answers 413 after the head and then holds its socket open without reading:
/// the answer reaches the client at once, while it is still uploading (full duplex), not after
/// the upload stalls.
#[test]
fn early_answer_reaches_the_client_while_the_backend_holds_its_socket() {
    use std::io::{Read, Write};
    let raw = RawBackend::start(|mut s| {
        let _ = read_request_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 7\r\n\r\ntoo big");
        std::thread::sleep(Duration::from_secs(8));
    });
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("idle_timeout = 20"),
        raw.addr
    );
    let sy = Switchyard::start(&cfg);
    let mut c = std::net::TcpStream::connect(sy.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let size = 64 << 20;
    c.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let writer = upload_in_background(&c, size);
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("too big") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too big"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    drop(c);
    let _ = writer.join();
}

/// A raw backend that echoes every piece as soon as it reads it (no buffering, unlike an
/// HTTP library might): with 48 MiB both socket buffers fill many times over, so the proxy
/// must read the answer while it still sends the body.
#[test]
fn streaming_echo_of_a_large_body_does_not_stall() {
    use std::io::{Read, Write};
    let size: usize = 48 << 20;
    let raw = RawBackend::start(move |mut s| {
        let got = read_request_head(&mut s);
        // The body bytes that came with the head are echoed first.
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(got.len(), |i| i + 4);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
        if s.write_all(head.as_bytes()).is_err() || s.write_all(&got[end..]).is_err() {
            return;
        }
        let mut left = size - (got.len() - end);
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = match s.read(&mut buf[..left.min(64 * 1024)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let cfg = format!(
        "{}[[targets]]\naddress = \"{}\"\n",
        listen_section("idle_timeout = 5"),
        raw.addr
    );
    let sy = Switchyard::start(&cfg);
    let mut c = std::net::TcpStream::connect(sy.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let t0 = Instant::now();
    let writer = upload_in_background(&c, size);
    let mut got = 0usize;
    let mut head = Vec::new();
    let mut b = vec![0u8; 64 * 1024];
    while got < size {
        let n = match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            // Still in the head: count only what follows it.
            let mut i = 0;
            while i < n && !head.ends_with(b"\r\n\r\n") {
                head.push(b[i]);
                i += 1;
            }
            got += n - i;
            assert!(b[i..n].iter().all(|x| *x == b'x'));
        } else {
            assert!(b[..n].iter().all(|x| *x == b'x'));
            got += n;
        }
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    assert_eq!(got, size, "the echo stalled after {got} bytes");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    writer.join().unwrap();
}
