//! SPEC §11 retries of requests with bodies, over real sockets against backends written to
//! fail on purpose: a body kept up to `max_retry_body` is sent again byte for byte (Content-Length
//! and chunked, after a reset or a held-back 503), a larger one is not (but a connect failure
//! still moves on), nothing is retried once a byte of the answer reached the client, and the
//! reuse race (a backend that closes a pooled connection just as it is reused) costs no 502
//! and never delivers a POST without `Idempotency-Key` twice. HTTP/2 clients' bodies are kept
//! and replayed the same way; a stream an HTTP/2 backend did not process (REFUSED_STREAM, a
//! GOAWAY below it) is sent again on a new connection whatever its method, and one reset
//! after the backend read it never is. Every test is bounded in time.
mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// One request as a backend received it.
#[derive(Debug, Clone)]
struct Got {
    /// The head, lowercased.
    head: String,
    /// The payload (chunked framing decoded).
    body: Vec<u8>,
    /// The trailer section of a chunked body, lowercased.
    trailers: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        let needle = format!("\r\n{name}:");
        let at = self.head.find(&needle)? + needle.len();
        let end = self.head[at..]
            .find("\r\n")
            .map_or(self.head.len(), |e| at + e);
        Some(self.head[at..end].trim().to_string())
    }
    fn seq(&self) -> usize {
        self.header("x-seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX)
    }
    fn attempt(&self) -> Option<String> {
        self.header("x-retry-attempt")
    }
}

/// A request reader of its own (not switchyard's): head, then a Content-Length or chunked body.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match self.s.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(l);
            }
            if !self.fill() {
                return None;
            }
        }
    }
    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
    /// One whole request, or None when the connection ended first.
    fn request(&mut self) -> Option<Got> {
        let mut head = String::new();
        loop {
            let l = self.line()?;
            if l.is_empty() {
                break;
            }
            head.push_str(&String::from_utf8_lossy(&l).to_ascii_lowercase());
            head.push_str("\r\n");
        }
        let mut got = Got {
            head: format!("\r\n{head}"),
            body: Vec::new(),
            trailers: String::new(),
        };
        if got.header("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let l = String::from_utf8_lossy(&self.line()?).into_owned();
                let size = usize::from_str_radix(l.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    loop {
                        let t = self.line()?;
                        if t.is_empty() {
                            break;
                        }
                        got.trailers
                            .push_str(&String::from_utf8_lossy(&t).to_ascii_lowercase());
                        got.trailers.push_str("\r\n");
                    }
                    break;
                }
                let data = self.exact(size + 2)?;
                assert_eq!(&data[size..], b"\r\n", "chunk framing forwarded intact");
                got.body.extend_from_slice(&data[..size]);
            }
        } else if let Some(n) = got.header("content-length") {
            got.body = self.exact(n.parse().ok()?)?;
        }
        Some(got)
    }
}

/// What a backend does with each request it has read whole.
#[derive(Clone, Copy)]
enum Act {
    /// 200, keep-alive.
    Ok,
    /// 503, keep-alive.
    Unavailable,
    /// Closes without a byte of an answer.
    HangUp,
    /// The head and 10 of 100 body bytes, then a reset.
    HalfThenReset,
}

/// A keep-alive backend that records every request it read whole. With `race`, it closes a
/// connection that sat idle at least that long at the moment the next request arrives, without
/// reading it (as a server whose keep-alive timer fires just then): the kernel answers the
/// unread request with a reset, and the request is not delivered.
struct Recorder {
    raw: RawBackend,
    got: Arc<Mutex<Vec<Got>>>,
    races: Arc<AtomicUsize>,
}

