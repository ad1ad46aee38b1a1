//! Fuzz target: a client's request head through scan (whole and resumed at a split), parse,
//! framing, the admission checks (canonical path, host, `_` names, hop marker) and the rewrite
//! a backend receives, which must parse back to the same framing and the same canonical path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http::admit::{self, Policy, Refusal, Target, Underscore};
use switchyard::http::canonical;
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

/// The canonical-path rule (SPEC §3) on one output: idempotent, no `//`, no dot segments, no
/// escape of an unreserved character, uppercase hex, none of `\\ # NUL`, no `%2F` / `%5C`.
fn assert_canonical(p: &[u8]) {
    let shown = String::from_utf8_lossy(p);
    let mut again = Vec::new();
    assert_eq!(canonical::canonicalize(p, &mut again), Ok(false), "not idempotent: {shown:?}");
    assert!(p.starts_with(b"/"), "{shown:?}");
    assert!(!p.windows(2).any(|w| w == b"//"), "{shown:?}");
    assert!(
        !p.split(|b| *b == b'/').any(|s| s == b"." || s == b".."),
        "{shown:?}"
    );
    for (i, b) in p.iter().enumerate() {
        assert!(!matches!(b, b'\\' | b'#' | 0), "{shown:?}");
        if *b == b'%' {
            let (h, l) = (p[i + 1], p[i + 2]);
            assert!(h.is_ascii_hexdigit() && l.is_ascii_hexdigit(), "{shown:?}");
            assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase(), "{shown:?}");
            let v = u8::from_str_radix(std::str::from_utf8(&[h, l]).unwrap(), 16).unwrap();
            assert!(!canonical::is_unreserved(v), "{shown:?}");
            assert!(v != b'/' && v != b'\\' && v != 0, "{shown:?}");
        }
    }
}

// Input: 2 bytes split point, 1 byte flags (low 4 bits: head size limit; bits 4-5: underscore
// policy; bit 6: an API key name; bit 7: a shard), then the bytes a client sent.
fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let split_sel = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let flags = data[2];
    let buf = &data[3..];
    let max = 64 * (1 + usize::from(flags & 0x0f));
    let underscore = match (flags >> 4) & 3 {
        0 | 3 => Underscore::Drop,
        1 => Underscore::Reject,
        _ => Underscore::Allow,
    };
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
    let policy = Policy {
        underscore,
        via_token: b"switchyard-fuzz",
    };
    let mut canon = Vec::new();
    let form = match admit::request(buf, &h, &policy, &mut canon) {
        Ok(f) => f,
        Err(Refusal::BadRequest(_)) => return,
        Err(Refusal::Loop) => {
            assert!(String::from_utf8_lossy(buf).to_ascii_lowercase().contains("switchyard-fuzz"));
            return;
        }
    };
    // The path routing and permissions see (and the backend gets).
    let path: Option<Vec<u8>> = match form {
        Target::Path { rewritten: true } => Some(canon.clone()),
        Target::Path { rewritten: false } => head::route_path(target).map(<[u8]>::to_vec),
        Target::Authority | Target::Asterisk => None,
    };
    if let Some(p) = &path {
        assert_canonical(p);
        let sent = head::route_path(target).expect("a path form has a path");
        assert_eq!(canonical::canonical(sent).as_ref(), Ok(p));
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
        path: matches!(form, Target::Path { rewritten: true }).then_some(&canon[..]),
        drop_underscore: underscore == Underscore::Drop,
        via: b"switchyard-fuzz",
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
    match &path {
        Some(p) => assert_eq!(head::route_path(h2.target(&out)), Some(&p[..]), "{shown:?}"),
        None => assert_eq!(h2.target(&out), target),
    }
    assert!(h2.header(&out, "x-api-key").is_none(), "{shown:?}");
    assert_eq!(h2.header(&out, "x-request-id"), Some(rid));
    if underscore == Underscore::Drop {
        assert!(
            h2.headers.iter().all(|r| !out[r.name.clone()].contains(&b'_')),
            "{shown:?}"
        );
    }
    // A second switchyard of the same fleet sees the marker; one of another fleet admits the
    // head, with the path already canonical.
    assert_eq!(admit::request(&out, &h2, &policy, &mut canon), Err(Refusal::Loop), "{shown:?}");
    let other = Policy {
        underscore: Underscore::Allow,
        via_token: b"another-fleet",
    };
    match admit::request(&out, &h2, &other, &mut canon) {
        Ok(Target::Path { rewritten }) => assert!(!rewritten, "{shown:?}"),
        Ok(_) => assert!(path.is_none(), "{shown:?}"),
        Err(e) => panic!("rewritten head refused by the next hop ({e:?}): {shown:?}"),
    }
});
