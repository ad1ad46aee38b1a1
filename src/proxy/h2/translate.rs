//! Header translation between HTTP/2 and HTTP/1.1 (RFC 9113 §8.2, §8.3). Pure: an HTTP/2
//! request head becomes the HTTP/1.1 head the phases parse and forward (`:authority` as
//! `Host`, cookies joined, connection-specific fields out), and an HTTP/1.1 response head
//! becomes HTTP/2 header fields. Also the gRPC status mapping of SPEC §10.
use crate::http::head::HeaderRange;
use crate::http::response::ResponseHead;
use crate::http::{list_items, name_is};
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
}

/// The HTTP/2 fields of an HTTP/1.1 response head (`buf` holds its bytes): connection-specific
/// fields and those its `Connection` lists are dropped, as is any field HTTP/2 cannot carry
/// (an invalid name from a backend is not worth failing the answer for).
pub(crate) fn response_headers(buf: &[u8], resp: &ResponseHead, add: &Added<'_>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(resp.headers.len() + 3);
    // The Connection values, found once rather than in a scan of every field per field (a
    // response rarely has more than one; beyond four the scan is kept).
    let mut lists: [&[u8]; 4] = [&[]; 4];
    let (mut n_lists, mut many) = (0, false);
    for h in &resp.headers {
        if name_is(&buf[h.name.clone()], "connection") {
            if n_lists < lists.len() {
                lists[n_lists] = &buf[h.value.clone()];
                n_lists += 1;
            } else {
                many = true;
            }
        }
    }
    let listed = |name: &[u8]| {
        if many {
            return resp
                .headers
                .iter()
                .filter(|h| name_is(&buf[h.name.clone()], "connection"))
                .flat_map(|h| list_items(&buf[h.value.clone()]))
                .any(|t| t.eq_ignore_ascii_case(name));
        }
        lists[..n_lists]
            .iter()
            .flat_map(|v| list_items(v))
            .any(|t| t.eq_ignore_ascii_case(name))
    };
    for h in &resp.headers {
        let HeaderRange { name, value } = h;
        let (name, value) = (&buf[name.clone()], &buf[value.clone()]);
        if connection_specific(name)
            || name_is(name, "content-length")
            || listed(name)
            || add.edits.drops(name)
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    // The sets come as the HTTP/1.1 lines the other side writes; validated at config load.
    for line in add.edits.lines().split(|b| *b == b'\n') {
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
    if let Some(n) = add.content_length {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Ok(v) = HeaderValue::from_str(add.gateway) {
        map.insert(HeaderName::from_static("x-gateway"), v);
    }
    if let Ok(mut v) =
        HeaderValue::from_maybe_shared(bytes::Bytes::from(server_timing(add.upstream_ms)))
    {
        // A new value on nearly every answer: entered in the HPACK table, it would only push
        // out the fields that repeat (and make every later lookup of the name walk them all).
        v.set_sensitive(true);
        map.insert(HeaderName::from_static("server-timing"), v);
    }
    map
}

/// `upstream;dur=` and the milliseconds to three places, from whole microseconds as on
/// HTTP/1 (`rewrite::response_head`): float formatting costs more than the rest of the field.
fn server_timing(ms: f64) -> Vec<u8> {
    let us = (ms * 1000.0).round().max(0.0) as u64;
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(b"upstream;dur=");
    crate::http::push_u64(&mut out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    out
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
        };
        let m = response_headers(raw, &r, &add);
        assert_eq!(m.get("x-kept").unwrap(), "yes");
        assert_eq!(m.get_all("set-cookie").iter().count(), 2);
        for gone in ["connection", "x-hop", "keep-alive", "transfer-encoding"] {
            assert!(m.get(gone).is_none(), "{gone}");
        }
        // Five Connection fields: the last one's token still drops its field.
        let raw = b"HTTP/1.1 200 OK\r\nConnection: a\r\nConnection: b\r\nConnection: c\r\nConnection: d\r\nConnection: x-late\r\nX-Late: 1\r\nA: 1\r\nX-Kept: yes\r\n\r\n";
        let mut r = ResponseHead::default();
        crate::http::response::parse(raw, raw.len(), &mut r).unwrap();
        let m5 = response_headers(raw, &r, &add);
        assert!(m5.get("x-late").is_none() && m5.get("a").is_none());
        assert_eq!(m5.get("x-kept").unwrap(), "yes");
        // The length is the one the relay decided, not the backend's.
        assert_eq!(m.get_all("content-length").iter().count(), 1);
        assert_eq!(m.get("content-length").unwrap(), "3");
        assert_eq!(m.get("x-gateway").unwrap(), "sy");
        assert_eq!(m.get("server-timing").unwrap(), "upstream;dur=1.500");
        assert!(m.get("server-timing").unwrap().is_sensitive());
        for (ms, want) in [
            (0.0, "0.000"),
            (-1.0, "0.000"),
            (12.3456, "12.346"),
            (0.05, "0.050"),
        ] {
            let v = server_timing(ms);
            assert_eq!(v, format!("upstream;dur={want}").into_bytes(), "{ms}");
        }
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
