//! The protocol switchyard speaks to a backend: `protocol = "http1" | "h2c" | "h2"` on
//! `[[backends]]`, `[[shards]]` and in a registration (SPEC §10). Pure.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (over TLS when `tls = true`), with the idle connection pool.
    #[default]
    Http1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN `h2`.
    H2,
}

/// What the value may be, for error messages.
pub const EXPECTED: &str = "expected \"http1\", \"h2c\" or \"h2\"";

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim() {
            "http1" => Ok(Protocol::Http1),
            "h2c" => Ok(Protocol::H2c),
            "h2" => Ok(Protocol::H2),
            other => Err(format!("{other:?}: {EXPECTED}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// HTTP/2 in either form: streams multiplexed over few connections.
    pub fn is_h2(self) -> bool {
        self != Protocol::Http1
    }

    pub fn is_http1(&self) -> bool {
        *self == Protocol::Http1
    }
}

/// How `protocol` and `tls` combine: `h2` is TLS whatever `tls` says unless it says false,
/// which contradicts it; `h2c` is cleartext, so `tls = true` contradicts it. Returns whether
/// connections are TLS.
pub fn tls_with(protocol: Protocol, tls: Option<bool>) -> Result<bool, &'static str> {
    match (protocol, tls) {
        (Protocol::H2, Some(false)) => {
            Err("protocol = \"h2\" is HTTP/2 over TLS; tls = false contradicts it (use \"h2c\" for cleartext HTTP/2)")
        }
        (Protocol::H2, _) => Ok(true),
        (Protocol::H2c, Some(true)) => {
            Err("protocol = \"h2c\" is cleartext HTTP/2; use protocol = \"h2\" for HTTP/2 over TLS")
        }
        (_, t) => Ok(t.unwrap_or(false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_names() {
        for p in [Protocol::Http1, Protocol::H2c, Protocol::H2] {
            assert_eq!(Protocol::parse(p.as_str()), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert!(Protocol::parse("http2").unwrap_err().contains("expected"));
        assert!(!Protocol::Http1.is_h2() && Protocol::H2c.is_h2() && Protocol::H2.is_h2());
    }

    #[test]
    fn tls_combinations() {
        assert_eq!(tls_with(Protocol::Http1, None), Ok(false));
        assert_eq!(tls_with(Protocol::Http1, Some(true)), Ok(true));
        assert_eq!(tls_with(Protocol::H2, None), Ok(true));
        assert_eq!(tls_with(Protocol::H2, Some(true)), Ok(true));
        assert!(tls_with(Protocol::H2, Some(false)).is_err());
        assert_eq!(tls_with(Protocol::H2c, None), Ok(false));
        assert!(tls_with(Protocol::H2c, Some(true)).is_err());
    }
}
