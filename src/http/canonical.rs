//! Canonical request paths (SPEC §3): the one spelling of a path that routing, the permission
//! check and the backend all see, so that `/%61dmin`, `//admin` and `/admin` cannot be routed
//! one way and served another. Pure; a path that is already canonical is not copied.
//!
//! The rule: percent-encoded unreserved characters (RFC 3986 §2.3) are decoded, every other
//! percent-encoding gets uppercase hex, runs of `/` become one `/` (a trailing `/` is kept).
//! Refused (400): `%2F` and `%5C` (a backend that decodes them sees other segments), `\` (some
//! servers take it for `/`), `#` (a fragment is never part of a request target), NUL, bad
//! percent-encodings, and `.` / `..` segments, also when encoded (`%2e%2E`).

/// Why a path has no canonical form; every one of them is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    EncodedSlash,
    EncodedBackslash,
    Backslash,
    Fragment,
    Nul,
    BadEscape,
    DotSegment,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSlash => "encoded slash (%2F) in path",
            PathError::EncodedBackslash => "encoded backslash (%5C) in path",
            PathError::Backslash => "backslash in path",
            PathError::Fragment => "fragment (#) in request target",
            PathError::Nul => "NUL in path",
            PathError::BadEscape => "invalid percent-encoding in path",
            PathError::DotSegment => "dot segments (. or ..) are not allowed in paths",
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: the characters whose encoded and plain forms are the same URI.
#[inline]
pub const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The output, written lazily: while nothing has changed it is `path[..at]`, and only the
/// first change copies that prefix into `out`.
struct Writer<'a> {
    path: &'a [u8],
    out: &'a mut Vec<u8>,
    copying: bool,
    last: u8,
}

impl Writer<'_> {
    #[inline]
    fn diverge(&mut self, at: usize) {
        if !self.copying {
            self.out.clear();
            self.out.extend_from_slice(&self.path[..at]);
            self.copying = true;
        }
    }

    #[inline]
    fn keep(&mut self, bytes: &[u8]) {
        if self.copying {
            self.out.extend_from_slice(bytes);
        }
        self.last = bytes[bytes.len() - 1];
    }
}

/// Canonicalizes `path` (the path of a request target, starting with `/`, without query).
/// Ok(false): `path` is canonical as it is and `out` was not touched; Ok(true): the canonical
/// path is in `out` (replaced).
pub fn canonicalize(path: &[u8], out: &mut Vec<u8>) -> Result<bool, PathError> {
    let mut w = Writer {
        path,
        out,
        copying: false,
        last: 0,
    };
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex_val),
                    path.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => {
                        w.diverge(i);
                        w.keep(&[v]);
                    }
                    v => {
                        let canon = [b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]];
                        if !w.copying && path[i..i + 3] != canon {
                            w.diverge(i);
                        }
                        w.keep(&canon);
                    }
                }
                i += 3;
            }
            b'/' if w.last == b'/' => {
                w.diverge(i);
                i += 1;
            }
            b'\\' => return Err(PathError::Backslash),
            b'#' => return Err(PathError::Fragment),
            0 => return Err(PathError::Nul),
            _ => {
                w.keep(&path[i..=i]);
                i += 1;
            }
        }
    }
    let copied = w.copying;
    let result: &[u8] = if copied { out } else { path };
    if has_dot_segment(result) {
        return Err(PathError::DotSegment);
    }
    Ok(copied)
}

/// True if a canonical path has a `.` or `..` segment (encoded dots are decoded by then).
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|b| *b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
}

/// The canonical path for text that is not on the hot path (`switchyard route`, pattern
/// checks): owned, or the reason there is none.
pub fn canonical(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::new();
    if canonicalize(path, &mut out)? {
        Ok(out)
    } else {
        Ok(path.to_vec())
    }
}

