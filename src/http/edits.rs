//! A rule's head edits (SPEC §3 Rewrites): `strip_prefix` and the header sets and removals for
//! requests and responses, checked at load and precomputed into wire bytes when the table is
//! built, so that the head rewrite only compares names and copies one slice per head.
use super::name_is;

/// Header names no rule may set or remove: they frame the message or describe one connection,
/// and the proxy writes them itself (RFC 9110 §7.6.1, RFC 9112 §6).
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// Request headers switchyard asserts itself (SPEC §4); a rule setting one would send two.
const ASSERTED_REQUEST: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-api-key-name",
    "x-shard",
];

/// Response headers switchyard adds to every answer.
const ASSERTED_RESPONSE: [&str; 2] = ["x-gateway", "server-timing"];

/// Which head a header edit is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Why a header name cannot be edited, or None when it can.
pub fn refuse_name(name: &str, side: Side, removing: bool) -> Option<String> {
    let token = super::token::is_token(name.as_bytes());
    if !token {
        return Some(format!("{name:?} is not a valid header name"));
    }
    let n = name.as_bytes();
    if FRAMING.iter().any(|f| name_is(n, f)) {
        return Some(format!(
            "{name} frames the message or belongs to one connection: switchyard writes it itself"
        ));
    }
    let asserted: &[&str] = match side {
        Side::Request => &ASSERTED_REQUEST,
        Side::Response => &ASSERTED_RESPONSE,
    };
    if asserted.iter().any(|f| name_is(n, f)) {
        return Some(format!(
            "{name} is set by switchyard itself (SPEC §4) and cannot be changed per rule"
        ));
    }
    if side == Side::Request && removing && name_is(n, "host") {
        return Some("Host cannot be removed (HTTP/1.1 requires it); set it instead".into());
    }
    None
}

/// Why a header value cannot be sent, or None when it can: no control characters (CR, LF
/// and NUL would split or end the head), no leading or trailing whitespace.
pub fn refuse_value(value: &str) -> Option<String> {
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Some(format!("{value:?} contains control characters"));
    }
    if value.trim() != value {
        return Some(format!("{value:?} has leading or trailing whitespace"));
    }
    None
}

/// Header edits for one side of a rule, in wire form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Lower-case names whose incoming copies are dropped: the removed and the set ones.
    drop: Vec<Box<[u8]>>,
    /// The set headers as `Name: value\r\n` lines, in the order configured.
    lines: Vec<u8>,
    /// `Host` is among the set headers.
    sets_host: bool,
}

impl HeaderEdits {
    /// From validated names and values (see [`refuse_name`] and [`refuse_value`]).
    pub fn new(set: &[(String, String)], remove: &[String]) -> HeaderEdits {
        let mut e = HeaderEdits::default();
        for (name, value) in set {
            e.lines.extend_from_slice(name.as_bytes());
            e.lines.extend_from_slice(b": ");
            e.lines.extend_from_slice(value.as_bytes());
            e.lines.extend_from_slice(b"\r\n");
            e.sets_host |= name.eq_ignore_ascii_case("host");
        }
        for name in set.iter().map(|(n, _)| n).chain(remove) {
            let lower: Box<[u8]> = name.to_ascii_lowercase().into_bytes().into();
            if !e.drop.contains(&lower) {
                e.drop.push(lower);
            }
        }
        e
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty()
    }

    /// Whether an incoming header of this name is left out.
    #[inline]
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|d| name.eq_ignore_ascii_case(d))
    }

    /// The set headers, ready to append to a head.
    #[inline]
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The dropped names, for `switchyard route`.
    pub fn dropped(&self) -> Vec<String> {
        self.drop
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    }

    pub fn sets_host(&self) -> bool {
        self.sets_host
    }
}

/// Everything a rule changes in the heads it forwards.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Edits {
    /// `strip_prefix`, without a trailing `/` (`/files`).
    pub strip_prefix: Option<Box<[u8]>>,
    pub request: HeaderEdits,
    pub response: HeaderEdits,
}

/// The edits of a rule that has none.
pub static NONE: Edits = Edits {
    strip_prefix: None,
    request: HeaderEdits {
        drop: Vec::new(),
        lines: Vec::new(),
        sets_host: false,
    },
    response: HeaderEdits {
        drop: Vec::new(),
        lines: Vec::new(),
        sets_host: false,
    },
};

/// The origin-form target after `strip_prefix`: the rest of `tail` (path and query) past the
/// prefix, when the prefix ends there on a segment boundary. The caller writes a `/` first
/// when the rest does not start with one (`/files` → `/`, `/files?x` → `/?x`). None when the
/// target does not start with the prefix; it is then forwarded unchanged.
#[inline]
pub fn strip<'t>(tail: &'t [u8], prefix: &[u8]) -> Option<&'t [u8]> {
    let rest = tail.strip_prefix(prefix)?;
    matches!(rest.first(), None | Some(b'/' | b'?')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_on_segment_boundaries() {
        assert_eq!(
            strip(b"/files/a.pdf?x=1", b"/files"),
            Some(&b"/a.pdf?x=1"[..])
        );
        assert_eq!(strip(b"/files", b"/files"), Some(&b""[..]));
        assert_eq!(strip(b"/files/", b"/files"), Some(&b"/"[..]));
        assert_eq!(strip(b"/files?x", b"/files"), Some(&b"?x"[..]));
        assert_eq!(strip(b"/filesystem", b"/files"), None);
        assert_eq!(strip(b"/other", b"/files"), None);
    }

    #[test]
    fn names_that_cannot_be_edited() {
        for n in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Upgrade",
            "TE",
            "Trailer",
            "X-Forwarded-For",
            "x-request-id",
            "",
            "X Bad",
            "X:Bad",
        ] {
            assert!(refuse_name(n, Side::Request, false).is_some(), "{n}");
        }
        assert!(refuse_name("Host", Side::Request, false).is_none());
        assert!(refuse_name("Host", Side::Request, true).is_some());
        assert!(refuse_name("X-Env", Side::Request, true).is_none());
        assert!(refuse_name("Authorization", Side::Request, false).is_none());
        assert!(refuse_name("X-Gateway", Side::Response, false).is_some());
        assert!(refuse_name("Server", Side::Response, true).is_none());
        assert!(refuse_value("a\r\nX-Evil: 1").is_some());
        assert!(refuse_value("a\0").is_some());
        assert!(refuse_value(" a").is_some());
        assert!(refuse_value("prod; v=1\tx").is_none());
        assert!(refuse_value("").is_none());
    }

    #[test]
    fn precomputed_lines_and_drops() {
        let e = HeaderEdits::new(
            &[
                ("X-Env".into(), "prod".into()),
                ("Host".into(), "files".into()),
            ],
            &["X-Debug".into(), "x-env".into()],
        );
        assert_eq!(e.lines(), b"X-Env: prod\r\nHost: files\r\n");
        assert!(e.drops(b"x-ENV") && e.drops(b"HOST") && e.drops(b"X-Debug"));
        assert!(!e.drops(b"X-Other"));
        assert!(e.sets_host());
        assert!(NONE.request.is_empty() && !NONE.request.drops(b"x"));
    }
}
