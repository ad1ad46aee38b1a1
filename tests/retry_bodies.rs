//! SPEC §11 retries of requests with bodies, over real sockets against backends written to
//! fail on purpose: a body kept up to `max_retry_body` is sent again byte for byte (Content-Length
//! and chunked, after a reset or a held-back 503), a larger one is not (but a connect failure
//! still moves on), nothing is retried once a byte of the answer reached the client, and the
//! reuse race (a backend that closes a pooled connection just as it is reused) costs no 502
//! and never delivers a POST without `Idempotency-Key` twice. Every test is bounded in time.
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
