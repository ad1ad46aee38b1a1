//! Header translation between HTTP/2 and HTTP/1.1 (RFC 9113 §8.2, §8.3). Pure: an HTTP/2
//! request head becomes the HTTP/1.1 head the phases parse and forward (`:authority` as
//! `Host`, cookies joined, connection-specific fields out), and an HTTP/1.1 response head
//! becomes HTTP/2 header fields. Also the gRPC status mapping of SPEC §10.
use crate::http::head::{HeadError, HeaderRange, RequestHead, MAX_HEADERS};
use crate::http::kind::{self, Kind};
use crate::http::response::ResponseHead;
use crate::http::token;
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
    /// What `http::head::parse` refuses in the head written (its size included).
    Head(HeadError),
}

/// Writes the HTTP/1.1 head equivalent to an HTTP/2 request into `out` and its index into
/// `head` (both cleared first): `METHOD path HTTP/1.1`, `Host` from `:authority` (else the
/// `host` field), the fields in order with cookies joined by `; ` into one (RFC 9113 §8.2.3), no
/// `expect` (HTTP/2 flow control does its job) and, for a body of unknown length,
/// `Transfer-Encoding: chunked` so that the HTTP/1.1 framing rules apply unchanged.
///
/// `head` is what `http::head::parse` makes of `out`, with the same refusals in the same order,
/// built as the bytes are written: parsing them again cost more than writing them.
pub(crate) fn request_head(
    parts: &http::request::Parts,
    end_stream: bool,
    max_header_bytes: usize,
    out: &mut Vec<u8>,
    head: &mut RequestHead,
) -> Result<(), Refusal> {
    out.clear();
    head.headers.clear();
    if parts.method == http::Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or(Refusal::Malformed("missing :path"))?;
    let host = match parts.uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => parts.headers.get("host").map(HeaderValue::as_bytes),
    };
    let fields = || {
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };
    let line = Line {
        method: parts.method.as_str().as_bytes(),
        path: path.as_bytes(),
        host,
    };
    write_head(&line, fields, end_stream, max_header_bytes, out, head)
}

/// The request line's parts and the `Host` value of a head to write.
struct Line<'a> {
    method: &'a [u8],
    path: &'a [u8],
    host: Option<&'a [u8]>,
}

/// [`request_head`] over the fields as bytes (the `http` crate's types cannot hold most of
/// what the checks guard against, so the tests call this).
fn write_head<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(
    line: &Line<'_>,
    fields: impl Fn() -> I,
    end_stream: bool,
    max_header_bytes: usize,
    out: &mut Vec<u8>,
    head: &mut RequestHead,
) -> Result<(), Refusal> {
    out.clear();
    head.headers.clear();
    // The whole head in one allocation rather than a doubling per few fields.
    let (mut bytes, mut n) = (0, 0);
    for (name, value) in fields() {
        bytes += name.len() + value.len() + 4;
        n += 1;
    }
    out.reserve(
        line.method.len() + line.path.len() + line.host.map_or(0, <[u8]>::len) + bytes + 64,
    );
    head.headers.reserve(n + 2);
    // Anything httparse might take otherwise than as written (bytes the `http` crate's types
    // do not hold today): the head is then parsed after all, for its exact refusal or index.
    let mut odd = !token::is_token(line.method);
    out.extend_from_slice(line.method);
    head.method = 0..out.len();
    out.push(b' ');
    let at = out.len();
    out.extend_from_slice(line.path);
    head.target = at..out.len();
    odd |= !uri_ok(line.path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut w = Fields { out, head, odd };
    if let Some(h) = line.host {
        w.push(b"host", Kind::Host, h)?;
    }
    let mut cookies = 0;
    let mut has_length = false;
    for (n, value) in fields() {
        if n == b"cookie" {
            cookies += 1;
            continue;
        }
        let kind = kind::classify(n);
        match kind {
            Kind::HopByHop if n == b"te" => {
                // The one TE value HTTP/2 allows (RFC 9113 §8.2.2): kept, so that an HTTP/2
                // backend gets it again; the forward to an HTTP/1.1 one drops it as hop-by-hop.
                if list_items(value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                    w.push(b"te", Kind::HopByHop, b"trailers")?;
                }
                continue;
            }
            // Host came from :authority; expect asks for a 100 that HTTP/2 does not need.
            Kind::Host if n == b"host" => continue,
            Kind::Expect if n == b"expect" => continue,
            _ if connection_specific_kind(kind, n.len()) => continue,
            Kind::ContentLength => has_length |= n == b"content-length",
            _ => {}
        }
        w.push(n, kind, value)?;
    }
    if cookies > 0 {
        w.open(b"cookie");
        let mut first = true;
        for (n, v) in fields() {
            if n != b"cookie" {
                continue;
            }
            if !first {
                w.out.extend_from_slice(b"; ");
            }
            first = false;
            w.out.extend_from_slice(v);
        }
        w.close(Kind::Other)?;
    }
    if !end_stream && !has_length {
        w.push(b"transfer-encoding", Kind::TransferEncoding, b"chunked")?;
    }
    let Fields { out, head, odd } = w;
    out.extend_from_slice(b"\r\n");
    head.minor_version = 1;
    head.len = out.len();
    if out.len() > max_header_bytes {
        return Err(Refusal::Head(HeadError::TooLarge));
    }
    if odd {
        crate::http::head::parse(out, out.len(), head).map_err(Refusal::Head)?;
    }
    Ok(())
}

/// The head's fields as they are written, each indexed as `http::head::parse` indexes it.
struct Fields<'o> {
    out: &'o mut Vec<u8>,
    head: &'o mut RequestHead,
    /// See `odd` in [`write_head`].
    odd: bool,
}

