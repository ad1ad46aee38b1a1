//! Header translation between HTTP/2 and HTTP/1.1 (RFC 9113 §8.2, §8.3). Pure: an HTTP/2
//! request head becomes the HTTP/1.1 head the phases parse and forward (`:authority` as
//! `Host`, cookies joined, connection-specific fields out), and an HTTP/1.1 response head
//! becomes HTTP/2 header fields. Also the gRPC status mapping of SPEC §10.
use crate::http::kind::Kind;
use crate::http::response::ResponseHead;
use crate::http::{list_items, name_is};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection: never valid in HTTP/2 (RFC 9113 §8.2.2), and
/// dropped from an HTTP/1.1 response on its way to an HTTP/2 client.
const CONNECTION_SPECIFIC: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

pub(crate) fn connection_specific(name: &[u8]) -> bool {
    CONNECTION_SPECIFIC.iter().any(|h| name_is(name, h))
}

/// Why an HTTP/2 request cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// CONNECT (plain or extended) over HTTP/2 is not proxied.
    Connect,
    /// Something no HTTP/1.1 head can carry.
    Malformed(&'static str),
}

/// Writes the HTTP/1.1 head equivalent to an HTTP/2 request into `out` (cleared first):
/// `METHOD path HTTP/1.1`, `Host` from `:authority` (else the `host` field), the fields in
/// order with cookies joined by `; ` into one (RFC 9113 §8.2.3), no `expect` (HTTP/2 flow
/// control does its job) and, for a body of unknown length, `Transfer-Encoding: chunked` so
/// that the HTTP/1.1 framing rules apply unchanged.
pub(crate) fn request_head(
    parts: &http::request::Parts,
    end_stream: bool,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    out.clear();
    if parts.method == http::Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or(Refusal::Malformed("missing :path"))?;
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    // The whole head in one allocation rather than a doubling per few fields.
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(
        parts.method.as_str().len() + path.len() + authority.map_or(0, <[u8]>::len) + fields + 64,
    );
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = authority.or_else(|| parts.headers.get("host").map(HeaderValue::as_bytes));
    if let Some(h) = host {
        push_field(out, b"host", h)?;
    }
    let mut cookies = 0;
    let mut has_length = false;
    for (name, value) in &parts.headers {
        let n = name.as_str().as_bytes();
        if n == b"cookie" {
            cookies += 1;
            continue;
        }
        if n == b"te" {
            // The one TE value HTTP/2 allows (RFC 9113 §8.2.2): kept, so that an HTTP/2
            // backend gets it again; the forward to an HTTP/1.1 one drops it as hop-by-hop.
            if list_items(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                out.extend_from_slice(b"te: trailers\r\n");
            }
            continue;
        }
        // Host came from :authority; expect asks for a 100 that HTTP/2 does not need.
        if n == b"host" || n == b"expect" || connection_specific(n) {
            continue;
        }
        has_length |= n == b"content-length";
        push_field(out, n, value.as_bytes())?;
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        for (i, v) in parts.headers.get_all("cookie").iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            check_value(v.as_bytes())?;
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !end_stream && !has_length {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// A value an HTTP/1.1 head can carry: the `http` crate already refuses CR, LF and NUL, this
/// keeps it that way whatever a future version accepts.
fn check_value(v: &[u8]) -> Result<(), Refusal> {
    if v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Refusal::Malformed("invalid byte in header value"));
    }
    Ok(())
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), Refusal> {
    check_value(value)?;
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// What the gateway adds to a response for an HTTP/2 client.
pub(crate) struct Added<'a> {
    pub gateway: &'a str,
    pub upstream_ms: f64,
    pub content_length: Option<u64>,
    /// The rule's response header sets and removals.
    pub edits: &'a crate::http::edits::HeaderEdits,
    /// `server-timing` may enter the HPACK table (see `stream::H2Out::final_head`).
    pub index_timing: bool,
}

/// Whether a backend's response field of this kind stays out of the HTTP/2 answer: the
/// connection-specific fields ([`connection_specific`]) and the length, which the relay
/// decides. From the kind set at parse, a byte compared instead of the name against seven
/// strings. `Proxy-Authenticate`, the one other hop-by-hop kind (and the only one 18 bytes
/// long), goes on as it always did.
#[inline]
fn dropped_kind(kind: Kind, name_len: usize) -> bool {
    match kind {
        Kind::Connection | Kind::TransferEncoding | Kind::Upgrade | Kind::ContentLength => true,
        Kind::HopByHop => name_len != "proxy-authenticate".len(),
        _ => false,
    }
}

/// The `http` constant for the names backends send on nearly every answer: a length and a
/// word compare, where `HeaderName::from_bytes` lowercases the name through a table and then
/// searches every standard name of that length.
#[inline]
fn known_name(name: &[u8]) -> Option<HeaderName> {
    use http::header;
    let is = |lower| name_is(name, lower);
    Some(match name.len() {
        4 if is("date") => header::DATE,
        4 if is("etag") => header::ETAG,
        4 if is("vary") => header::VARY,
        6 if is("server") => header::SERVER,
        10 if is("set-cookie") => header::SET_COOKIE,
        12 if is("content-type") => header::CONTENT_TYPE,
        13 if is("cache-control") => header::CACHE_CONTROL,
        13 if is("last-modified") => header::LAST_MODIFIED,
        _ => return None,
    })
}

/// A value of the gateway's own making or one httparse accepted, without the byte-by-byte
/// check `HeaderValue::from_maybe_shared` repeats.
///
/// Sound: `HeaderValue`'s invariant is the bytes `HeaderValue::from_bytes` accepts, HTAB and
/// 0x20..=0xFF but DEL (its `unsafe` marks that invariant; the "valid UTF-8" of its docs is
/// not what the type relies on, `from_bytes` itself takes obs-text). The callers hand it
/// either ASCII digits, `upstream;dur=` and a dot, or a backend value as httparse parsed it,
/// and httparse accepts exactly HTAB, 0x20..=0x7E and 0x80..=0xFF in a value
/// (`tests::httparse_and_header_value_accept_the_same_bytes` pins the two together over all
/// 256 bytes, so an httparse that starts to accept more fails it). Debug builds check anyway.
#[inline]
fn checked_value(b: Bytes) -> HeaderValue {
    // SAFETY: see above: every caller's bytes are ones `HeaderValue::from_bytes` accepts.
    unsafe { HeaderValue::from_maybe_shared_unchecked(b) }
}

const X_GATEWAY: HeaderName = HeaderName::from_static("x-gateway");
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The HTTP/2 fields of an HTTP/1.1 response head (`buf` holds its bytes, as parsed by
/// `response::parse`): connection-specific fields and those its `Connection` lists are
/// dropped, as is any field HTTP/2 cannot carry (an invalid name from a backend is not worth
/// failing the answer for).
///
/// The values kept and those the gateway adds are copied into one buffer ([`carve`]), and
/// each field's value is a slice of it, and the map sized once for exactly the fields it gets.
pub(crate) fn response_headers(buf: &[u8], resp: &ResponseHead, add: &Added<'_>) -> HeaderMap {
    // The names `Connection` lists, found once rather than in a scan of every field per
    // field. A token that names a field dropped anyway is left out (`keep-alive`, nginx's on
    // every answer): a field of that name has the same kind whatever its case. Beyond eight
    // tokens the scan is kept.
    let mut tokens: [&[u8]; 8] = [&[]; 8];
    let (mut n_tokens, mut many) = (0, false);
    for h in resp.headers.iter().filter(|h| h.kind == Kind::Connection) {
        for t in list_items(&buf[h.value.clone()]) {
            if dropped_kind(crate::http::kind::classify(t), t.len()) {
                continue;
            }
            if n_tokens < tokens.len() {
                tokens[n_tokens] = t;
                n_tokens += 1;
            } else {
                many = true;
            }
        }
    }
    let listed = |name: &[u8]| {
        tokens[..n_tokens]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
            || (many
                && resp
                    .headers
                    .iter()
                    .filter(|h| h.kind == Kind::Connection)
                    .flat_map(|h| list_items(&buf[h.value.clone()]))
                    .any(|t| t.eq_ignore_ascii_case(name)))
    };
    // Which fields go on (a response head has at most MAX_HEADERS = 128 fields), and how
    // many value bytes they bring.
    let mut kept: u128 = 0;
    let (mut n_kept, mut value_bytes) = (0, 0);
    for (i, h) in resp.headers.iter().enumerate().take(128) {
        if dropped_kind(h.kind, h.name.len()) {
            continue;
        }
        let name = &buf[h.name.clone()];
        if (n_tokens > 0 && listed(name)) || add.edits.drops(name) {
            continue;
        }
        kept |= 1 << i;
        n_kept += 1;
        value_bytes += h.value.len();
    }
    let sets = add.edits.lines();
    let n_sets = sets.iter().filter(|b| **b == b'\n').count();
    let (mut length_at, mut gateway_at, mut timing_at) = (0, 0, 0);
    let values = carve(value_bytes + 20 + add.gateway.len() + 40, |values| {
        for (i, h) in resp.headers.iter().enumerate().take(128) {
            if kept & (1 << i) != 0 {
                values.extend_from_slice(&buf[h.value.clone()]);
            }
        }
        length_at = values.len();
        if let Some(n) = add.content_length {
            put_decimal(values, n);
        }
        gateway_at = values.len();
        values.extend_from_slice(add.gateway.as_bytes());
        timing_at = values.len();
        push_server_timing(values, add.upstream_ms);
    });
    let mut map = HeaderMap::with_capacity(n_kept + n_sets + 3);
    let mut at = 0;
    for (i, h) in resp.headers.iter().enumerate().take(128) {
        if kept & (1 << i) == 0 {
            continue;
        }
        let end = at + h.value.len();
        let value = checked_value(values.slice(at..end));
        at = end;
        let name = &buf[h.name.clone()];
        if let Some(n) = known_name(name).or_else(|| HeaderName::from_bytes(name).ok()) {
            map.append(n, value);
        }
    }
    // The sets come as the HTTP/1.1 lines the other side writes; validated at config load.
    for line in sets.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = crate::http::trim_ows(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    if add.content_length.is_some() {
        map.insert(
            http::header::CONTENT_LENGTH,
            checked_value(values.slice(length_at..gateway_at)),
        );
    }
    // `gateway_header` is printable ASCII (checked at config load), checked again here all
    // the same: a few bytes, and not this function's invariant to rely on.
    if let Ok(v) = HeaderValue::from_maybe_shared(values.slice(gateway_at..timing_at)) {
        map.insert(X_GATEWAY, v);
    }
    let mut v = checked_value(values.slice(timing_at..));
    // A new value on nearly every answer: entered in the HPACK table, it would only push
    // out the fields that repeat (and make every later lookup of the name walk them all).
    v.set_sensitive(!add.index_timing);
    map.insert(SERVER_TIMING, v);
    map
}

/// The block response field values are cut from, per thread (see [`carve`]).
const VALUE_BLOCK: usize = 4 * 1024;

thread_local! {
    static VALUES: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// One response's field values, written by `fill` (at most `need` bytes), as one `Bytes`
/// cut from a block the thread's responses share. Each response used to cost two allocations
/// and two frees for its values (the buffer, and the shared header `Bytes` adds on the first
/// slice); a block holds a few dozen responses' values, and once they are all gone (h2 drops
/// the fields when it has encoded them) it is taken back as it is. A response that still
/// holds some (its HEADERS queued behind a stalled client) keeps only its block, at most 4 KiB,
/// alive. Larger values get a buffer of their own.
fn carve(need: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    if need > VALUE_BLOCK / 4 {
        let mut own = BytesMut::with_capacity(need);
        fill(&mut own);
        return own.freeze();
    }
    VALUES.with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() < need {
            block.reserve(VALUE_BLOCK);
        }
        fill(&mut block);
        block.split().freeze()
    })
}

/// `n` in decimal.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// `upstream;dur=` and the milliseconds to three places, from whole microseconds as on
/// HTTP/1 (`rewrite::response_head`): float formatting costs more than the rest of the field.
fn push_server_timing(out: &mut BytesMut, ms: f64) {
    let us = (ms * 1000.0).round().max(0.0) as u64;
    out.extend_from_slice(b"upstream;dur=");
    put_decimal(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Whether a request is gRPC: `content-type: application/grpc` or `application/grpc+…`.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|v| {
            let base = b"application/grpc";
            v.len() >= base.len()
                && v[..base.len()].eq_ignore_ascii_case(base)
                && matches!(v.get(base.len()), None | Some(b'+' | b';'))
        })
}

/// The gRPC status for an HTTP status switchyard answers with (the gRPC project's
/// "HTTP to gRPC status code mapping"; SPEC §10).
pub(crate) fn grpc_status(http: u16) -> u32 {
    match http {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2: anything outside printable ASCII, and
/// `%` itself).
pub(crate) fn grpc_message(m: &str) -> String {
    let mut s = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn head(req: http::Request<()>, end: bool) -> String {
        let mut out = Vec::new();
        request_head(&parts(req), end, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn authority_becomes_host_and_cookies_are_joined() {
        let req = http::Request::get("https://api.test:8443/a/b?x=1")
            .header("cookie", "a=1")
            .header("accept", "*/*")
            .header("cookie", "b=2")
            .header("host", "ignored.test")
            .body(())
            .unwrap();
        let h = head(req, true);
        assert_eq!(
            h,
            "GET /a/b?x=1 HTTP/1.1\r\nhost: api.test:8443\r\naccept: */*\r\ncookie: a=1; b=2\r\n\r\n"
        );
    }

    #[test]
    fn host_field_when_no_authority_and_bodies_framed() {
        let req = http::Request::post("/up")
            .header("host", "h.test")
            .header("te", "trailers")
            .header("expect", "100-continue")
            .body(())
            .unwrap();
        let h = head(req, false);
        assert_eq!(
            h,
            "POST /up HTTP/1.1\r\nhost: h.test\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let req = http::Request::post("/up")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let h = head(req, false);
        assert_eq!(h, "POST /up HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
    }

    #[test]
    fn connect_is_refused() {
        let req = http::Request::connect("a.test:443").body(()).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            request_head(&parts(req), true, &mut out),
            Err(Refusal::Connect)
        );
    }

    #[test]
    fn response_fields_lose_connection_specific_ones() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 9\r\n\r\n";
        let mut r = ResponseHead::default();
        crate::http::response::parse(raw, raw.len(), &mut r).unwrap();
        let add = Added {
            gateway: "sy",
            upstream_ms: 1.5,
            content_length: Some(3),
            edits: &crate::http::edits::NONE.response,
            index_timing: false,
        };
        let m = response_headers(raw, &r, &add);
        assert_eq!(m.get("x-kept").unwrap(), "yes");
        let cookies: Vec<_> = m.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        // Each value is its own slice of the one buffer, in order, next to the sets.
        let edits = crate::http::edits::HeaderEdits::new(
            &[("X-Set".to_string(), "on".to_string())],
            &["x-kept".to_string()],
        );
        let m2 = response_headers(
            raw,
            &r,
            &Added {
                edits: &edits,
                ..add
            },
        );
        let all: Vec<_> = m2.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
        assert_eq!(
            all,
            [
                "set-cookie=\"a=1\"",
                "set-cookie=\"b=2\"",
                "x-set=\"on\"",
                "content-length=\"3\"",
                "x-gateway=\"sy\"",
                "server-timing=Sensitive",
            ]
        );
        for gone in ["connection", "x-hop", "keep-alive", "transfer-encoding"] {
            assert!(m.get(gone).is_none(), "{gone}");
        }
        // Nine tokens over four Connection fields, keep-alive not counted: the ninth still
        // drops its field, as the first does.
        let raw = b"HTTP/1.1 200 OK\r\nConnection: a, b, c\r\nConnection: d, Keep-Alive, e\r\nConnection: f,g, h\r\nConnection: X-LATE\r\nX-Late: 1\r\nA: 1\r\nH: 1\r\nKeep-Alive: 5\r\nX-Kept: yes\r\nDATE: d\r\nProxy-Authenticate: Basic\r\n\r\n";
        let mut r = ResponseHead::default();
        crate::http::response::parse(raw, raw.len(), &mut r).unwrap();
        let m5 = response_headers(raw, &r, &add);
        for gone in ["x-late", "a", "h", "keep-alive", "connection"] {
            assert!(m5.get(gone).is_none(), "{gone}");
        }
        assert_eq!(m5.get("x-kept").unwrap(), "yes");
        // Known names by their constants, and the one hop-by-hop name HTTP/2 always carried.
        assert_eq!(m5.get(http::header::DATE).unwrap(), "d");
        assert_eq!(m5.get("proxy-authenticate").unwrap(), "Basic");
        // The length is the one the relay decided, not the backend's.
        assert_eq!(m.get_all("content-length").iter().count(), 1);
        assert_eq!(m.get("content-length").unwrap(), "3");
        assert_eq!(m.get("x-gateway").unwrap(), "sy");
        assert_eq!(m.get("server-timing").unwrap(), "upstream;dur=1.500");
        assert!(m.get("server-timing").unwrap().is_sensitive());
        let seed = response_headers(
            raw,
            &r,
            &Added {
                index_timing: true,
                ..add
            },
        );
        assert!(!seed.get("server-timing").unwrap().is_sensitive());
        for (ms, want) in [
            (0.0, "0.000"),
            (-1.0, "0.000"),
            (12.3456, "12.346"),
            (0.05, "0.050"),
        ] {
            let mut v = BytesMut::from(&b"x"[..]);
            push_server_timing(&mut v, ms);
            assert_eq!(v[1..], *format!("upstream;dur={want}").as_bytes(), "{ms}");
        }
    }

    /// `checked_value`'s soundness: a byte is in a value httparse parses exactly when
    /// `HeaderValue` would take it, at every position of a value long enough for httparse's
    /// vectorised scans (16 and 32 bytes at a time) as well as its byte loop.
    #[test]
    fn httparse_and_header_value_accept_the_same_bytes() {
        for b in 0..=255u8 {
            let accepted = HeaderValue::from_bytes(&[b'a', b, b'a']).is_ok();
            for len in [3, 17, 40, 70] {
                for at in 1..len - 1 {
                    let mut value = vec![b'a'; len];
                    value[at] = b;
                    let mut raw = b"HTTP/1.1 200 OK\r\nX-V: ".to_vec();
                    raw.extend_from_slice(&value);
                    raw.extend_from_slice(b"\r\nX-W: 1\r\n\r\n");
                    let mut r = ResponseHead::default();
                    let parsed = crate::http::response::parse(&raw, raw.len(), &mut r).is_ok()
                        && r.headers.len() == 2
                        && raw[r.headers[0].value.clone()] == value[..];
                    assert_eq!(parsed, accepted, "byte {b:#04x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn kinds_drop_what_the_names_did() {
        let names = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "content-length",
            "proxy-authenticate",
            "content_length",
            "transfer_encoding",
            "host",
            "via",
            "expect",
            "x-request-id",
            "x-forwarded-for",
            "idempotency-key",
            "x-shard",
            "date",
            "server",
            "tee",
            "t",
            "",
        ];
        for n in names {
            for s in [n.to_string(), n.to_ascii_uppercase(), n.replace('-', "_")] {
                let b = s.as_bytes();
                let by_name = connection_specific(b) || name_is(b, "content-length");
                let kind = crate::http::kind::classify(b);
                assert_eq!(dropped_kind(kind, b.len()), by_name, "{s}");
            }
        }
    }

    #[test]
    fn known_names_are_the_ones_http_parses() {
        for n in [
            "date",
            "etag",
            "vary",
            "server",
            "set-cookie",
            "content-type",
            "cache-control",
            "last-modified",
        ] {
            for s in [n.to_string(), n.to_ascii_uppercase(), {
                let mut c = n.to_string();
                c[..1].make_ascii_uppercase();
                c
            }] {
                assert_eq!(
                    known_name(s.as_bytes()),
                    Some(HeaderName::from_bytes(s.as_bytes()).unwrap()),
                    "{s}"
                );
            }
        }
        for s in ["dat", "datex", "x-date", "servers", "content_type", ""] {
            assert_eq!(known_name(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn values_cut_from_shared_blocks_stay_whole() {
        // Answers with values of every size, some kept alive across several blocks (as
        // HEADERS queued for a stalled client would), others dropped at once so that blocks
        // are taken back: every value reads as it was written.
        let mut alive = Vec::new();
        for i in 0..3000usize {
            let raw = format!(
                "HTTP/1.1 200 OK\r\nX-A: {}\r\nX-B: {i}\r\n\r\n",
                "v".repeat(i % 1500)
            );
            let mut r = ResponseHead::default();
            crate::http::response::parse(raw.as_bytes(), raw.len(), &mut r).unwrap();
            let add = Added {
                gateway: "gw",
                upstream_ms: i as f64,
                content_length: Some(i as u64 * 7919),
                edits: &crate::http::edits::NONE.response,
                index_timing: false,
            };
            let m = response_headers(raw.as_bytes(), &r, &add);
            if i % 7 == 0 {
                alive.push((i, m));
            } else {
                check_values(i, &m);
            }
        }
        for (i, m) in &alive {
            check_values(*i, m);
        }
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut v = BytesMut::new();
            put_decimal(&mut v, n);
            assert_eq!(v[..], *n.to_string().as_bytes());
        }
    }

    fn check_values(i: usize, m: &HeaderMap) {
        assert_eq!(
            m.get("x-a").unwrap().as_bytes(),
            "v".repeat(i % 1500).as_bytes()
        );
        assert_eq!(m.get("x-b").unwrap(), i.to_string().as_str());
        assert_eq!(
            m.get("content-length").unwrap(),
            (i as u64 * 7919).to_string().as_str()
        );
        assert_eq!(m.get("x-gateway").unwrap(), "gw");
        let timing = format!("upstream;dur={i}.000");
        assert_eq!(m.get("server-timing").unwrap(), timing.as_str());
    }

    #[test]
    fn grpc_detection_and_mapping() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        assert!(is_grpc(&h));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpcx"),
        );
        assert!(!is_grpc(&h));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(!is_grpc(&h));
        let map: Vec<u32> = [400, 401, 403, 404, 429, 502, 503, 504, 500]
            .iter()
            .map(|s| grpc_status(*s))
            .collect();
        assert_eq!(map, [13, 16, 7, 12, 14, 14, 14, 14, 2]);
        assert_eq!(grpc_message("no route: 100%\n"), "no route: 100%25%0A");
    }
}
