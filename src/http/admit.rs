//! The checks a request head passes after framing and before routing (SPEC §3, §4): target
//! form, canonical path, host, header names with `_`, and the fleet's own hop marker. One pure
//! call for the connection loop; each refusal says which status it is.
use super::canonical::{self, PathError};
use super::head::{self, RequestHead};

/// `[server] underscore_headers`: what happens to a request header whose name has a `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Underscore {
    /// Dropped before forwarding (nginx's default; CGI-style backends read `X_A` as `X-A`).
    #[default]
    Drop,
    /// The request is a 400.
    Reject,
    /// Forwarded, except where the name is a spelling of a header switchyard asserts.
    Allow,
}

impl Underscore {
    pub fn parse(s: &str) -> Option<Underscore> {
        match s {
            "drop" => Some(Underscore::Drop),
            "reject" => Some(Underscore::Reject),
            "allow" => Some(Underscore::Allow),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Underscore::Drop => "drop",
            Underscore::Reject => "reject",
            Underscore::Allow => "allow",
        }
    }
}

/// What the checks need from the config.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub underscore: Underscore,
    /// This fleet's `Via` token.
    pub via_token: &'a [u8],
}

/// The request target, as routing takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Origin- or absolute-form; `rewritten`: the canonical path differs from the one sent and
    /// is in the scratch buffer, else it is `head::route_path(target)` as sent.
    Path { rewritten: bool },
    /// CONNECT `host:port`. It has no path; it is routed as `/`.
    Authority,
    /// OPTIONS `*`.
    Asterisk,
}

/// Why a request is refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400 bad_request.
    BadRequest(&'static str),
    /// 508 loop_detected: the request carries this fleet's hop marker.
    Loop,
}

/// Runs every check on a parsed head whose framing passed. `scratch` receives the canonical
/// path when it differs from the one sent.
pub fn request(
    buf: &[u8],
    h: &RequestHead,
    policy: &Policy<'_>,
    scratch: &mut Vec<u8>,
) -> Result<Target, Refusal> {
    let method = h.method(buf);
    let target = h.target(buf);
    let is_connect = method == b"CONNECT";
    canonical::check_target(target).map_err(|e| Refusal::BadRequest(e.message()))?;
    super::host::request_host(
        target,
        h.header_of(buf, super::kind::Kind::Host),
        h.minor_version,
        is_connect,
    )
    .map_err(Refusal::BadRequest)?;
    let t = if is_connect {
        Target::Authority
    } else if target == b"*" {
        if method != b"OPTIONS" {
            return Err(Refusal::BadRequest("the * target is for OPTIONS only"));
        }
        Target::Asterisk
    } else {
        let Some(path) = head::route_path(target) else {
            return Err(Refusal::BadRequest("invalid request target"));
        };
        let rewritten = canonical::canonicalize(path, scratch)
            .map_err(|e: PathError| Refusal::BadRequest(e.message()))?;
        Target::Path { rewritten }
    };
    if policy.underscore == Underscore::Reject
        && h.headers
            .iter()
            .any(|r| memchr::memchr(b'_', &buf[r.name.clone()]).is_some())
    {
        return Err(Refusal::BadRequest(
            "header names with _ are refused (underscore_headers = \"reject\")",
        ));
    }
    if super::via::seen(buf, &h.headers, policy.via_token) {
        return Err(Refusal::Loop);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, scan, Scan};

    fn run(s: &str, underscore: Underscore) -> (Result<Target, Refusal>, Vec<u8>) {
        let b = s.as_bytes();
        let Ok(Scan::Complete(n)) = scan(b, 0, 65536) else {
            panic!()
        };
        let mut h = RequestHead::default();
        parse(b, n, &mut h).unwrap();
        let p = Policy {
            underscore,
            via_token: b"sy-test",
        };
        let mut scratch = Vec::new();
        (request(b, &h, &p, &mut scratch), scratch)
    }

    fn bad(s: &str) -> bool {
        matches!(run(s, Underscore::Drop).0, Err(Refusal::BadRequest(_)))
    }

    #[test]
    fn issue_vectors() {
        let (r, p) = run(
            "GET /%61dmin/x HTTP/1.1\r\nHost: h\r\n\r\n",
            Underscore::Drop,
        );
        assert_eq!(r, Ok(Target::Path { rewritten: true }));
        assert_eq!(p, b"/admin/x");
        let (r, p) = run(
            "GET //admin/x?a=%2F HTTP/1.1\r\nHost: h\r\n\r\n",
            Underscore::Drop,
        );
        assert_eq!(r, Ok(Target::Path { rewritten: true }));
        assert_eq!(p, b"/admin/x");
        assert!(bad("GET /admin%2fx HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("GET /admin\\x HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("GET /pub#/../admin/x HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("GET /pub?q#/../admin/x HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("CONNECT /pub HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("CONNECT http://h:1/ HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("GET /p HTTP/1.1\r\nHost: a/b\r\n\r\n"));
        assert!(bad("GET /p HTTP/1.1\r\nHost: a@b\r\n\r\n"));
        assert!(bad("GET /p HTTP/1.1\r\nHost: a b\r\n\r\n"));
        assert!(bad("GET /p HTTP/1.1\r\nHost:\r\n\r\n"));
        assert!(bad("GET * HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(bad("GET h:1 HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert_eq!(
            run(
                "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
                Underscore::Drop
            )
            .0,
            Ok(Target::Authority)
        );
        assert_eq!(
            run("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", Underscore::Drop).0,
            Ok(Target::Asterisk)
        );
        assert_eq!(
            run("GET /a/b?x HTTP/1.1\r\nHost: h\r\n\r\n", Underscore::Drop).0,
            Ok(Target::Path { rewritten: false })
        );
    }

    #[test]
    fn underscores_and_loops() {
        let s = "GET / HTTP/1.1\r\nHost: h\r\nX_Api_Key_Name: ops\r\n\r\n";
        assert!(run(s, Underscore::Drop).0.is_ok());
        assert!(run(s, Underscore::Allow).0.is_ok());
        assert!(matches!(
            run(s, Underscore::Reject).0,
            Err(Refusal::BadRequest(_))
        ));
        let s = "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 proxy, 1.1 sy-test\r\n\r\n";
        assert_eq!(run(s, Underscore::Drop).0, Err(Refusal::Loop));
    }
}