impl Recorder {
    fn start(act: Act, race: Option<Duration>) -> Recorder {
        let got = Arc::new(Mutex::new(Vec::new()));
        let races = Arc::new(AtomicUsize::new(0));
        let (g, r) = (got.clone(), races.clone());
        let raw = RawBackend::start(move |s: TcpStream| {
            let mut rd = Reader { s, buf: Vec::new() };
            let mut answered: Option<Instant> = None;
            loop {
                if let (Some(idle), Some(at)) = (race, answered) {
                    let mut one = [0u8; 1];
                    let arrived = rd.buf.is_empty() && rd.s.peek(&mut one).unwrap_or(0) > 0;
                    if arrived && at.elapsed() >= idle {
                        r.fetch_add(1, SeqCst);
                        let _ = socket2::SockRef::from(&rd.s).set_linger(Some(Duration::ZERO));
                        return;
                    }
                }
                let Some(req) = rd.request() else { return };
                g.lock().unwrap().push(req.clone());
                let answer = |status: &str| {
                    let body = format!("got {} bytes", req.body.len());
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                match act {
                    Act::Ok => {
                        if rd.s.write_all(answer("200 OK").as_bytes()).is_err() {
                            return;
                        }
                    }
                    Act::Unavailable => {
                        if rd
                            .s
                            .write_all(answer("503 Service Unavailable").as_bytes())
                            .is_err()
                        {
                            return;
                        }
                    }
                    Act::HangUp => return,
                    Act::HalfThenReset => {
                        let _ = rd
                            .s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                        // Long enough for switchyard to relay the head first.
                        std::thread::sleep(Duration::from_millis(300));
                        let _ = socket2::SockRef::from(&rd.s).set_linger(Some(Duration::ZERO));
                        return;
                    }
                }
                answered = Some(Instant::now());
            }
        });
        Recorder { raw, got, races }
    }

    fn address(&self) -> String {
        self.raw.address()
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// Deterministic bytes of every value, CR and LF included.
fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `head` and `body` on a new connection, the body in `piece`-byte writes a few
/// milliseconds apart (so switchyard gets it in several reads), and reads the answer.
fn exchange(
    sy: &Switchyard,
    head: &str,
    body: &[u8],
    piece: usize,
) -> Result<RawResponse, WireError> {
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(10));
    c.send(head.as_bytes()).unwrap();
    for p in body.chunks(piece.max(1)) {
        std::thread::sleep(Duration::from_millis(3));
        if c.send(p).is_err() {
            break;
        }
    }
    c.read_response(false)
}

fn config(extra: &str, addrs: &[String]) -> String {
    // Ejection is off: these tests are about retries, and a failing address must stay a
    // candidate for every request.
    format!(
        "{}[outlier]\nconsecutive_failures = 0\n[retry]\nmin_retries_per_second = 1000\n{extra}\n\n{}",
        listen_section(""),
        targets_toml(addrs)
    )
}

#[test]
fn a_keyed_post_body_is_replayed_byte_exact_on_the_next_address() {
    let rude = Recorder::start(Act::HangUp, None);
    let good = Recorder::start(Act::Ok, None);
    let sy = Switchyard::start(&config("", &[rude.address(), good.address()]));
    let body = payload(50_000, 7);
    for i in 0..4 {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k-{i}\r\nX-Seq: {i}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let r = exchange(&sy, &head, &body, 7000).expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "got 50000 bytes");
    }
    let (bad, ok) = (rude.got(), good.got());
    assert!(
        !bad.is_empty(),
        "round robin never chose the failing address"
    );
    assert_eq!(ok.len(), 4, "each request reached the good backend once");
    for g in &bad {
        assert!(g.body == body, "the first try carried the whole body");
        assert_eq!(g.attempt(), None);
    }
    for g in &ok {
        assert!(g.body == body, "request {} arrived altered", g.seq());
    }
    let mut retried: Vec<usize> = ok
        .iter()
        .filter(|g| g.attempt().as_deref() == Some("2"))
        .map(Got::seq)
        .collect();
    let mut failed: Vec<usize> = bad.iter().map(Got::seq).collect();
    retried.sort_unstable();
    failed.sort_unstable();
    assert_eq!(
        retried, failed,
        "exactly the failed tries were retried, as try 2"
    );

    // Without the key a POST is never sent twice: a 502 when it met the rude backend.
    let before = (bad.len(), ok.len());
    let mut refused = 0;
    for i in 10..14 {
        let head = format!(
            "POST /once HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        match exchange(&sy, &head, &body, 7000).expect("answer").status {
            200 => {}
            502 => refused += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(refused > 0);
    assert_eq!(rude.got().len() - before.0, refused);
    assert_eq!(good.got().len() - before.1, 4 - refused);
}

#[test]
fn a_chunked_body_is_replayed_after_a_reset_and_after_a_held_back_503() {
    for act in [Act::HangUp, Act::Unavailable] {
        let bad = Recorder::start(act, None);
        let good = Recorder::start(Act::Ok, None);
        let sy = Switchyard::start(&config("", &[bad.address(), good.address()]));
        let data = payload(30_000, 11);
        let mut wire = chunk_encode(&data, 4093);
        // A trailer field goes on, and is replayed with the rest.
        wire.truncate(wire.len() - 2);
        wire.extend_from_slice(b"X-Check: 42\r\n\r\n");
        for i in 0..4 {
            let head = format!(
                "PUT /doc HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let r = exchange(&sy, &head, &wire, 5000).expect("answer");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let (b, g) = (bad.got(), good.got());
        assert!(!b.is_empty());
        assert_eq!(g.len(), 4);
        for x in b.iter().chain(&g) {
            assert!(x.body == data, "request {} arrived altered", x.seq());
            assert_eq!(x.trailers, "x-check: 42\r\n");
        }
        let retried = g
            .iter()
            .filter(|x| x.attempt().as_deref() == Some("2"))
            .count();
        assert_eq!(retried, b.len());
    }
}

#[test]
fn a_body_over_max_retry_body_is_not_retried_but_a_connect_failure_still_moves_on() {
    let rude = Recorder::start(Act::HangUp, None);
    let good = Recorder::start(Act::Ok, None);
    let sy = Switchyard::start(&config(
        "max_retry_body = 1000",
        &[rude.address(), good.address()],
    ));
    let put = |i: usize, n: usize| {
        let head =
            format!("PUT /p HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nContent-Length: {n}\r\n\r\n");
        exchange(&sy, &head, &payload(n, i as u64), 400)
            .expect("answer")
            .status
    };
    // At the limit: kept, so retried.
    for i in 0..4 {
        assert_eq!(put(i, 1000), 200);
    }
    // One byte over: the request that meets the rude backend gets its 502.
    let mut refused = Vec::new();
    for i in 10..14 {
        match put(i, 1001) {
            200 => {}
            502 => refused.push(i),
            s => panic!("unexpected {s}"),
        }
    }
    assert!(!refused.is_empty());
    // A chunked body that grows past the limit is not retried either.
    for i in 20..24 {
        let head = format!(
            "PUT /c HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let wire = chunk_encode(&payload(1200, i as u64), 400);
        match exchange(&sy, &head, &wire, 300).expect("answer").status {
            200 => {}
            502 => refused.push(i),
            s => panic!("unexpected {s}"),
        }
    }
    assert!(refused.iter().any(|&i| i >= 20));
    let (bad, ok) = (rude.got(), good.got());
    let seqs = |v: &[Got]| {
        let mut s: Vec<usize> = v.iter().map(Got::seq).collect();
        s.sort_unstable();
        s
    };
    let failed_big: Vec<usize> = seqs(&bad).into_iter().filter(|&i| i >= 10).collect();
    assert_eq!(
        failed_big, refused,
        "only the tries that met the rude backend failed"
    );
    for g in &ok {
        assert!(
            g.seq() < 10 || !refused.contains(&g.seq()),
            "{} retried",
            g.seq()
        );
        if g.seq() >= 10 {
            assert_eq!(g.attempt(), None);
        }
    }

    // A connect failure sent nothing: the next candidate gets the large body, byte for byte.
    let good = Recorder::start(Act::Ok, None);
    let dead = format!("127.0.0.1:{}", dead_port());
    let sy = Switchyard::start(&config("max_retry_body = 1000", &[dead, good.address()]));
    let body = payload(5000, 3);
    for i in 0..4 {
        let head =
            format!("POST /big HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nContent-Length: 5000\r\n\r\n");
        let r = exchange(&sy, &head, &body, 1500).expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let ok = good.got();
    assert_eq!(ok.len(), 4);
    assert!(ok.iter().all(|g| g.body == body));
}

#[test]
fn nothing_is_retried_once_a_byte_of_the_answer_reached_the_client() {
    let a = Recorder::start(Act::HalfThenReset, None);
    let b = Recorder::start(Act::HalfThenReset, None);
    let sy = Switchyard::start(&config("", &[a.address(), b.address()]));
    for i in 0..4 {
        let head = format!("GET /half HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\n\r\n");
        let mut c = RawConn::connect(sy.http);
        c.set_timeout(Duration::from_secs(5));
        c.send(head.as_bytes()).unwrap();
        let r = c.read_head().expect("the head was relayed");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("100"));
        // Ten bytes, then the end: a broken answer the client can tell from a whole one.
        let rest = c.read_to_end();
        assert_eq!(rest, b"0123456789");
    }
    let tries = a.got().len() + b.got().len();
    assert_eq!(
        tries, 4,
        "a request was tried again after its answer had begun"
    );
    assert!(a
        .got()
        .iter()
        .chain(b.got().iter())
        .all(|g| g.attempt().is_none()));
}

/// The request kinds of the race test: (head, body on the wire, payload, replayable).
fn race_request(i: usize) -> (String, Vec<u8>, Vec<u8>, bool) {
    let data = payload(1000 + (i * 37) % 20_000, i as u64);
    let cl = |m: &str, extra: &str| {
        format!(
            "{m} /r/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\n{extra}Content-Length: {}\r\n\r\n",
            data.len()
        )
    };
    match i % 5 {
        0 => (
            format!("GET /r/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\n\r\n"),
            Vec::new(),
            Vec::new(),
            true,
        ),
        1 => (cl("PUT", ""), data.clone(), data, true),
        2 => (
            cl("POST", &format!("Idempotency-Key: race-{i}\r\n")),
            data.clone(),
            data,
            true,
        ),
        3 => (
            format!(
                "PUT /r/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            chunk_encode(&data, 3000),
            data,
            true,
        ),
        _ => (cl("POST", ""), data.clone(), data, false),
    }
}

#[test]
fn the_reuse_race_costs_no_502_and_never_delivers_a_post_twice() {
    // The backend closes a connection idle for 30 ms as the next request arrives; every
    // other request follows a 45 ms pause, so about half of them meet the race.
    let b = Recorder::start(Act::Ok, Some(Duration::from_millis(30)));
    let sy = Switchyard::start(&config("", &[b.address()]));
    const N: usize = 240;
    let mut answers = Vec::with_capacity(N);
    for i in 0..N {
        std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 45 } else { 1 }));
        let (head, wire, _, _) = race_request(i);
        // All at once, as most clients send small bodies.
        let mut msg = head.into_bytes();
        msg.extend_from_slice(&wire);
        let mut c = RawConn::connect(sy.http);
        c.set_timeout(Duration::from_secs(10));
        c.send(&msg).unwrap();
        answers.push(c.read_response(false).expect("answer").status);
    }
    let got = b.got();
    let races = b.races.load(SeqCst);
    assert!(races >= N / 4, "only {races} races for {N} requests");
    let mut deliveries = vec![0usize; N];
    for g in &got {
        deliveries[g.seq()] += 1;
    }
    let mut unkeyed_refused = 0;
    for (i, &status) in answers.iter().enumerate() {
        let (_, _, data, replayable) = race_request(i);
        if replayable {
            assert_eq!(status, 200, "request {i} ({} races so far)", races);
            assert_eq!(
                deliveries[i], 1,
                "request {i} delivered {} times",
                deliveries[i]
            );
            let g = got.iter().find(|g| g.seq() == i).unwrap();
            assert!(g.body == data, "request {i} arrived altered");
        } else {
            // Without Idempotency-Key the backend might have read it: never sent twice, so a
            // POST that met the race gets the 502 (SPEC §11), and was delivered zero times.
            match status {
                200 => assert_eq!(deliveries[i], 1, "request {i}"),
                502 => {
                    unkeyed_refused += 1;
                    assert_eq!(deliveries[i], 0, "request {i}");
                }
                s => panic!("request {i}: {s}"),
            }
        }
    }
    // Every race was either answered by one more try on a new connection (which says it is
    // try 2) or, for a POST without a key, refused.
    let second_tries = got
        .iter()
        .filter(|g| g.attempt().as_deref() == Some("2"))
        .count();
    assert_eq!(second_tries + unkeyed_refused, races);
}

/// One request over HTTP/2 with prior knowledge, from the h2 crate's client (not switchyard's
/// code): the body in DATA frames of `piece` bytes a few milliseconds apart, `content-length`
/// sent when `length`. Returns the status and the answer's body.
fn h2_request(
    sy: &Switchyard,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    piece: usize,
    length: bool,
) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = sy.http;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (send, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut send = send.ready().await.unwrap();
            let mut b = http::Request::builder()
                .method(method)
                .uri(format!("http://t{path}"));
            for (n, v) in headers {
                b = b.header(*n, *v);
            }
            if length {
                b = b.header("content-length", body.len());
            }
            let (resp, mut stream) = send
                .send_request(b.body(()).unwrap(), body.is_empty())
                .unwrap();
            let pieces: Vec<&[u8]> = body.chunks(piece.max(1)).collect();
            for (i, p) in pieces.iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(3)).await;
                // Queued by the h2 crate until the window lets it go.
                stream
                    .send_data(bytes::Bytes::copy_from_slice(p), i + 1 == pieces.len())
                    .unwrap();
            }
            let resp = resp.await.unwrap();
            let status = resp.status().as_u16();
            let mut rb = resp.into_body();
            let mut got = Vec::new();
            while let Some(d) = rb.data().await {
                let d = d.unwrap();
                let _ = rb.flow_control().release_capacity(d.len());
                got.extend_from_slice(&d);
            }
            (status, got)
        })
        .await
        .expect("the HTTP/2 exchange took too long")
    })
}

