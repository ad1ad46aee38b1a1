//! `host:port` addresses as SPEC §2 writes them: an IP (v6 in brackets) or a DNS name, and a
//! port. Names stay names; they are resolved when connecting, never once at start.
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    /// The IP if the host is a literal address (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn valid_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Parses `host:port` (port 1..=65535, or 0 when `allow_zero` for listeners in tests).
pub fn parse(s: &str, allow_zero: bool) -> Result<Address, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("{s:?}: missing `]` after an IPv6 address"))?;
        let host = &rest[..end];
        let port = rest[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| format!("{s:?}: expected host:port"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
        }
        (host, port)
    } else {
        let i = s
            .rfind(':')
            .ok_or_else(|| format!("{s:?}: expected host:port"))?;
        let host = &s[..i];
        if host.contains(':') {
            return Err(format!("{s:?}: write IPv6 addresses as [addr]:port"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_dns_name(host) {
            return Err(format!(
                "{s:?}: {host:?} is neither an IP address nor a DNS name"
            ));
        }
        (host, &s[i + 1..])
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    if port == 0 && !allow_zero {
        return Err(format!("{s:?}: port 0 is not a usable port"));
    }
    Ok(Address {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse("127.0.0.1:80", false).unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(parse("[::1]:80", false).unwrap().to_string(), "[::1]:80");
        let a = parse("gateway-3.gateway-internal:3000", false).unwrap();
        assert_eq!(a.host, "gateway-3.gateway-internal");
        assert!(a.ip().is_none());
        assert!(parse("http-api-1:8001", false).is_ok());
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in [
            "nohost",
            "h:",
            "h:70000",
            ":80",
            "a b:80",
            "::1:80",
            "[::1]80",
            "h:0",
            "http://h:80",
        ] {
            assert!(parse(bad, false).is_err(), "{bad}");
        }
        assert!(parse("127.0.0.1:0", true).is_ok());
    }
}
