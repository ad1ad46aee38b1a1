//! Host names for routing (SPEC §3 Hosts): the host a request is for (lowercased, without port
//! or trailing dot), the `hosts = [...]` entries rules carry (`api.example.com`,
//! `*.example.com`), and which entries can match the same request. Pure; no allocation on the
//! request path (the request's host is lowercased into a stack buffer).

/// Longest host name a request may route by; a longer one matches no host rule.
pub const MAX_HOST: usize = 255;

/// The request's host, lowercased, in a buffer of its own.
pub struct HostBuf {
    bytes: [u8; MAX_HOST],
    len: usize,
}

impl Default for HostBuf {
    fn default() -> Self {
        HostBuf {
            bytes: [0; MAX_HOST],
            len: 0,
        }
    }
}

impl HostBuf {
    /// Normalizes an authority or `Host` value into the buffer: userinfo is not expected here
    /// (the caller strips it from absolute-form targets), the port goes, one trailing dot
    /// goes, ASCII letters are lowercased. None for an empty, over-long or non-ASCII host,
    /// which then matches only rules without `hosts`.
    pub fn set(&mut self, raw: &[u8]) -> Option<&[u8]> {
        self.len = 0;
        let raw = crate::http::trim_ows(raw);
        let host = if raw.first() == Some(&b'[') {
            // An IPv6 literal keeps its brackets; the port follows the `]`.
            let end = raw.iter().position(|b| *b == b']')?;
            &raw[..=end]
        } else {
            match raw.iter().position(|b| *b == b':') {
                Some(i) => &raw[..i],
                None => raw,
            }
        };
        let host = host.strip_suffix(b".").unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOST || !host.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        for (d, s) in self.bytes.iter_mut().zip(host) {
            *d = s.to_ascii_lowercase();
        }
        self.len = host.len();
        Some(&self.bytes[..self.len])
    }
}

/// The host a request is for (SPEC §3): the authority of an absolute-form (or CONNECT
/// authority-form) target when there is one, else the `Host` header; normalized into `buf`.
pub fn of_request<'b>(
    target: &[u8],
    host_header: Option<&[u8]>,
    buf: &'b mut HostBuf,
) -> Option<&'b [u8]> {
    let authority = crate::http::rewrite::target_authority(target);
    let raw = if authority.is_empty() {
        host_header?
    } else {
        authority
    };
    buf.set(raw)
}

/// The wildcard suffixes that could match `host`, longest first: `a.b.example.com` gives
/// `b.example.com`, `example.com`, `com` (a `*.example.com` entry is stored as
/// `example.com`). The label the `*` stands for is never empty.
pub fn wildcard_suffixes(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    host.iter()
        .enumerate()
        .filter(|(i, b)| **b == b'.' && *i > 0)
        .map(move |(i, _)| &host[i + 1..])
        .filter(|s| !s.is_empty())
}

/// One entry of a rule's `hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSpec<'a> {
    /// `api.example.com`: that host only.
    Exact(&'a str),
    /// `*.example.com`, held as `example.com`: one or more labels before it.
    Wildcard(&'a str),
}

impl<'a> HostSpec<'a> {
    /// Reads an entry already normalized by [`parse`].
    pub fn of(normalized: &'a str) -> HostSpec<'a> {
        match normalized.strip_prefix("*.") {
            Some(suffix) => HostSpec::Wildcard(suffix),
            None => HostSpec::Exact(normalized),
        }
    }

    /// Whether a (normalized) request host is one this entry is for.
    pub fn matches(self, host: &str) -> bool {
        match self {
            HostSpec::Exact(h) => h == host,
            HostSpec::Wildcard(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s)
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
        }
    }
}

/// Checks and normalizes a `hosts` entry: lowercase, no trailing dot. Accepts DNS names
/// (letters, digits, `-`, `_`), IPv4 literals, bracketed IPv6 literals, and `*.` before a
/// name. A port, a bare `*`, or a `*` anywhere else is refused.
pub fn parse(entry: &str) -> Result<String, String> {
    let s = entry.trim().to_ascii_lowercase();
    let s = s.strip_suffix('.').unwrap_or(&s).to_string();
    if s.is_empty() {
        return Err("a host may not be empty".into());
    }
    if s == "*" {
        return Err("\"*\" matches every host: leave hosts out instead".into());
    }
    if s.starts_with('[') {
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| format!("{entry:?}: an IPv6 literal is written [addr], without port"))?;
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(s),
            Err(_) => Err(format!("{entry:?} is not an IPv6 address")),
        };
    }
    if s.contains(':') {
        return Err(format!(
            "{entry:?}: hosts match without the port (write the name only)"
        ));
    }
    let name = s.strip_prefix("*.").unwrap_or(&s);
    if name.len() > 253 {
        return Err(format!("{entry:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{entry:?} has an empty or over-long label"));
        }
        if label.contains('*') {
            return Err(format!(
                "{entry:?}: `*` may only stand for the first labels, as in *.example.com"
            ));
        }
        if label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{entry:?} is not a host name (letters, digits, - between them)"
            ));
        }
    }
    Ok(s)
}

