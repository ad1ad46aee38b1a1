//! Fuzz target: a client's request head through scan (whole and resumed at a split), parse,
//! framing and the rewrite a backend receives, which must parse back to the same framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::framing;
use switchyard::http::head::{self, HeadError, RequestHead, Scan};
use switchyard::http::rewrite::{self, Forward};
use switchyard::proxy::request_id;

static EDITS: std::sync::LazyLock<switchyard::http::edits::Edits> = std::sync::LazyLock::new(|| {
    switchyard::config::Rewrites {
        strip_prefix: Some("/a".into()),
        set_request_headers: vec![("Host".into(), "files.internal".into())],
        remove_request_headers: vec!["X-Debug".into()],
        ..Default::default()
    }
    .edits()
});

/// Every LF is preceded by CR and every CR is followed by LF.
fn crlf_only(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match c {
        b'\n' => i > 0 && b[i - 1] == b'\r',
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// Header lines in a complete head: its lines less the request line and the blank line.
fn header_lines(head: &[u8]) -> usize {
    head.windows(2).filter(|w| w == b"\r\n").count() - 2
}

fn ranges_inside(h: &RequestHead, len: usize) -> bool {
    h.method.end <= len
        && h.target.end <= len
        && h.headers
            .iter()
            .all(|r| r.name.end <= len && r.value.end <= len)
}

// Input: 2 bytes split point, 1 byte flags (low 6 bits: head size limit; bit 6: an API key
// name; bit 7: a shard), then the bytes a client sent.
fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let split_sel = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let flags = data[2];
    let buf = &data[3..];
    let max = 64 * (1 + usize::from(flags & 0x3f));
    let split = split_sel % (buf.len() + 1);

    // 1. Scanning in two reads (as `proxy::io::read_head` does) agrees with one scan.
    let whole = head::scan(buf, 0, max);
    let resumed = match head::scan(&buf[..split], 0, max) {
        Ok(Scan::Partial) => head::scan(buf, split, max),
        other => other,
    };
    assert_eq!(whole, resumed, "split at {split}, max {max}");
    let Ok(Scan::Complete(len)) = whole else {
        return;
    };
    assert!(len <= max && len <= buf.len());
    assert!(buf[..len].ends_with(b"\r\n\r\n"));

    // 2. Parse and framing, as the connection loop does.
    let mut h = RequestHead::default();
    if head::parse(buf, len, &mut h).is_err() {
        return;
    }
    assert!(ranges_inside(&h, len));
    assert_eq!(h.len, len);
    let Ok(fr) = framing::request(buf, &h) else {
        return;
    };
    let method = h.method(buf);
    let target = h.target(buf);
    let path = head::route_path(target);
    if path.is_none() && method != b"CONNECT" && target != b"*" {
        return;
    }
    if path.is_some_and(head::has_dot_segment) {
        return;
    }

    // 3. The head the backend receives.
    let rid: &[u8] = match h.header(buf, "x-request-id") {
        Some(v) if request_id::acceptable(v) => v,
        _ => b"0123456789abcdef0123456789abcdef",
    };
    let fwd = Forward {
        client_ip: "192.0.2.7",
        proto: "http",
        request_id: rid,
        api_key_name: (flags & 0x40 != 0).then_some("fuzz-key"),
        shard: (flags & 0x80 != 0).then_some(7),
        content_length: match fr.body {
            framing::Body::Length(n) => Some(n),
            _ => None,
        },
        chunked: fr.body == framing::Body::Chunked,
        upgrade: fr.upgrade,
        host_fallback: "backend.internal:8080",
        // With an API key, a rule's rewrites too: the strip and the set Host must leave a
        // head that parses (the checks below).
        edits: if flags & 0x40 != 0 { &EDITS } else { &switchyard::http::edits::NONE },
    };
    let mut out = Vec::new();
    rewrite::request_head(buf, &h, &fwd, &mut out);
    let shown = String::from_utf8_lossy(&out);
    assert!(
        crlf_only(&out),
        "bare CR or LF in rewritten head: {shown:?}"
    );

    // 4. The backend must accept it and see the framing and path that switchyard decided on.
    assert_eq!(
        head::scan(&out, 0, usize::MAX),
        Ok(Scan::Complete(out.len())),
        "rewritten head does not end where it should: {shown:?}"
    );
    let mut h2 = RequestHead::default();
    match head::parse(&out, out.len(), &mut h2) {
        Ok(()) => {}
        // The gateway adds up to 9 headers to the (at most MAX_HEADERS) the client sent; a
        // head that is over the count only because of them is a per-hop limit, not a bug.
        Err(HeadError::TooLarge) if header_lines(&out) > head::MAX_HEADERS => return,
        Err(e) => panic!("rewritten head does not parse ({e:?}): {shown:?}"),
    }
    let fr2 = match framing::request(&out, &h2) {
        Ok(f) => f,
        Err(e) => panic!("rewritten head refused ({}): {shown:?}", e.message),
    };
    assert_eq!(fr2.body, fr.body, "{shown:?}");
    assert_eq!(fr2.upgrade, fr.upgrade, "{shown:?}");
    assert_eq!(h2.minor_version, 1);
    assert_eq!(h2.method(&out), method);
    if path.is_some() {
        assert_eq!(head::route_path(h2.target(&out)), path, "{shown:?}");
    } else {
        assert_eq!(h2.target(&out), target);
    }
    assert!(h2.header(&out, "x-api-key").is_none(), "{shown:?}");
    assert_eq!(h2.header(&out, "x-request-id"), Some(rid));
});