#[test]
fn an_http2_clients_body_is_replayed_byte_exact_on_the_next_address() {
    for act in [Act::Unavailable, Act::HangUp] {
        let bad = Recorder::start(act, None);
        let good = Recorder::start(Act::Ok, None);
        let sy = Switchyard::start(&config("", &[bad.address(), good.address()]));
        let body = payload(50_000, 5);
        const N: usize = 8;
        for i in 0..N {
            let seq = i.to_string();
            // With a length, and without (chunked to the HTTP/1.1 backends), in pairs so
            // that round robin gives the failing address some of each.
            let (status, text) = h2_request(
                &sy,
                "PUT",
                "/doc",
                &[("x-seq", &seq)],
                &body,
                7000,
                (i / 2) % 2 == 0,
            );
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
            assert_eq!(text, b"got 50000 bytes");
        }
        let b = bad.got();
        let chunked = |x: &Got| x.header("transfer-encoding").as_deref() == Some("chunked");
        assert!(
            b.iter().any(chunked) && !b.iter().all(chunked),
            "the failing address got bodies of both framings"
        );
        // Give a stray byte after a replayed body the time to show up as a request.
        std::thread::sleep(Duration::from_millis(200));
        let g = good.got();
        assert_eq!(g.len(), N, "each request reached the good backend once");
        for x in b.iter().chain(&g) {
            assert!(x.body == body, "request {} arrived altered", x.seq());
        }
        let mut retried: Vec<usize> = g
            .iter()
            .filter(|x| x.attempt().as_deref() == Some("2"))
            .map(Got::seq)
            .collect();
        let mut failed: Vec<usize> = b.iter().map(Got::seq).collect();
        retried.sort_unstable();
        failed.sort_unstable();
        assert_eq!(retried, failed, "exactly the failed tries were retried");
    }
}

