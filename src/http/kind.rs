//! What a header's name means to the proxy, decided once when its head is parsed: framing,
//! the connection options, the hop-by-hop rules and both rewrites then compare a byte instead
//! of the name, in each of their passes over the headers. Pure.
use super::name_is;

/// The names the proxy acts on (case-insensitive, spelled exactly), and one class for the
/// other spellings of the names the gateway sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A name the proxy passes through as it is.
    #[default]
    Other,
    Host,
    Connection,
    ContentLength,
    TransferEncoding,
    Upgrade,
    Expect,
    XForwardedFor,
    XRequestId,
    Via,
    IdempotencyKey,
    /// The other hop-by-hop names (RFC 9110 §7.6.1): TE, Trailer, Keep-Alive,
    /// Proxy-Connection, Proxy-Authenticate.
    HopByHop,
    /// A name the request rewrite sets itself (SPEC §4) under any spelling (case, `_` for
    /// `-`), other than those above: X-Shard, X-Api-Key and the like, `X_Request_Id`.
    SetByGateway,
}

impl Kind {
    /// The header names one connection only and never crosses the proxy.
    #[inline]
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Kind::HopByHop | Kind::Connection | Kind::TransferEncoding | Kind::Upgrade
        )
    }

    /// The request rewrite drops a client's copy (it sets its own, or none).
    #[inline]
    pub fn is_set_by_gateway(self) -> bool {
        matches!(
            self,
            Kind::SetByGateway
                | Kind::ContentLength
                | Kind::TransferEncoding
                | Kind::XForwardedFor
                | Kind::XRequestId
        )
    }
}

/// The kind of a header name.
pub fn classify(name: &[u8]) -> Kind {
    let is = |lower| name_is(name, lower);
    // By length first: most names (Date, Server, Content-Type, Accept) have none of these
    // lengths, and this runs for every header of every head.
    let exact = match name.len() {
        2 if is("te") => Kind::HopByHop,
        3 if is("via") => Kind::Via,
        4 if is("host") => Kind::Host,
        6 if is("expect") => Kind::Expect,
        7 if is("upgrade") => Kind::Upgrade,
        7 if is("trailer") => Kind::HopByHop,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        12 if is("x-request-id") => Kind::XRequestId,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        15 if is("idempotency-key") => Kind::IdempotencyKey,
        16 if is("proxy-connection") => Kind::HopByHop,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        18 if is("proxy-authenticate") => Kind::HopByHop,
        7 | 9 | 12 | 14..=17 => Kind::Other,
        _ => return Kind::Other,
    };
    if exact != Kind::Other || !set_by_gateway(name) {
        return exact;
    }
    Kind::SetByGateway
}

/// ASCII case-insensitive comparison that also takes `_` for `-`: how CGI, WSGI, PHP and
/// Rack backends see a header name (`X_Api_Key_Name` is their `HTTP_X_API_KEY_NAME`).
#[inline]
fn name_is_spelling(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower.as_bytes()).all(|(a, b)| {
            let a = a.to_ascii_lowercase();
            a == *b || (a == b'_' && *b == b'-')
        })
}

/// Headers the request rewrite sets itself (SPEC §4), under every spelling, so that a client's
/// copy cannot be spoofed past it.
fn set_by_gateway(name: &[u8]) -> bool {
    let is = |lower| name_is_spelling(name, lower);
    match name.len() {
        7 => is("x-shard"),
        9 => is("x-api-key"),
        12 => is("x-request-id"),
        14 => is("content-length") || is("x-api-key-name"),
        15 => is("x-forwarded-for") || is("x-retry-attempt"),
        16 => is("x-forwarded-host"),
        17 => is("x-forwarded-proto") || is("transfer-encoding"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP_BY_HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ];

    const SET_BY_GATEWAY: [&str; 10] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "x-api-key",
        "x-api-key-name",
        "x-shard",
        "x-retry-attempt",
        "content-length",
        "transfer-encoding",
    ];

    /// Every way the names above could be spelled that matters here: as listed, upper case,
    /// mixed, `_` for `-`, and near misses of the same length.
    fn spellings(n: &str) -> Vec<String> {
        let mut v = vec![
            n.to_string(),
            n.to_ascii_uppercase(),
            n.replace('-', "_"),
            n.replace('-', "_").to_ascii_uppercase(),
        ];
        let mut miss = n.as_bytes().to_vec();
        miss[0] = if miss[0] == b'x' { b'y' } else { b'x' };
        v.push(String::from_utf8(miss).unwrap());
        v
    }

    #[test]
    fn the_kinds_match_the_lists_under_every_spelling() {
        let all = HOP_BY_HOP.iter().chain(&SET_BY_GATEWAY).chain(&[
            "host",
            "via",
            "expect",
            "idempotency-key",
            "date",
            "server",
            "content-type",
            "x-api-keys",
            "t",
            "tee",
        ]);
        for n in all {
            // A gateway-set name with its first byte cut is not one of them.
            let cut = n.replace('-', "_");
            assert!(!classify(&cut.as_bytes()[1..]).is_set_by_gateway(), "{cut}");
            for s in spellings(n) {
                let k = classify(s.as_bytes());
                let hop = HOP_BY_HOP.iter().any(|l| name_is(s.as_bytes(), l));
                let set = SET_BY_GATEWAY
                    .iter()
                    .any(|l| name_is_spelling(s.as_bytes(), l));
                assert_eq!(k.is_hop_by_hop(), hop, "{s}: {k:?}");
                assert_eq!(k.is_set_by_gateway(), set, "{s}: {k:?}");
            }
        }
    }

    #[test]
    fn exact_names_get_their_own_kind_and_other_spellings_do_not() {
        assert_eq!(classify(b"Host"), Kind::Host);
        assert_eq!(classify(b"CONNECTION"), Kind::Connection);
        assert_eq!(classify(b"content-length"), Kind::ContentLength);
        assert_eq!(classify(b"Content_Length"), Kind::SetByGateway);
        assert_eq!(classify(b"Transfer-Encoding"), Kind::TransferEncoding);
        assert_eq!(classify(b"X-Forwarded-For"), Kind::XForwardedFor);
        assert_eq!(classify(b"X_Forwarded_For"), Kind::SetByGateway);
        assert_eq!(classify(b"x-request-id"), Kind::XRequestId);
        assert_eq!(classify(b"Upgrade"), Kind::Upgrade);
        assert_eq!(classify(b"Expect"), Kind::Expect);
        assert_eq!(classify(b"Via"), Kind::Via);
        assert_eq!(classify(b"Idempotency-Key"), Kind::IdempotencyKey);
        assert_eq!(classify(b"X-Shard"), Kind::SetByGateway);
        assert_eq!(classify(b"Hos_"), Kind::Other);
        assert_eq!(classify(b"Content-Type"), Kind::Other);
        assert_eq!(classify(b""), Kind::Other);
    }
}
