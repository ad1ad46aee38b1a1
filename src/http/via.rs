//! Loop detection on the wire (SPEC §4): every forwarded request carries `Via: 1.1 <token>`,
//! the token naming the fleet, and a request that arrives with it already passed through
//! this fleet (a backend that is switchyard itself, or a chain that comes back): 508, not
//! forwarded again. Pure.
use super::head::HeaderRange;
use super::kind::Kind;
use super::list_items;

/// Longest `via_name` accepted.
pub const MAX_TOKEN: usize = 64;

/// A `via_name`: an HTTP token (RFC 9110 §5.6.2), so it reads back as one `received-by`.
pub fn valid_token(s: &str) -> bool {
    s.len() <= MAX_TOKEN && super::token::is_token(s.as_bytes())
}

/// The default token: a digest of what every replica of one fleet shares and another fleet
/// does not (the store's identity, see `config::validate`). A digest, so that the `Via` a
/// backend sees does not spell out etcd endpoints or file paths.
pub fn default_token(identity: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(identity.as_bytes());
    let mut s = String::from("switchyard-");
    for b in &d[..8] {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// True if any `Via` entry of the head names `token` as its `received-by`.
pub fn seen(buf: &[u8], headers: &[HeaderRange], token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == Kind::Via)
        .flat_map(|h| list_items(&buf[h.value.clone()]))
        .any(|entry| {
            // `protocol SP received-by [SP comment]`
            let mut words = entry
                .split(|b| *b == b' ' || *b == b'\t')
                .filter(|w| !w.is_empty());
            let _protocol = words.next();
            words.next().is_some_and(|w| w.eq_ignore_ascii_case(token))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, scan, RequestHead, Scan};

    fn seen_in(head: &str, token: &str) -> bool {
        let b = head.as_bytes();
        let Ok(Scan::Complete(n)) = scan(b, 0, 65536) else {
            panic!()
        };
        let mut h = RequestHead::default();
        parse(b, n, &mut h).unwrap();
        seen(b, &h.headers, token.as_bytes())
    }

    #[test]
    fn finds_our_entry_anywhere() {
        let t = "switchyard-0011223344556677";
        assert!(seen_in(
            &format!("GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 {t}\r\n\r\n"),
            t
        ));
        assert!(seen_in(
            &format!("GET / HTTP/1.1\r\nHost: h\r\nvia: 1.0 fred, HTTP/1.1 {t} (comment)\r\n\r\n"),
            t
        ));
        assert!(seen_in(
            &format!(
                "GET / HTTP/1.1\r\nVia: 1.1 a\r\nHost: h\r\nVIA: 1.1 {}\r\n\r\n",
                t.to_uppercase()
            ),
            t
        ));
        assert!(!seen_in(
            "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 other\r\n\r\n",
            t
        ));
        assert!(!seen_in(
            &format!("GET / HTTP/1.1\r\nHost: h\r\nX-Via: 1.1 {t}\r\n\r\n"),
            t
        ));
        assert!(!seen_in(
            &format!("GET / HTTP/1.1\r\nHost: h\r\nVia: {t}\r\n\r\n"),
            t
        ));
    }

    #[test]
    fn tokens() {
        let a = default_token("etcd|http://e1:2379|/switchyard/");
        assert_eq!(a, default_token("etcd|http://e1:2379|/switchyard/"));
        assert_ne!(a, default_token("etcd|http://e1:2379|/other/"));
        assert!(valid_token(&a));
        assert!(!valid_token("a b"));
        assert!(!valid_token(""));
        assert!(!valid_token("a,b"));
    }
}
