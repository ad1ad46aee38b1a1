//! The request's host (SPEC §3, §4): `Host` and an absolute-form target's authority must be
//! `host[:port]` as RFC 3986 §3.2.2 spells it, and the authority, when there is one, is the
//! host (RFC 9112 §3.2.2). Pure.

/// RFC 3986 sub-delims: allowed in a reg-name.
const fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// `reg-name / IPv4address`: unreserved, pct-encoded and sub-delims (an IPv4 address is a
/// reg-name as far as syntax goes). May be empty only where the caller allows it.
fn valid_reg_name(h: &[u8]) -> bool {
    // One table lookup per byte: the checks below cost a dozen comparisons for each byte of
    // every request's Host.
    static PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = super::canonical::is_unreserved(b as u8) || is_sub_delim(b as u8);
            b += 1;
        }
        t
    };
    if h.iter().all(|&b| PLAIN[usize::from(b)]) {
        return true;
    }
    let mut i = 0;
    while i < h.len() {
        let b = h[i];
        if b == b'%' {
            if i + 2 >= h.len() || !(is_hex(h[i + 1]) && is_hex(h[i + 2])) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(super::canonical::is_unreserved(b) || is_sub_delim(b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// Splits `host[:port]`; the host is an IP-literal (`[v6]`) or a reg-name, the port digits.
/// None when it is not an authority without userinfo.
pub fn split(authority: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (host, rest) = if authority.first() == Some(&b'[') {
        let end = memchr::memchr(b']', authority)?;
        let inner = std::str::from_utf8(&authority[1..end]).ok()?;
        // IPv6 only: IPvFuture (`[v1.x]`) is not something a real client sends.
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        (&authority[..=end], &authority[end + 1..])
    } else {
        let colon = memchr::memchr(b':', authority).unwrap_or(authority.len());
        let host = &authority[..colon];
        if host.is_empty() || !valid_reg_name(host) {
            return None;
        }
        (host, &authority[colon..])
    };
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => {
            if digits.len() > 5
                || !digits.iter().all(u8::is_ascii_digit)
                || digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                    > 65535
            {
                return None;
            }
            Some(digits)
        }
        _ => return None,
    };
    Some((host, port))
}

/// True if `v` is a usable `Host` value / authority: `host[:port]`, nothing else.
pub fn valid(v: &[u8]) -> bool {
    split(v).is_some()
}

/// The authority of an absolute-form target (`http://a:1/p` gives `a:1`); None for other
/// forms. Err for an absolute-form target whose authority is not `host[:port]` (userinfo,
/// empty, bad bytes).
pub fn absolute_authority(target: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    if target.first() == Some(&b'/') {
        return Ok(None);
    }
    let Some(tail) = super::head::origin_tail(target) else {
        return Ok(None);
    };
    let scheme_len = if target[4] == b':' { 7 } else { 8 };
    let auth = &target[scheme_len..target.len() - tail.len()];
    if memchr::memchr(b'@', auth).is_some() {
        return Err("userinfo in the request target");
    }
    if !valid(auth) {
        return Err("invalid authority in the request target");
    }
    Ok(Some(auth))
}

/// Checks the request's host: the `Host` header must be `host[:port]` (an empty one only
/// from an HTTP/1.0 client, which need not send one), an absolute-form authority too; a
/// CONNECT target must be `host:port`. Returns the host the request is for: the authority
/// when the target has one, else `Host`.
pub fn request_host<'b>(
    target: &'b [u8],
    host_header: Option<&'b [u8]>,
    minor_version: u8,
    is_connect: bool,
) -> Result<Option<&'b [u8]>, &'static str> {
    if let Some(h) = host_header {
        if h.is_empty() {
            if minor_version == 1 {
                return Err("empty Host header");
            }
        } else if !valid(h) {
            return Err("invalid Host header (must be host[:port])");
        }
    }
    if is_connect {
        return match split(target) {
            Some((_, Some(p))) if !p.is_empty() => Ok(Some(target)),
            _ => Err("CONNECT needs an authority-form target (host:port)"),
        };
    }
    if let Some(auth) = absolute_authority(target)? {
        return Ok(Some(auth));
    }
    Ok(host_header.filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts() {
        for h in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a-b_c~d",
            "x%41y",
            "h:",
        ] {
            assert!(valid(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn invalid_hosts() {
        for h in [
            "", "a/b", "a@b", "u@a:1", "a b", "a:b", "a:1:2", ":80", "[::1", "[zz]", "[::1]x",
            "a:99999", "a:123456", "a\\b", "a?b", "a#b", "a%4", "a%g1", "a\"b", "[v1.x]",
        ] {
            assert!(!valid(h.as_bytes()), "{h:?}");
        }
    }

    #[test]
    fn the_authority_wins_and_bad_hosts_are_refused() {
        let rh = |t: &str, h: Option<&str>, minor, connect| {
            request_host(t.as_bytes(), h.map(str::as_bytes), minor, connect)
                .map(|o| o.map(|v| String::from_utf8_lossy(v).into_owned()))
        };
        assert_eq!(
            rh("http://evil.example/", Some("good.example"), 1, false),
            Ok(Some("evil.example".into()))
        );
        assert_eq!(
            rh("/p", Some("good.example"), 1, false),
            Ok(Some("good.example".into()))
        );
        assert!(rh("/p", Some("a/b"), 1, false).is_err());
        assert!(rh("/p", Some("a@b"), 1, false).is_err());
        assert!(rh("/p", Some("a b"), 1, false).is_err());
        assert!(rh("/p", Some(""), 1, false).is_err());
        assert_eq!(rh("/p", Some(""), 0, false), Ok(None));
        assert_eq!(rh("/p", None, 0, false), Ok(None));
        assert!(rh("http://u@evil/", Some("good"), 1, false).is_err());
        assert!(rh("http:///x", Some("good"), 1, false).is_err());
        assert_eq!(
            rh("db:5432", Some("db:5432"), 1, true),
            Ok(Some("db:5432".into()))
        );
        assert!(rh("/pub", Some("h"), 1, true).is_err());
        assert!(rh("db", Some("h"), 1, true).is_err());
        assert!(rh("http://db:1/", Some("h"), 1, true).is_err());
    }
}