/// Checks a whole request target for what no part of it may hold: a `#` (RFC 9112 §3.2: a
/// target has no fragment; a backend that cuts there serves another path than was routed).
pub fn check_target(target: &[u8]) -> Result<(), PathError> {
    if memchr::memchr(b'#', target).is_some() {
        return Err(PathError::Fragment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> Result<String, PathError> {
        canonical(p.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn canonical_paths_are_not_copied() {
        let mut out = b"untouched".to_vec();
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/%C3%A9",
            "/.well-known/x",
            "/a/.../b",
            "/a%20b",
        ] {
            assert_eq!(canonicalize(p.as_bytes(), &mut out), Ok(false), "{p}");
        }
        assert_eq!(out, b"untouched");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_uppercased() {
        assert_eq!(c("/%61dmin/x").unwrap(), "/admin/x");
        assert_eq!(c("/%41%7e%2D%5f%2e%30").unwrap(), "/A~-_.0");
        assert_eq!(c("/a%2fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(c("/a%c3%a9").unwrap(), "/a%C3%A9");
        assert_eq!(c("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(c("/%25").unwrap(), "/%25");
        assert_eq!(c("/%2561").unwrap(), "/%2561", "decoded once, not twice");
    }

    #[test]
    fn slashes_are_merged_and_the_trailing_one_kept() {
        assert_eq!(c("//admin/x").unwrap(), "/admin/x");
        assert_eq!(c("/a///b//").unwrap(), "/a/b/");
        assert_eq!(c("//").unwrap(), "/");
        assert_eq!(c("/a/").unwrap(), "/a/");
    }

    #[test]
    fn refused_paths() {
        for (p, e) in [
            ("/admin%2fx", PathError::EncodedSlash),
            ("/admin%2Fx", PathError::EncodedSlash),
            ("/admin%5cx", PathError::EncodedBackslash),
            ("/admin\\x", PathError::Backslash),
            ("/pub#/../admin/x", PathError::Fragment),
            ("/a\0b", PathError::Nul),
            ("/a%00b", PathError::Nul),
            ("/%G1", PathError::BadEscape),
            ("/%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/%2e%2E/admin", PathError::DotSegment),
            ("/a/.%2e", PathError::DotSegment),
            ("/a/%2E", PathError::DotSegment),
            ("/a//../b", PathError::DotSegment),
        ] {
            assert_eq!(c(p), Err(e), "{p}");
        }
        assert_eq!(check_target(b"/pub?x#y"), Err(PathError::Fragment));
        assert_eq!(check_target(b"/pub?x=%23"), Ok(()));
    }

    use crate::http::test_rng::Rng;

    fn gen_path(r: &mut Rng) -> Vec<u8> {
        const PIECES: [&[u8]; 22] = [
            b"/", b"//", b"a", b"Z", b"%61", b"%2e", b"%2E", b".", b"..", b"%7e", b"%7E", b"%c3",
            b"%20", b"%25", b"%2f", b"%5c", b"%", b"%4", b"%g1", b"-", b"_~", b"\\",
        ];
        let mut p = b"/".to_vec();
        for _ in 0..r.next() % 10 {
            p.extend_from_slice(PIECES[(r.next() % PIECES.len() as u64) as usize]);
        }
        p
    }

    #[test]
    fn property_idempotent_and_clean() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for _ in 0..50_000 {
            let p = gen_path(&mut r);
            let Ok(once) = canonical(&p) else { continue };
            ok += 1;
            let shown = String::from_utf8_lossy(&p);
            assert_eq!(
                canonical(&once).as_ref(),
                Ok(&once),
                "not idempotent: {shown}"
            );
            let mut scratch = Vec::new();
            assert_eq!(canonicalize(&once, &mut scratch), Ok(false), "{shown}");
            assert!(!once.windows(2).any(|w| w == b"//"), "{shown}");
            assert!(!has_dot_segment(&once), "{shown}");
            assert!(once.starts_with(b"/"), "{shown}");
            for (i, b) in once.iter().enumerate() {
                assert!(*b != b'\\' && *b != b'#' && *b != 0, "{shown}");
                if *b == b'%' {
                    let hi = hex_val(once[i + 1]).unwrap();
                    let lo = hex_val(once[i + 2]).unwrap();
                    assert!(!is_unreserved(hi << 4 | lo), "{shown}");
                    assert!(!once[i + 1].is_ascii_lowercase() && !once[i + 2].is_ascii_lowercase());
                }
            }
            // Same URI (RFC 3986 §6.2.2): decoding both fully gives the same bytes up to
            // merged slashes.
            let full = |v: &[u8]| -> Vec<u8> {
                let mut o = Vec::new();
                let mut i = 0;
                while i < v.len() {
                    if v[i] == b'%' {
                        o.push(hex_val(v[i + 1]).unwrap() << 4 | hex_val(v[i + 2]).unwrap());
                        i += 3;
                    } else {
                        if !(v[i] == b'/' && o.last() == Some(&b'/')) {
                            o.push(v[i]);
                        }
                        i += 1;
                    }
                }
                o
            };
            assert_eq!(full(&p), full(&once), "{shown}");
        }
        assert!(ok > 5_000, "generator too rarely makes valid paths ({ok})");
    }
}