impl Fields<'_> {
    fn push(&mut self, name: &[u8], kind: Kind, value: &[u8]) -> Result<(), Refusal> {
        self.open(name);
        self.out.extend_from_slice(value);
        self.close(kind)
    }

    /// Writes `name: `; the value follows, then [`Self::close`].
    fn open(&mut self, name: &[u8]) {
        let at = self.out.len();
        self.out.extend_from_slice(name);
        // The name's range rides in the last field until `close` (no allocation of its own).
        self.head.headers.push(HeaderRange {
            name: at..self.out.len(),
            value: 0..0,
            kind: Kind::Other,
        });
        self.out.extend_from_slice(b": ");
    }

    /// Ends the field whose value was just written: checks it and sets its ranges.
    fn close(&mut self, kind: Kind) -> Result<(), Refusal> {
        let count = self.head.headers.len();
        let Some(h) = self.head.headers.last_mut() else {
            return Ok(());
        };
        let start = h.name.end + 2;
        let value = &self.out[start..];
        let (forbidden, invalid) = value_bytes(value);
        if forbidden {
            // The `http` crate already refuses CR, LF and NUL; this keeps it that way whatever
            // a future version accepts (and before the size check, as ever).
            return Err(Refusal::Malformed("invalid byte in header value"));
        }
        let name = &self.out[h.name.clone()];
        self.odd |= invalid || !token::is_token(name) || count > MAX_HEADERS;
        let blank = |b: &u8| matches!(b, b' ' | b'\t');
        h.value = match (value.first(), value.last()) {
            (None, _) => 0..0,
            (Some(f), Some(l)) if !blank(f) && !blank(l) => start..start + value.len(),
            _ => {
                // httparse's trim: blanks before the value and after it.
                let lead = value.iter().take_while(|b| blank(b)).count();
                let trail = value[lead..].iter().rev().take_while(|b| blank(b)).count();
                if lead == value.len() {
                    0..0
                } else {
                    start + lead..start + value.len() - trail
                }
            }
        };
        h.kind = kind;
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Whether a value has CR, LF or NUL, and whether it has any byte httparse refuses in a value
/// (the other controls and DEL; the same set as the `http` crate's).
#[inline]
fn value_bytes(v: &[u8]) -> (bool, bool) {
    // Eight bytes at a time for the common answer (a byte at a time cost ~10 instructions a
    // byte); a tab (or anything odd) sends the value to the exact look.
    if !any_below_or_del(v, 0x20) {
        return (false, false);
    }
    let (mut forbidden, mut invalid) = (false, false);
    for &b in v {
        forbidden |= b == b'\r' || b == b'\n' || b == 0;
        invalid |= (b < 0x20 && b != b'\t') || b == 0x7f;
    }
    (forbidden, invalid)
}

/// Whether any byte of `v` is below `n` (at most 0x80) or DEL.
#[inline]
fn any_below_or_del(v: &[u8], n: u8) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // Exact as a yes or no (the borrows only run into bytes already found).
    let hit = |w: u64| {
        let below = w.wrapping_sub(ONES * u64::from(n)) & !w;
        let del = w ^ (ONES * 0x7f);
        (below | (del.wrapping_sub(ONES) & !del)) & HIGH != 0
    };
    let mut words = v.chunks_exact(8);
    for c in &mut words {
        if c.first_chunk::<8>()
            .is_some_and(|c| hit(u64::from_ne_bytes(*c)))
        {
            return true;
        }
    }
    // The tail byte by byte: padding it into a word took a `memcpy` call per value.
    words.remainder().iter().any(|&b| b < n || b == 0x7f)
}

