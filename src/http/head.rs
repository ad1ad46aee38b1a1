//! Request head parsing: finds the end of the head within the size limit and parses it with
//! httparse into byte ranges, so the connection can keep its buffer and reuse the index.
use super::kind::{self, Kind};
use super::name_is;
use std::ops::Range;

/// Most headers a request head may carry; more is a 431.
pub const MAX_HEADERS: usize = 128;

/// One header as ranges into the head buffer, and what its name means (`http::kind`).
#[derive(Clone, Debug, Default)]
pub struct HeaderRange {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub kind: Kind,
}

impl HeaderRange {
    /// The header at these ranges of `buf`, its name classified.
    #[inline]
    pub fn new(buf: &[u8], name: Range<usize>, value: Range<usize>) -> Self {
        let kind = kind::classify(&buf[name.clone()]);
        HeaderRange { name, value, kind }
    }
}

/// A parsed request head; every range points into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<HeaderRange>,
    /// Length of the head including the blank line.
    pub len: usize,
}

impl RequestHead {
    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.method.clone()]
    }
    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.target.clone()]
    }
    /// The first header value with this (lowercase) name.
    pub fn header<'b>(&self, buf: &'b [u8], lower: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| name_is(&buf[h.name.clone()], lower))
            .map(|h| &buf[h.value.clone()])
    }
    /// The first header value of this kind: a byte compared per header, no name.
    #[inline]
    pub fn header_of<'b>(&self, buf: &'b [u8], kind: Kind) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.kind == kind)
            .map(|h| &buf[h.value.clone()])
    }
}

/// Why a head could not be parsed; each maps to one status in SPEC §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP: bad request line, bad header syntax, bare LF, control bytes.
    Malformed(&'static str),
    /// The request line alone is longer than the limit (414).
    UriTooLong,
    /// The head is larger than the limit, or has too many headers (431).
    TooLarge,
}

/// The outcome of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet; read more.
    Partial,
    /// The head ends at this offset (just past the blank line).
    Complete(usize),
}

/// For a head still arriving: an error when its bytes so far cannot begin an HTTP request (a
/// TLS hello, another protocol), so that a listener can refuse it without waiting for more.
pub fn plausible_request(partial: &[u8]) -> Result<(), HeadError> {
    let mut hs = [httparse::EMPTY_HEADER; 16];
    match httparse::Request::new(&mut hs).parse(partial) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Ok(()),
        Err(_) => Err(HeadError::Malformed("not an HTTP request")),
    }
}

/// Finds the end of the head (CRLF CRLF) in `buf`, enforcing `max` bytes. `from` is where the
/// previous scan stopped, so a head arriving in many reads is scanned once overall.
pub fn scan(buf: &[u8], from: usize, max: usize) -> Result<Scan, HeadError> {
    let start = from.saturating_sub(3);
    let limit = buf.len().min(max);
    if start < limit {
        if let Some(end) = first_line_end(&buf[..limit], start) {
            return end.map(Scan::Complete);
        }
    }
    if buf.len() >= max {
        let line_done = buf[..max].windows(2).any(|w| w == b"\r\n");
        return Err(if line_done {
            HeadError::TooLarge
        } else {
            HeadError::UriTooLong
        });
    }
    Ok(Scan::Partial)
}

/// The first LF at or after `start` that decides the scan: one that ends the head (the offset
/// past it) or a bare one (an error); None when every LF so far ends a plain line.
fn first_line_end(buf: &[u8], start: usize) -> Option<Result<usize, HeadError>> {
    let mut i = start;
    // The first bytes one at a time: a 16-byte look at `i` reads from `i - 3`.
    while i < buf.len().min(3) {
        if let Some(r) = lf_at(buf, i) {
            return Some(r);
        }
        i += 1;
    }
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= 19 {
        // 16 bytes at a time (one memchr call per line cost ~75 instructions a line); the
        // tail as one more look that overlaps what was already scanned, those bytes masked.
        while i + 16 <= buf.len() {
            if let Some(r) = sse2::line_end(buf, i, u32::MAX) {
                return Some(r);
            }
            i += 16;
        }
        let at = buf.len() - 16;
        return (i < buf.len())
            .then(|| sse2::line_end(buf, at, u32::MAX << (i - at)))
            .flatten();
    }
    (i..buf.len()).find_map(|at| lf_at(buf, at))
}

