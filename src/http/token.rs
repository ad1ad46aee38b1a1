//! The one token rule (RFC 9110 §5.6.2 `tchar`), for every place that checks a method, a
//! header name or another token: config methods, registration methods, shard key headers,
//! header edits, `via_name`, chunk extensions and trailers.

/// A `tchar`: a visible ASCII character other than a delimiter.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

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