/// Whether two rules' `hosts` share an entry, the test for duplicates (SPEC §3): the same
/// path and methods with an exact host in common. Two rules without hosts also collide.
pub fn share_entry(a: &[String], b: &[String]) -> bool {
    (a.is_empty() && b.is_empty()) || a.iter().any(|h| b.contains(h))
}

/// Whether some request host could match an entry of each list (empty = every host).
pub fn can_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| {
        b.iter().any(|y| match (HostSpec::of(x), HostSpec::of(y)) {
            (HostSpec::Exact(p), HostSpec::Exact(q)) => p == q,
            (HostSpec::Exact(h), w @ HostSpec::Wildcard(_))
            | (w @ HostSpec::Wildcard(_), HostSpec::Exact(h)) => w.matches(h),
            // `*.a.example.com` and `*.example.com` both match `x.a.example.com`.
            (HostSpec::Wildcard(p), HostSpec::Wildcard(q)) => {
                let (long, short) = if p.len() >= q.len() { (p, q) } else { (q, p) };
                HostSpec::Exact(long) == HostSpec::Exact(short)
                    || HostSpec::Wildcard(short).matches(long)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Option<String> {
        let mut b = HostBuf::default();
        b.set(raw.as_bytes())
            .map(|h| String::from_utf8(h.to_vec()).unwrap())
    }

    #[test]
    fn request_hosts_are_normalized() {
        assert_eq!(req("API.Example.COM").as_deref(), Some("api.example.com"));
        assert_eq!(
            req("api.example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(req("api.example.com.").as_deref(), Some("api.example.com"));
        assert_eq!(
            req("api.example.com.:80").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(req("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(req(" h ").as_deref(), Some("h"));
        assert_eq!(req(""), None);
        assert_eq!(req(":80"), None);
        assert_eq!(req("[::1"), None);
        assert_eq!(req(&"a".repeat(300)), None);
        assert_eq!(req("caf\u{e9}.example"), None);
    }

    #[test]
    fn absolute_form_authority_wins_over_host() {
        let mut b = HostBuf::default();
        let h = of_request(b"http://A.example:81/x", Some(b"b.example"), &mut b);
        assert_eq!(h, Some(&b"a.example"[..]));
        let h = of_request(b"http://u:p@a.example/x", Some(b"b.example"), &mut b);
        assert_eq!(h, Some(&b"a.example"[..]));
        let h = of_request(b"/x", Some(b"B.example:8080"), &mut b);
        assert_eq!(h, Some(&b"b.example"[..]));
        assert_eq!(of_request(b"/x", None, &mut b), None);
        assert_eq!(of_request(b"*", None, &mut b), None);
    }

    #[test]
    fn suffixes_longest_first() {
        let s: Vec<&[u8]> = wildcard_suffixes(b"a.b.example.com").collect();
        assert_eq!(s, vec![&b"b.example.com"[..], b"example.com", b"com"]);
        assert_eq!(wildcard_suffixes(b"example").count(), 0);
        assert_eq!(
            wildcard_suffixes(b".example.com").collect::<Vec<_>>(),
            vec![&b"com"[..]]
        );
        assert_eq!(wildcard_suffixes(b"a.").count(), 0);
    }

    #[test]
    fn entries() {
        assert_eq!(parse("API.example.com.").unwrap(), "api.example.com");
        assert_eq!(parse("*.Example.com").unwrap(), "*.example.com");
        assert_eq!(parse("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(parse("[::1]").unwrap(), "[::1]");
        for bad in [
            "", "*", "a.*.com", "*a.com", "a:80", "[::1]:80", "-a.com", "a..com", "a b", "[zz]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcard_matching() {
        let w = HostSpec::of("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(!w.matches(".example.com"));
        assert!(HostSpec::of("example.com").matches("example.com"));
    }

    #[test]
    fn overlaps_and_duplicates() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(share_entry(&v(&[]), &v(&[])));
        assert!(!share_entry(&v(&["a.com"]), &v(&[])));
        assert!(share_entry(&v(&["a.com", "b.com"]), &v(&["b.com"])));
        assert!(!share_entry(&v(&["a.com"]), &v(&["*.a.com"])));
        assert!(can_overlap(&v(&["a.com"]), &v(&[])));
        assert!(can_overlap(&v(&["x.a.com"]), &v(&["*.a.com"])));
        assert!(!can_overlap(&v(&["a.com"]), &v(&["*.a.com"])));
        assert!(can_overlap(&v(&["*.b.a.com"]), &v(&["*.a.com"])));
        assert!(!can_overlap(&v(&["*.b.com"]), &v(&["*.a.com"])));
        assert!(!can_overlap(&v(&["a.com"]), &v(&["b.com"])));
    }
}