/// What the byte at `at` decides, when it is an LF (see [`first_line_end`]).
fn lf_at(buf: &[u8], at: usize) -> Option<Result<usize, HeadError>> {
    if buf[at] != b'\n' {
        return None;
    }
    if at >= 3 && &buf[at - 3..=at] == b"\r\n\r\n" {
        return Some(Ok(at + 1));
    }
    // A bare LF anywhere in the head is refused: parsers that accept it disagree about where
    // lines end, which is how requests get smuggled.
    if at == 0 || buf[at - 1] != b'\r' {
        return Some(Err(HeadError::Malformed("bare LF in head")));
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::HeadError;
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};

    /// Bit j set where `buf[at + j] == b`, for the 16 bytes from `at`.
    #[inline(always)]
    fn eq16(buf: &[u8], at: usize, b: u8) -> u32 {
        let c = &buf[at..at + 16];
        // SAFETY: `c` holds 16 readable bytes and the load may be unaligned; SSE2 is part of
        // every x86_64 target.
        unsafe {
            let v = _mm_loadu_si128(c.as_ptr().cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))) as u32
        }
    }

    /// [`super::lf_at`] for the 16 bytes from `at` (`at >= 3`), the first deciding LF among
    /// the bits of `keep`.
    #[inline]
    pub(super) fn line_end(buf: &[u8], at: usize, keep: u32) -> Option<Result<usize, HeadError>> {
        let lf = eq16(buf, at, b'\n') & keep;
        if lf == 0 {
            return None;
        }
        let cr_before = eq16(buf, at - 1, b'\r');
        let bare = lf & !cr_before;
        let end = lf & cr_before & eq16(buf, at - 2, b'\n') & eq16(buf, at - 3, b'\r');
        let first = bare | end;
        if first == 0 {
            return None;
        }
        let j = first.trailing_zeros() as usize;
        Some(if end >> j & 1 == 1 {
            Ok(at + j + 1)
        } else {
            Err(HeadError::Malformed("bare LF in head"))
        })
    }
}

/// Parses a complete head (`buf[..len]` as found by [`scan`]) into `out`, reusing its vectors.
pub fn parse(buf: &[u8], len: usize, out: &mut RequestHead) -> Result<(), HeadError> {
    // Uninitialised: zeroing 128 headers (4 KiB) cost more than parsing a typical head.
    let mut raw = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head = &buf[..len];
    match req.parse_with_uninit_headers(head, &mut raw) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(HeadError::Malformed("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"))
        }
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("invalid method")),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid header name"))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HeadError::Malformed("invalid byte in header value"))
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    }
    let base = head.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = req.method.ok_or(HeadError::Malformed("missing method"))?;
    let target = req.path.ok_or(HeadError::Malformed("missing target"))?;
    out.method = range(method.as_bytes());
    out.target = range(target.as_bytes());
    out.minor_version = req.version.ok_or(HeadError::Malformed("missing version"))?;
    out.len = len;
    out.headers.clear();
    for h in req.headers.iter() {
        if h.name.is_empty() {
            return Err(HeadError::Malformed("empty header name"));
        }
        // httparse trims the value; an empty range for an empty value still points inside.
        let value = if h.value.is_empty() {
            0..0
        } else {
            range(h.value)
        };
        out.headers
            .push(HeaderRange::new(buf, range(h.name.as_bytes()), value));
    }
    Ok(())
}

/// The path part of a request target (origin-form or absolute-form), without the query, as
/// sent (see `canonical` for the form it is routed by). Returns None for targets that have no
/// path (authority-form, `*`). A `#` stays in: `canonical` refuses it.
pub fn route_path(target: &[u8]) -> Option<&[u8]> {
    let origin = origin_tail(target)?;
    let end = memchr::memchr(b'?', origin).unwrap_or(origin.len());
    Some(if end == 0 { b"/" } else { &origin[..end] })
}