/// What an HTTP/2 backend does with the first stream of a connection; every connection
/// then says GOAWAY (graceful: that stream finishes), so each request starts on a new one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum H2Act {
    /// Answers 200 once the body is read whole (a delivery).
    Serve,
    /// Reads the body whole, then resets the stream with REFUSED_STREAM (RFC 9113 §8.7: not
    /// processed; no delivery).
    RefuseAfterBody,
    /// Resets the stream with REFUSED_STREAM as soon as its head arrives.
    RefuseAtHead,
    /// Reads the request whole, then GOAWAY with last-stream-id 0 (written frame by frame:
    /// the h2 crate's server always names the streams it saw) and no answer.
    GoawayBelow,
    /// Reads the body whole (a delivery: the backend may have acted on it), then resets the
    /// stream with INTERNAL_ERROR.
    ResetAfterBody,
}

/// An HTTP/2 (h2c) backend on the h2 crate's server; connection `n` (from 0) does `plan(n)`.
struct H2Recorder {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    conns: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl H2Recorder {
    fn start(plan: impl Fn(usize) -> H2Act + Send + 'static) -> H2Recorder {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let (got, conns, refused) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (g, c, r) = (got.clone(), conns.clone(), refused.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        a = l.accept() => {
                            let Ok((s, _)) = a else { continue };
                            let act = plan(c.fetch_add(1, SeqCst));
                            let (g, r) = (g.clone(), r.clone());
                            tokio::spawn(async move {
                                if act == H2Act::GoawayBelow {
                                    goaway_below(s, r).await;
                                } else {
                                    h2_conn(act, s, g, r).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        H2Recorder {
            addr,
            got,
            conns,
            refused,
            _stop: stop,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

async fn h2_conn(
    act: H2Act,
    s: tokio::net::TcpStream,
    got: Arc<Mutex<Vec<Got>>>,
    refused: Arc<AtomicUsize>,
) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    let mut first = true;
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        if std::mem::take(&mut first) {
            conn.graceful_shutdown();
        }
        let (got, refused) = (got.clone(), refused.clone());
        tokio::spawn(async move {
            let (parts, mut body) = req.into_parts();
            if act == H2Act::RefuseAtHead {
                refused.fetch_add(1, SeqCst);
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let mut data = Vec::new();
            while let Some(d) = body.data().await {
                let Ok(d) = d else { return };
                let _ = body.flow_control().release_capacity(d.len());
                data.extend_from_slice(&d);
            }
            if act == H2Act::RefuseAfterBody {
                refused.fetch_add(1, SeqCst);
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let mut head = String::from("\r\n");
            for (n, v) in &parts.headers {
                let v = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
                head.push_str(&format!("{}: {v}\r\n", n.as_str()));
            }
            let n = data.len();
            got.lock().unwrap().push(Got {
                head,
                body: data,
                trailers: String::new(),
            });
            if act == H2Act::ResetAfterBody {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            let text = format!("got {n} bytes");
            let resp = http::Response::builder()
                .status(200)
                .header("content-length", text.len())
                .body(())
                .unwrap();
            if let Ok(mut s) = respond.send_response(resp, false) {
                let _ = s.send_data(bytes::Bytes::from(text), true);
            }
        });
    }
}

/// One HTTP/2 frame.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A backend that reads the preface and one request whole, then says GOAWAY with
/// last-stream-id 0: the request was not processed (RFC 9113 §6.8, §8.7).
async fn goaway_below(mut s: tokio::net::TcpStream, refused: Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    if s.read_exact(&mut preface).await.is_err() {
        return;
    }
    if s.write_all(&frame(0x4, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut h = [0u8; 9];
        if s.read_exact(&mut h).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (ty, flags) = (h[3], h[4]);
        let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let mut p = vec![0u8; len];
        if s.read_exact(&mut p).await.is_err() {
            return;
        }
        if ty == 0x4 && flags & 0x1 == 0 {
            let _ = s.write_all(&frame(0x4, 0x1, 0, &[])).await;
        }
        // HEADERS or DATA with END_STREAM: the request is complete.
        if id != 0 && (ty == 0x0 || ty == 0x1) && flags & 0x1 != 0 {
            break;
        }
    }
    refused.fetch_add(1, SeqCst);
    let mut g = 0u32.to_be_bytes().to_vec();
    g.extend_from_slice(&0u32.to_be_bytes());
    let _ = s.write_all(&frame(0x7, 0, 0, &g)).await;
    // Read on until the client closes, so that no unread byte turns our close into a reset
    // that could overtake the GOAWAY.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

fn h2c_config(addr: &std::net::SocketAddr) -> String {
    format!(
        "{}[outlier]\nconsecutive_failures = 0\n[retry]\nmin_retries_per_second = 1000\n\n\
         [[backends]]\nname = \"h2\"\naddresses = [\"{addr}\"]\nprotocol = \"h2c\"\n\n\
         [[routes]]\npath = \"/up/*\"\nbackend = \"h2\"\n",
        listen_section("")
    )
}

#[test]
fn a_stream_an_http2_backend_did_not_process_is_sent_again_whatever_its_method() {
    for act in [
        H2Act::RefuseAfterBody,
        H2Act::RefuseAtHead,
        H2Act::GoawayBelow,
    ] {
        // Even connections refuse their stream, odd ones serve it: every request meets one
        // refusal, and its retry one new connection.
        let b = H2Recorder::start(move |n| if n % 2 == 0 { act } else { H2Act::Serve });
        let sy = Switchyard::start(&h2c_config(&b.addr));
        let body = payload(50_000, 9);
        const N: usize = 6;
        for i in 0..N {
            // POSTs without Idempotency-Key, from HTTP/1.1 (a length, chunked) and HTTP/2.
            let (status, text) = match i % 3 {
                0 => {
                    let head = format!(
                        "POST /up/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let r = exchange(&sy, &head, &body, 7000).expect("answer");
                    (r.status, r.body)
                }
                1 => {
                    let head = format!(
                        "POST /up/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\n\
                         Transfer-Encoding: chunked\r\n\r\n"
                    );
                    let r = exchange(&sy, &head, &chunk_encode(&body, 6000), 7000).expect("answer");
                    (r.status, r.body)
                }
                _ => {
                    let seq = i.to_string();
                    let path = format!("/up/{i}");
                    h2_request(
                        &sy,
                        "POST",
                        &path,
                        &[("x-seq", &seq)],
                        &body,
                        7000,
                        i % 2 == 0,
                    )
                }
            };
            assert_eq!(
                status,
                200,
                "{act:?} request {i}: {} {}",
                String::from_utf8_lossy(&text),
                sy.log_text()
            );
            assert_eq!(text, b"got 50000 bytes");
        }
        let got = b.got();
        assert_eq!(
            b.refused.load(SeqCst),
            N,
            "{act:?}: every request met a refusal"
        );
        assert_eq!(
            got.len(),
            N,
            "{act:?}: each request was delivered exactly once"
        );
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.seq(), i, "{act:?}");
            assert!(g.body == body, "{act:?}: request {i} arrived altered");
            assert_eq!(g.attempt().as_deref(), Some("2"), "{act:?}: request {i}");
        }
        assert_eq!(
            b.conns.load(SeqCst),
            2 * N,
            "{act:?}: each retry on a new connection"
        );
    }
}

#[test]
fn a_stream_reset_after_the_backend_read_it_is_not_sent_again() {
    let b = H2Recorder::start(|_| H2Act::ResetAfterBody);
    let sy = Switchyard::start(&h2c_config(&b.addr));
    let body = payload(50_000, 13);
    for i in 0..3 {
        let head = format!(
            "POST /up/{i} HTTP/1.1\r\nHost: t\r\nX-Seq: {i}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let r = exchange(&sy, &head, &body, 7000).expect("answer");
        assert_eq!(r.status, 502, "request {i}: {}", r.text());
    }
    // An HTTP/2 client's too.
    let (status, _) = h2_request(&sy, "POST", "/up/3", &[("x-seq", "3")], &body, 7000, true);
    assert_eq!(status, 502);
    let got = b.got();
    assert_eq!(got.len(), 4, "delivered once each, never again");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.seq(), i);
        assert!(g.body == body);
        assert_eq!(g.attempt(), None);
    }
    assert_eq!(b.conns.load(SeqCst), 4);
}
