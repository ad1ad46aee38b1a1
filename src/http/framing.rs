//! Framing rules for requests and responses (RFC 9112 §6): which body follows a head, and the
//! request-smuggling defences. A head that fails here never reaches a backend.
use super::error::ErrorKind;
use super::head::{HeaderRange, RequestHead};
use super::kind::Kind;
use super::{list_items, trim_ows};

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the backend closes the connection.
    UntilClose,
}

/// What the connection loop needs to know about a request beyond routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestFraming {
    pub body: Body,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` together with an `Upgrade` header.
    pub upgrade: bool,
}

/// A framing violation; always answered with 400 (or 417 for an unknown expectation) and a
/// closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError {
    /// `BadRequest`, or `ExpectationFailed` for an unknown expectation.
    pub kind: ErrorKind,
    pub message: &'static str,
}

const fn bad(message: &'static str) -> FramingError {
    FramingError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// Parses a Content-Length value: one or more comma-separated decimal numbers that must all
/// be equal (RFC 9110 §8.6). No sign, no whitespace inside a number, no overflow.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let digits = |d: &[u8]| d.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    // The usual value, digits alone: what the list below gives for it, without splitting.
    if !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit) {
        return Some(digits(v));
    }
    let mut found: Option<u64> = None;
    let mut any = false;
    for item in v.split(|b| *b == b',') {
        let item = trim_ows(item);
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits(item);
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
        any = true;
    }
    found.filter(|_| any)
}

/// Collects Content-Length and Transfer-Encoding over all headers. Shared by requests and
/// responses so both sides follow the same rules.
struct LengthHeaders {
    content_length: Option<u64>,
    chunked: bool,
}

fn length_headers(buf: &[u8], headers: &[HeaderRange]) -> Result<LengthHeaders, &'static str> {
    let mut content_length = None;
    let mut te_count = 0;
    let mut chunked = false;
    for h in headers {
        let value = || &buf[h.value.clone()];
        if h.kind == Kind::ContentLength {
            let n = parse_content_length(value()).ok_or("invalid Content-Length")?;
            if content_length.is_some_and(|c| c != n) {
                return Err("conflicting Content-Length headers");
            }
            content_length = Some(n);
        } else if h.kind == Kind::TransferEncoding {
            te_count += 1;
            // Only a lone `chunked` is accepted: lists (`gzip, chunked`, `chunked, identity`)
            // and look-alikes (`xchunked`, `chunked;`) are where parsers disagree.
            if te_count > 1 || !trim_ows(value()).eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported Transfer-Encoding (only a single `chunked` is accepted)");
            }
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(LengthHeaders {
        content_length,
        chunked,
    })
}

/// Decides the framing of a request and checks it (SPEC §4, 400 row).
pub fn request(buf: &[u8], head: &RequestHead) -> Result<RequestFraming, FramingError> {
    let lengths = length_headers(buf, &head.headers).map_err(bad)?;
    if lengths.chunked && head.minor_version == 0 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut upgrade_header = false;
    let mut expect_continue = false;
    for h in &head.headers {
        // Sliced only for the kinds that read it.
        let value = || &buf[h.value.clone()];
        match h.kind {
            Kind::Host => hosts += 1,
            Kind::Connection => {
                for tok in list_items(value()) {
                    close |= tok.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= tok.eq_ignore_ascii_case(b"keep-alive");
                    upgrade_token |= tok.eq_ignore_ascii_case(b"upgrade");
                }
            }
            Kind::Upgrade => {
                // `Upgrade: h2c` is not supported (SPEC §10): the request is served as
                // HTTP/1.1 and the header dropped like any other hop-by-hop one.
                upgrade_header = list_items(value()).any(|t| !t.eq_ignore_ascii_case(b"h2c"));
            }
            Kind::Expect => {
                if trim_ows(value()).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(FramingError {
                        kind: ErrorKind::ExpectationFailed,
                        message: "unsupported Expect value",
                    });
                }
            }
            _ => {}
        }
    }
    if head.minor_version == 1 && hosts != 1 {
        return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
    }
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    let body = if lengths.chunked {
        Body::Chunked
    } else {
        match lengths.content_length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    let keep_alive = if head.minor_version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(RequestFraming {
        body,
        keep_alive,
        expect_continue: expect_continue && body != Body::None && head.minor_version == 1,
        upgrade: upgrade_token && upgrade_header && head.minor_version == 1,
    })
}

/// Decides the framing of a response (RFC 9112 §6.3). `Err` means the backend sent something
/// no safe proxy can relay: a 502.
pub fn response(
    buf: &[u8],
    headers: &[HeaderRange],
    status: u16,
    request_was_head: bool,
) -> Result<Body, &'static str> {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Body::None);
    }
    let lengths = length_headers(buf, headers)?;
    Ok(if lengths.chunked {
        Body::Chunked
    } else {
        match lengths.content_length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    })
}

/// The Content-Length a bodiless response (to HEAD, or a 304) announces for the resource, to
/// pass on unchanged (RFC 9110 §8.6); None when absent, chunked or invalid.
pub fn declared_length(buf: &[u8], headers: &[HeaderRange]) -> Option<u64> {
    match length_headers(buf, headers) {
        Ok(l) if !l.chunked => l.content_length,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, scan, Scan};

    fn framing(s: &str) -> Result<RequestFraming, FramingError> {
        let b = s.as_bytes();
        let Ok(Scan::Complete(n)) = scan(b, 0, 65536) else {
            panic!("incomplete")
        };
        let mut h = RequestHead::default();
        parse(b, n, &mut h).expect("parse");
        request(b, &h)
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"10"), Some(10));
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_content_length(b" 10 "), Some(10));
        assert_eq!(parse_content_length(b"10,"), None);
        assert_eq!(parse_content_length(b"10, 10"), Some(10));
        assert_eq!(parse_content_length(b"10, 11"), None);
        assert_eq!(parse_content_length(b"+10"), None);
        assert_eq!(parse_content_length(b"1 0"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        assert_eq!(parse_content_length(b"0x10"), None);
    }

    #[test]
    fn plain_requests() {
        let f = framing("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(f.body, Body::None);
        assert!(f.keep_alive);
        let f = framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(f.body, Body::Length(5));
        let f =
            framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(f.body, Body::Chunked);
        let f = framing("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
        let f = framing("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(f.keep_alive);
        let f = framing("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let vectors = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunk\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chu nked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        ];
        for v in vectors {
            let e = framing(v).expect_err(v);
            assert_eq!(e.kind.status(), 400, "{v}");
        }
    }

    #[test]
    fn tab_and_space_around_chunked_are_ows() {
        // OWS around a field value is not part of it (RFC 9110 §5.5); httparse trims it.
        let f =
            framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked \r\n\r\n").unwrap();
        assert_eq!(f.body, Body::Chunked);
    }

    #[test]
    fn expect_and_upgrade() {
        let f = framing(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert!(f.expect_continue);
        assert_eq!(
            framing("GET / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n")
                .unwrap_err()
                .kind,
            ErrorKind::ExpectationFailed
        );
        let f = framing("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(f.upgrade);
        let f = framing("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(!f.upgrade);
        // Upgrade: h2c is never an upgrade (SPEC §10); a list naming more still is.
        let f = framing("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n").unwrap();
        assert!(!f.upgrade);
        let f = framing(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
        )
        .unwrap();
        assert!(f.upgrade);
    }

    #[test]
    fn declared_length_of_a_bodiless_response() {
        let b = b"Content-Length: 1234Content-Length: 99Transfer-Encoding: chunked";
        let h = |n: std::ops::Range<usize>, v| HeaderRange::new(b, n, v);
        let cl = h(0..14, 16..20);
        let other = h(20..34, 36..38);
        let te = h(38..55, 57..64);
        assert_eq!(declared_length(b, std::slice::from_ref(&cl)), Some(1234));
        assert_eq!(declared_length(b, &[]), None);
        assert_eq!(declared_length(b, &[cl.clone(), other]), None);
        assert_eq!(declared_length(b, &[cl, te]), None);
    }

    #[test]
    fn response_framing() {
        let hs: Vec<HeaderRange> = vec![];
        assert_eq!(response(b"", &hs, 200, false), Ok(Body::UntilClose));
        assert_eq!(response(b"", &hs, 204, false), Ok(Body::None));
        assert_eq!(response(b"", &hs, 200, true), Ok(Body::None));
    }
}
