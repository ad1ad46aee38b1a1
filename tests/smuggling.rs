//! Request-smuggling defences, black-box: every ambiguous head is a 400 that no backend ever
//! sees, and a broken chunked body never reaches a backend as a complete request.
mod support;
use std::time::Duration;
use support::*;

fn setup() -> (Backend, Switchyard) {
    let b = Backend::start("victim");
    let sy = Switchyard::start(&format!(
        "{}{}",
        listen_section(""),
        targets_toml(&[b.address()])
    ));
    (b, sy)
}

/// Sends `raw` and expects a 400 bad_request, a closed connection, and a backend that saw
/// nothing at all (not even a TCP connection).
fn refused_before_backend(raw: &[u8]) {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    let _ = c.send(raw);
    let r = c.read_response(false).expect("an answer");
    assert_eq!(r.status, 400, "{}\n{}", r.head, r.text());
    assert_eq!(r.json()["error"], "bad_request");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "connection left open after a framing error"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.hits(), 0, "backend saw a request");
    assert_eq!(
        b.stats
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "backend was even connected to"
    );
}

/// For broken chunked bodies the head was valid, so the backend may have seen a partial
/// request; the client must get a 400 or a closed connection, and no backend may have
/// received a complete request.
fn never_complete(raw: &[u8]) {
    let (b, sy) = setup();
    let mut c = RawConn::connect(sy.http);
    c.set_timeout(Duration::from_secs(3));
    let _ = c.send(raw);
    match c.read_response(false) {
        Ok(r) => {
            assert_eq!(r.status, 400, "{}\n{}", r.head, r.text());
            assert!(c.closed_within(Duration::from_secs(2)));
        }
        Err(e) => assert_eq!(e, WireError::Closed),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.complete(), 0, "a complete request reached the backend");
    assert!(b.hits() <= 1);
}

macro_rules! refused {
    ($($name:ident: $raw:expr;)*) => {$(
        #[test]
        fn $name() {
            refused_before_backend($raw);
        }
    )*};
}

refused! {
    content_length_and_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    transfer_encoding_and_content_length:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n";
    two_different_content_lengths:
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    content_length_list_of_two_values:
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!";
    content_length_with_sign:
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello";
    transfer_encoding_xchunked:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n";
    transfer_encoding_chunked_identity:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n";
    transfer_encoding_gzip_chunked:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    two_transfer_encoding_headers:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    transfer_encoding_in_http10:
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    obs_fold_continuation_line:
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n";
    obs_fold_hiding_transfer_encoding:
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\nhello";
    whitespace_before_colon:
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello";
    nul_inside_a_value:
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n";
    cr_inside_a_value:
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rContent-Length: 5\r\n\r\n";
    bare_lf_line_endings:
        b"GET / HTTP/1.1\nHost: t\n\n";
    one_bare_lf_among_crlf:
        b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n";
    missing_host_in_http11:
        b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n";
    two_host_headers:
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    dot_segments:
        b"GET /a/../b HTTP/1.1\r\nHost: t\r\n\r\n";
    encoded_dot_segments:
        b"GET /a/%2e%2E/b HTTP/1.1\r\nHost: t\r\n\r\n";
}

#[test]
fn bad_chunk_size() {
    never_complete(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn overflowing_chunk_size() {
    // 17 hex digits: 2^64 and up; a parser that wraps would read it as a small size.
    never_complete(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n");
}

#[test]
fn chunk_longer_than_its_size() {
    never_complete(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n0\r\n\r\n");
}

#[test]
fn chunk_size_with_bare_lf() {
    never_complete(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    );
}
