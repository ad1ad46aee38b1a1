//! The one token rule (RFC 9110 §5.6.2 `tchar`), for every place that checks a method, a
//! header name or another token: config methods, registration methods, shard key headers,
//! header edits, `via_name`, chunk extensions and trailers.

/// A `tchar`: a visible ASCII character other than a delimiter.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: HTTP/2 request heads check every name byte with it, where a scan
/// of the delimiter list per byte cost several times the lookup.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// One or more `tchar`s.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A method as a route names it: a token, upper-cased (`get` routes `GET`). None when `s`
/// (trimmed) is not a token.
pub fn method(s: &str) -> Option<String> {
    let up = s.trim().to_ascii_uppercase();
    is_token(up.as_bytes()).then_some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_rfc_list() {
        for b in 0..=255u8 {
            let listed = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), listed, "{b:#04x}");
        }
    }

    #[test]
    fn tokens_and_methods() {
        assert!(is_token(b"GET") && is_token(b"x-api_key.1~"));
        for bad in [&b""[..], b"G T", b"a:b", b"(x)", b"\x7f", b"caf\xc3\xa9"] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert_eq!(method(" get ").as_deref(), Some("GET"));
        assert_eq!(method("M-SEARCH").as_deref(), Some("M-SEARCH"));
        assert_eq!(method("GET /"), None);
        assert_eq!(method(""), None);
    }
}