/// The part of a target that a backend receives: the target itself in origin-form; for an
/// absolute-form `http://host/p?q` target what follows the authority (`/p?q`, or `?q` / empty
/// when the path is empty: the caller then writes the `/`). None for other forms.
pub fn origin_tail(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let starts =
        |p: &str| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let rest = if starts("http://") {
        &target[7..]
    } else if starts("https://") {
        &target[8..]
    } else {
        return None;
    };
    let i = rest
        .iter()
        .position(|b| *b == b'/' || *b == b'?')
        .unwrap_or(rest.len());
    Some(&rest[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(s: &[u8]) -> Result<RequestHead, HeadError> {
        let len = match scan(s, 0, 65536)? {
            Scan::Complete(n) => n,
            Scan::Partial => panic!("partial"),
        };
        let mut h = RequestHead::default();
        parse(s, len, &mut h)?;
        Ok(h)
    }

    #[test]
    fn parses_simple_head() {
        let s = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A:  v \r\n\r\nBODY";
        let h = parse_all(s).unwrap();
        assert_eq!(h.method(s), b"GET");
        assert_eq!(h.target(s), b"/a?b=1");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.header(s, "x-a"), Some(&b"v"[..]));
        assert_eq!(h.len, s.len() - 4);
    }

    /// The scan as it was, one LF at a time: the 16-byte scan must agree with it everywhere.
    fn scan_by_line(buf: &[u8], from: usize, max: usize) -> Result<Scan, HeadError> {
        let start = from.saturating_sub(3);
        let limit = buf.len().min(max);
        if start < limit {
            for off in memchr::memchr_iter(b'\n', &buf[start..limit]) {
                let lf = start + off;
                if lf >= 3 && &buf[lf - 3..=lf] == b"\r\n\r\n" {
                    return Ok(Scan::Complete(lf + 1));
                }
                if lf == 0 || buf[lf - 1] != b'\r' {
                    return Err(HeadError::Malformed("bare LF in head"));
                }
            }
        }
        if buf.len() >= max {
            let line_done = buf[..max].windows(2).any(|w| w == b"\r\n");
            return Err(if line_done {
                HeadError::TooLarge
            } else {
                HeadError::UriTooLong
            });
        }
        Ok(Scan::Partial)
    }

    #[test]
    fn scan_agrees_with_the_line_by_line_scan() {
        // Heads of every length up to 80 over a small alphabet, so that CR, LF and their runs
        // fall on every position of a 16-byte look and across its edges.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let lf_rate = 2 + next() % 12;
            let buf: Vec<u8> = (0..len)
                .map(|_| match next() % (lf_rate * 2) {
                    0 => b'\n',
                    1..=3 => b'\r',
                    4 if lf_rate > 6 => b'\n',
                    _ => b'a',
                })
                .collect();
            // Mostly well-formed lines, with the odd bare LF or lone CR.
            let buf = if next() % 2 == 0 {
                let s = String::from_utf8(buf).unwrap().replace('\n', "\r\n");
                s.replace("\r\r", "\r").into_bytes()
            } else {
                buf
            };
            let from = (next() % (buf.len() as u64 + 1)) as usize;
            let max = if next() % 4 == 0 {
                (next() % 90) as usize + 1
            } else {
                1000
            };
            assert_eq!(
                scan(&buf, from, max),
                scan_by_line(&buf, from, max),
                "{:?} from {from} max {max}",
                String::from_utf8_lossy(&buf)
            );
        }
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..40 {
            head.extend_from_slice(format!("X-{n}: {}\r\n", "v".repeat(n)).as_bytes());
            let mut done = head.clone();
            done.extend_from_slice(b"\r\nbody");
            assert_eq!(scan(&done, 0, 65536), Ok(Scan::Complete(done.len() - 4)));
            assert_eq!(scan(&head, 0, 65536), Ok(Scan::Partial));
        }
    }

    #[test]
    fn scan_is_incremental() {
        let s = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..s.len() {
            assert_eq!(scan(&s[..cut], 0, 1000), Ok(Scan::Partial), "cut {cut}");
            assert_eq!(
                scan(s, cut, 1000),
                Ok(Scan::Complete(s.len())),
                "from {cut}"
            );
        }
    }

    #[test]
    fn rejects_bare_lf_and_folding_and_space_before_colon() {
        assert!(matches!(
            scan(b"GET / HTTP/1.1\nHost: x\r\n\r\n", 0, 100),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            scan(b"GET / HTTP/1.1\r\nHost: x\n\n", 0, 100),
            Err(HeadError::Malformed(_))
        ));
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n").is_err());
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n").is_err());
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n").is_err());
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n").is_err());
        assert!(parse_all(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").is_err());
    }

    #[test]
    fn limits_give_414_or_431() {
        let long_line = [b"GET /".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(scan(&long_line, 0, 100), Err(HeadError::UriTooLong));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend_from_slice(&[b'a'; 200]);
        assert_eq!(scan(&big, 0, 100), Err(HeadError::TooLarge));
    }

    #[test]
    fn route_path_strips_query_and_handles_absolute_form() {
        assert_eq!(route_path(b"/a/b?x=1"), Some(&b"/a/b"[..]));
        assert_eq!(route_path(b"http://h:1/a?x"), Some(&b"/a"[..]));
        assert_eq!(route_path(b"http://h:1"), Some(&b"/"[..]));
        assert_eq!(route_path(b"http://h:1?q"), Some(&b"/"[..]));
        assert_eq!(route_path(b"h:443"), None);
        assert_eq!(route_path(b"*"), None);
    }

    #[test]
    fn plausible_request_refuses_other_protocols_early() {
        assert!(plausible_request(b"GET /hea").is_ok());
        assert!(plausible_request(b"POST /x HTTP/1.1\r\nHost: a\r\n").is_ok());
        assert!(plausible_request(b"\x16\x03\x01\x02\x00").is_err());
        assert!(plausible_request(b"SSH-2.0-OpenSSH\r\n").is_err());
    }
}