/// A request target httparse takes: visible ASCII or any byte from 0x80, valid UTF-8.
fn uri_ok(t: &[u8]) -> bool {
    !t.is_empty() && !any_below_or_del(t, 0x21) && (t.is_ascii() || std::str::from_utf8(t).is_ok())
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

/// [`connection_specific`] from the kind set at parse (a byte compared instead of the name
/// against seven strings). `Proxy-Authenticate`, the one other hop-by-hop kind (and the only
/// one 18 bytes long), is not connection-specific and crosses as it always did.
#[inline]
fn connection_specific_kind(kind: Kind, name_len: usize) -> bool {
    match kind {
        Kind::Connection | Kind::TransferEncoding | Kind::Upgrade => true,
        Kind::HopByHop => name_len != "proxy-authenticate".len(),
        _ => false,
    }
}

/// Whether a backend's response field of this kind stays out of the HTTP/2 answer: the
/// connection-specific fields and the length, which the relay decides.
#[inline]
fn dropped_kind(kind: Kind, name_len: usize) -> bool {
    kind == Kind::ContentLength || connection_specific_kind(kind, name_len)
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
            crate::http::push_u64(values, n);
        }
        gateway_at = values.len();
        values.extend_from_slice(add.gateway.as_bytes());
        timing_at = values.len();
        crate::http::push_server_timing(values, add.upstream_ms);
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

/// Whether a request is gRPC: `content-type: application/grpc` or `application/grpc+…`.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    // The first content-type, found by a walk over the few fields of a request (a standard
    // name compares as a number) rather than a hash lookup, which cost more.
    headers
        .iter()
        .find(|(n, _)| *n == http::header::CONTENT_TYPE)
        .map(|(_, v)| v.as_bytes())
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
        request_head(
            &parts(req),
            end,
            65536,
            &mut out,
            &mut RequestHead::default(),
        )
        .unwrap();
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

    /// The translation as it was, before it indexed the head itself: bytes only, which the
    /// stream then checked for size and parsed (`reference`). Kept verbatim over raw fields.
    fn old_translation<'a>(
        line: &Line<'_>,
        fields: &[(&'a [u8], &'a [u8])],
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
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
        out.clear();
        out.extend_from_slice(line.method);
        out.push(b' ');
        out.extend_from_slice(line.path);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(h) = line.host {
            push_field(out, b"host", h)?;
        }
        let mut cookies = 0;
        let mut has_length = false;
        for (n, value) in fields {
            let n = *n;
            if n == b"cookie" {
                cookies += 1;
                continue;
            }
            if n == b"te" {
                if list_items(value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                    out.extend_from_slice(b"te: trailers\r\n");
                }
                continue;
            }
            if n == b"host" || n == b"expect" || connection_specific(n) {
                continue;
            }
            has_length |= n == b"content-length";
            push_field(out, n, value)?;
        }
        if cookies > 0 {
            out.extend_from_slice(b"cookie: ");
            for (i, (_, v)) in fields.iter().filter(|(n, _)| *n == b"cookie").enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"; ");
                }
                check_value(v)?;
                out.extend_from_slice(v);
            }
            out.extend_from_slice(b"\r\n");
        }
        if !end_stream && !has_length {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// What a head came to either way: the refusal, or the bytes and every field of their index.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Refused(Refusal),
        Head(Vec<u8>, String),
    }

    fn index(h: &RequestHead) -> String {
        let fields: Vec<_> = h
            .headers
            .iter()
            .map(|f| format!("{:?}={:?}:{:?}", f.name, f.value, f.kind))
            .collect();
        format!(
            "{:?} {:?} 1.{} len {} [{}]",
            h.method,
            h.target,
            h.minor_version,
            h.len,
            fields.join(" ")
        )
    }

    /// The old way: translate, size check, `http::head::parse`.
    fn reference(line: &Line<'_>, fields: &[(&[u8], &[u8])], end: bool, max: usize) -> Outcome {
        let mut out = Vec::new();
        if let Err(r) = old_translation(line, fields, end, &mut out) {
            return Outcome::Refused(r);
        }
        if out.len() > max {
            return Outcome::Refused(Refusal::Head(HeadError::TooLarge));
        }
        let mut h = RequestHead::default();
        match crate::http::head::parse(&out, out.len(), &mut h) {
            Ok(()) => Outcome::Head(out, index(&h)),
            Err(e) => Outcome::Refused(Refusal::Head(e)),
        }
    }

    /// The new way, into vectors that held another head before (as a stream's scratch does).
    fn direct(
        line: &Line<'_>,
        fields: &[(&[u8], &[u8])],
        end: bool,
        max: usize,
        out: &mut Vec<u8>,
        h: &mut RequestHead,
    ) -> Outcome {
        match write_head(line, || fields.iter().copied(), end, max, out, h) {
            Ok(()) => Outcome::Head(out.clone(), index(h)),
            Err(r) => Outcome::Refused(r),
        }
    }

    use crate::http::test_rng::Rng;

    const NAMES: [&str; 34] = [
        "host",
        "cookie",
        "te",
        "expect",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "x-forwarded-for",
        "x_forwarded_for",
        "x-forwarded-proto",
        "x-request-id",
        "x_request_id",
        "via",
        "idempotency-key",
        "accept",
        "user-agent",
        "content-type",
        "x-a",
        "a_b",
        "x-shard",
        "x_api_key",
        "x-api-key-name",
        "HOST",
        "Cookie",
        "TE",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
        "Connection",
    ];

    #[test]
    fn the_head_is_indexed_as_parsing_it_would() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let name_odd = [b' ', b':', b'(', b'"', 0x7f, 0x80, b'\t', 0, b'\r', b'A'];
        let value_odd = [0x7f, 0x80, 0xff, 0x01, 0x1f, b'\r', b'\n', 0, b'\t', b' '];
        // The vectors a stream reuses: whatever the last head left in them must not show.
        let (mut out, mut h) = (Vec::new(), RequestHead::default());
        for round in 0..30_000 {
            let method: Vec<u8> = match rng.below(12) {
                0 => {
                    let n = 1 + rng.below(6);
                    rng.bytes(b"GETPOSTX", &[b' ', 0x01, b'/', 0x80], n)
                }
                1 => Vec::new(),
                _ => rng
                    .pick(&["GET", "POST", "HEAD", "PUT", "OPTIONS", "PATCH"])
                    .into(),
            };
            let path: Vec<u8> = match rng.below(8) {
                0 => {
                    let mut p = b"/".to_vec();
                    let n = rng.below(30);
                    p.extend(rng.bytes(
                        b"ab/?=&%.",
                        &[b' ', 0x7f, 0x80, 0xc3, 0xa9, 0x01, b'#'],
                        n,
                    ));
                    p
                }
                1 => "*".into(),
                2 => "/caf\u{e9}?q=\u{2603}".into(),
                _ => rng
                    .pick(&["/", "/a/b?x=1", "/api/v1/items", "//admin/../x"])
                    .into(),
            };
            let host: Option<Vec<u8>> = match rng.below(6) {
                0 => None,
                1 => {
                    let n = rng.below(12);
                    Some(rng.bytes(b"ab.:8 ", &value_odd, n))
                }
                _ => Some(rng.pick(&["api.test", "api.test:8443", "h"]).into()),
            };
            let count = match rng.below(50) {
                0 => 120 + rng.below(20),
                _ => rng.below(12),
            };
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for _ in 0..count {
                let name: Vec<u8> = if rng.below(8) == 0 {
                    let n = rng.below(10);
                    rng.bytes(b"abcxyz-_019", &name_odd, n)
                } else {
                    rng.pick(&NAMES).into()
                };
                let len = match rng.below(60) {
                    0 => 1000 + rng.below(6000),
                    _ => rng.below(24),
                };
                let mut value = rng.bytes(b"abc=;, \t1/", &value_odd, len);
                if rng.below(10) == 0 {
                    value.extend_from_slice(b" trailers,");
                }
                fields.push((name, value));
            }
            let line = Line {
                method: &method,
                path: &path,
                host: host.as_deref(),
            };
            let fields: Vec<(&[u8], &[u8])> =
                fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let end = rng.below(2) == 0;
            // Limits at the head's own size (and on either side of it), and roomy ones.
            let mut whole = Vec::new();
            let size = match old_translation(&line, &fields, end, &mut whole) {
                Ok(()) => whole.len(),
                Err(_) => 100,
            };
            let max = match rng.below(5) {
                0 => size - 1,
                1 => size,
                2 => size + 1,
                3 => rng.below(size * 2),
                _ => 65536,
            };
            assert_eq!(
                direct(&line, &fields, end, max, &mut out, &mut h),
                reference(&line, &fields, end, max),
                "round {round}: {:?} {:?} {:?} {:?} end {end} max {max}",
                String::from_utf8_lossy(&method),
                String::from_utf8_lossy(&path),
                host.as_deref().map(String::from_utf8_lossy),
                fields
                    .iter()
                    .map(|(n, v)| format!(
                        "{}: {}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    ))
                    .collect::<Vec<_>>(),
            );
        }
    }

    #[test]
    fn adversarial_heads_are_indexed_as_parsing_them_would() {
        let long = "v".repeat(70_000);
        let blanks = [" ", "\t", "  a  ", "\t a\tb \t", "", " \t ", "a b", "; "];
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>);
        let mut cases: Vec<Case> = vec![
            (vec![("cookie", ""), ("cookie", "")], Some("h")),
            (
                vec![("cookie", " a=1"), ("x-a", "1"), ("cookie", "b=2 ")],
                Some("h"),
            ),
            (vec![("cookie", "\t"), ("cookie", " ")], None),
            (
                vec![("te", "gzip, trailers"), ("te", "x"), ("te", "\0")],
                Some("h"),
            ),
            (vec![("te", "trailers\r\n")], Some("h")),
            (vec![("connection", "\0"), ("upgrade", "\r")], Some("h")),
            (
                vec![("proxy-authenticate", "x"), ("x_a", "\u{7f}")],
                Some("h"),
            ),
            (vec![("host", "other"), ("content-length", "5")], Some("h")),
            (vec![("host", "other"), ("content-length", "5")], None),
            (vec![("content_length", "5"), ("Content-Length", "6")], None),
            (vec![("x-long", &long)], Some("h")),
            (vec![("x-long", &long), ("x-nul", "\0")], Some("h")),
            (vec![("x-long", &long), ("x-del", "\u{7f}")], Some("h")),
            (vec![("", "x")], Some("h")),
            (vec![("x a", "x")], Some("h")),
            (vec![("x", "\u{e9}")], Some(" h\t")),
        ];
        for b in blanks {
            cases.push((vec![("x-b", b), ("cookie", b), ("cookie", b)], Some(b)));
        }
        let many: Vec<String> = (0..140).map(|i| format!("x-{i}")).collect();
        for n in 126..=130 {
            cases.push((
                many[..n].iter().map(|s| (s.as_str(), "1")).collect(),
                Some("h"),
            ));
            let mut f: Vec<_> = many[..n].iter().map(|s| (s.as_str(), "1")).collect();
            f.push(("x-bad", "\u{1}"));
            cases.push((f, Some("h")));
        }
        let (mut out, mut h) = (Vec::new(), RequestHead::default());
        for (fields, host) in &cases {
            let fields: Vec<(&[u8], &[u8])> = fields
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                .collect();
            for method in ["GET", "POST", "G T", "GET\u{1}", ""] {
                for path in ["/", "/a b", "/\u{7f}", "/\u{e9}", "?x"] {
                    let line = Line {
                        method: method.as_bytes(),
                        path: path.as_bytes(),
                        host: host.map(str::as_bytes),
                    };
                    for end in [true, false] {
                        for max in [64, 100, 1000, 4096, 65536, 80_000, usize::MAX] {
                            assert_eq!(
                                direct(&line, &fields, end, max, &mut out, &mut h),
                                reference(&line, &fields, end, max),
                                "{method:?} {path:?} {host:?} {fields:?} end {end} max {max}"
                            );
                        }
                    }
                }
            }
        }
        // Not a gap in the comparison: each kind of outcome came up.
        let line = Line {
            method: b"GET",
            path: b"/",
            host: Some(b"h"),
        };
        let f = |v: &'static [u8]| [(&b"x"[..], v)];
        assert_eq!(
            direct(&line, &f(b"\0"), true, 65536, &mut out, &mut h),
            Outcome::Refused(Refusal::Malformed("invalid byte in header value"))
        );
        assert_eq!(
            direct(&line, &f(b"\x01"), true, 65536, &mut out, &mut h),
            Outcome::Refused(Refusal::Head(HeadError::Malformed(
                "invalid byte in header value"
            )))
        );
        assert_eq!(
            direct(&line, &f(b"\x01"), true, 10, &mut out, &mut h),
            Outcome::Refused(Refusal::Head(HeadError::TooLarge))
        );
    }

    /// The same comparison through the `http` crate's request parts, as h2 hands them over.
    #[test]
    fn stream_heads_are_indexed_as_parsing_them_would() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut out, mut h) = (Vec::new(), RequestHead::default());
        for _ in 0..5_000 {
            let uri = match rng.below(4) {
                0 => "/p?q=1".to_string(),
                1 => "https://api.test:8443/a/b?x=1".to_string(),
                2 => "http://h/".to_string(),
                _ => format!("https://x.test/{}", "s".repeat(rng.below(40))),
            };
            let method = rng.pick(&["GET", "POST", "HEAD", "DELETE"]);
            let mut b = http::Request::builder().method(method).uri(uri);
            for _ in 0..rng.below(14) {
                let name = rng.pick(&NAMES).to_ascii_lowercase();
                let n = rng.below(20);
                let v = rng.bytes(b"ab=; \t,", &[0x80, 0xff, b'\t', b' '], n);
                b = b.header(name, HeaderValue::from_bytes(&v).unwrap());
            }
            let p = parts(b.body(()).unwrap());
            let end = rng.below(2) == 0;
            let fields: Vec<(&[u8], &[u8])> = p
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
                .collect();
            let authority = p.uri.authority().map(|a| a.as_str().as_bytes());
            let line = Line {
                method: p.method.as_str().as_bytes(),
                path: p.uri.path_and_query().unwrap().as_str().as_bytes(),
                host: authority.or_else(|| p.headers.get("host").map(HeaderValue::as_bytes)),
            };
            let want = reference(&line, &fields, end, 65536);
            let got = match request_head(&p, end, 65536, &mut out, &mut h) {
                Ok(()) => Outcome::Head(out.clone(), index(&h)),
                Err(r) => Outcome::Refused(r),
            };
            assert_eq!(got, want, "{p:?}");
            assert!(matches!(got, Outcome::Head(..)));
        }
    }

    #[test]
    fn the_word_look_finds_every_byte_the_byte_look_does() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', b' ', 0xff, b'\t'] {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        for n in [0x20, 0x21] {
                            let naive = v.iter().any(|c| *c < n || *c == 0x7f);
                            assert_eq!(any_below_or_del(&v, n), naive, "{v:?} {n}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn connect_is_refused() {
        let req = http::Request::connect("a.test:443").body(()).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            request_head(
                &parts(req),
                true,
                65536,
                &mut out,
                &mut RequestHead::default()
            ),
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
            crate::http::push_server_timing(&mut v, ms);
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
        let others = [
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
        for n in CONNECTION_SPECIFIC.iter().chain(&others) {
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
            crate::http::push_u64(&mut v, n);
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
        // The first content-type decides, among other fields.
        h.append("content-type", HeaderValue::from_static("application/grpc"));
        assert!(!is_grpc(&h));
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        assert!(!is_grpc(&h));
        h.append("content-type", HeaderValue::from_static("application/grpc"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        assert!(is_grpc(&h));
        let map: Vec<u32> = [400, 401, 403, 404, 429, 502, 503, 504, 500]
            .iter()
            .map(|s| grpc_status(*s))
            .collect();
        assert_eq!(map, [13, 16, 7, 12, 14, 14, 14, 14, 2]);
        assert_eq!(grpc_message("no route: 100%\n"), "no route: 100%25%0A");
    }
}
