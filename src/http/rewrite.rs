//! Rewrites heads as they cross the proxy: the request head a backend receives and the
//! response head a client receives (hop-by-hop headers out, forwarding headers in).
use super::edits::{self, Edits, HeaderEdits};
use super::head::{HeaderRange, RequestHead};
use super::kind::Kind;
use super::response::ResponseHead;
use super::{list_items, name_is, push_u64};

/// Appends header `h` as `name: value\r\n`. A line already spelled that way in `buf` that
/// starts where the pending `run` ends joins the run, so that consecutive kept lines leave in
/// one copy; [`flush`] writes the run.
#[inline]
fn push_header(out: &mut Vec<u8>, buf: &[u8], h: &HeaderRange, run: &mut std::ops::Range<usize>) {
    let end = h.value.end + 2;
    let canonical = h.value.start == h.name.end + 2
        && buf.get(h.name.end..h.value.start) == Some(b": ")
        && buf.get(h.value.end..end) == Some(b"\r\n");
    if canonical {
        if run.end == h.name.start && run.start < run.end {
            run.end = end;
        } else {
            flush(out, buf, run);
            *run = h.name.start..end;
        }
        return;
    }
    flush(out, buf, run);
    out.extend_from_slice(&buf[h.name.clone()]);
    out.extend_from_slice(b": ");
    out.extend_from_slice(&buf[h.value.clone()]);
    out.extend_from_slice(b"\r\n");
}

/// Appends a status code: three digits once parsed (100..=599), written without a loop.
#[inline]
fn push_status(out: &mut Vec<u8>, status: u16) {
    if (100..1000).contains(&status) {
        let d = |n: u16| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[d(status / 100), d(status / 10), d(status)]);
    } else {
        push_u64(out, u64::from(status));
    }
}

/// Writes the pending run of header lines of [`push_header`].
#[inline]
fn flush(out: &mut Vec<u8>, buf: &[u8], run: &mut std::ops::Range<usize>) {
    if run.start < run.end {
        out.extend_from_slice(&buf[run.clone()]);
        *run = 0..0;
    }
}

/// The options listed in a message's `Connection` headers, gathered once per head instead of
/// once per header line. Past `MAX_LISTED` (never seen in practice) it rescans the headers.
struct Listed<'b> {
    tokens: [&'b [u8]; MAX_LISTED],
    len: usize,
    overflow: bool,
}

const MAX_LISTED: usize = 4;

impl<'b> Listed<'b> {
    fn new(buf: &'b [u8], headers: &[HeaderRange]) -> Self {
        let mut l = Listed {
            tokens: [&[]; MAX_LISTED],
            len: 0,
            overflow: false,
        };
        for h in headers {
            // The usual `Connection: keep-alive` lists nothing (below): not split.
            if h.kind == Kind::Connection && !name_is(&buf[h.value.clone()], "keep-alive") {
                for tok in list_items(&buf[h.value.clone()]) {
                    // keep-alive names a header that is dropped anyway (Keep-Alive is
                    // hop-by-hop): not kept, so that the usual `Connection: keep-alive` lists
                    // nothing. A header literally named Close would be dropped before: that
                    // token stays.
                    if name_is(tok, "keep-alive") {
                        continue;
                    }
                    if l.len == MAX_LISTED {
                        l.overflow = true;
                    } else {
                        l.tokens[l.len] = tok;
                        l.len += 1;
                    }
                }
            }
        }
        l
    }

    /// Header names listed in `Connection`, which are hop-by-hop for this message only. A
    /// client cannot use this to strip Host: the names the gateway needs are never taken from
    /// here.
    #[inline(always)]
    fn has(&self, buf: &[u8], headers: &[HeaderRange], h: &HeaderRange) -> bool {
        // The check for nothing listed inlined: it runs for every kept header, nearly always
        // with nothing listed.
        self.len != 0 && h.kind != Kind::Host && self.lists(buf, headers, h)
    }

    fn lists(&self, buf: &[u8], headers: &[HeaderRange], h: &HeaderRange) -> bool {
        let name = &buf[h.name.clone()];
        if self.overflow {
            return headers
                .iter()
                .filter(|h| h.kind == Kind::Connection)
                .flat_map(|h| list_items(&buf[h.value.clone()]))
                .any(|tok| tok.eq_ignore_ascii_case(name));
        }
        self.tokens[..self.len]
            .iter()
            .any(|tok| tok.eq_ignore_ascii_case(name))
    }
}

/// The authority of an absolute-form target (`http://a:1/p` gives `a:1`) or of an
/// authority-form one (CONNECT `a:443`); empty for origin-form and `*`. Userinfo and bad
/// authorities were refused before (`http::admit`); this only cuts them off.
pub fn target_authority(target: &[u8]) -> &[u8] {
    let Some(tail) = super::head::origin_tail(target) else {
        return if target == b"*" { b"" } else { target };
    };
    if target.first() == Some(&b'/') {
        return b"";
    }
    let scheme_len = if target[4] == b':' { 7 } else { 8 };
    let auth = &target[scheme_len..target.len() - tail.len()];
    let auth = auth.split(|b| *b == b'#').next().unwrap_or(auth);
    auth.rsplit(|b| *b == b'@').next().unwrap_or(auth)
}

/// What the gateway adds to a forwarded request.
pub struct Forward<'a> {
    pub client_ip: &'a str,
    pub proto: &'a str,
    pub request_id: &'a [u8],
    pub api_key_name: Option<&'a str>,
    pub shard: Option<u32>,
    /// Body framing to announce: Some(n) for Content-Length, None with `chunked` for chunked.
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// Forward `Upgrade` and `Connection: upgrade` (the client asked to switch protocols).
    pub upgrade: bool,
    /// The Host to send when the client sent none (an HTTP/1.0 client): the request goes
    /// upstream as HTTP/1.1, which requires one (RFC 9112 §3.2).
    pub host_fallback: &'a str,
    /// The canonical path when it differs from the one sent (`http::canonical`); the query
    /// goes on as sent.
    pub path: Option<&'a [u8]>,
    /// Drop header names with `_` (`underscore_headers = "drop"`).
    pub drop_underscore: bool,
    /// This fleet's hop marker, sent as `Via: 1.1 <token>` (`http::via`).
    pub via: &'a [u8],
    /// The rule's rewrites (`strip_prefix`, request header sets and removals).
    pub edits: &'a Edits,
}

/// Writes the head a backend receives into `out` (cleared first).
pub fn request_head(buf: &[u8], head: &RequestHead, fwd: &Forward<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(head.method(buf));
    out.push(b' ');
    let target = head.target(buf);
    let tail = super::head::origin_tail(target);
    match tail {
        Some(tail) => {
            // The routed (canonical) path, less the rule's strip_prefix, then the query
            // exactly as sent.
            let q = memchr::memchr(b'?', tail).unwrap_or(tail.len());
            let path = fwd.path.unwrap_or(&tail[..q]);
            let path = match &fwd.edits.strip_prefix {
                Some(p) => edits::strip(path, p).unwrap_or(path),
                None => path,
            };
            if path.first() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(path);
            out.extend_from_slice(&tail[q..]);
        }
        // authority-form (CONNECT) and `*` (OPTIONS) go as they came.
        None => out.extend_from_slice(target),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // An absolute-form target's authority is the host (RFC 9112 §3.2.2): it replaces Host.
    let absolute = tail.is_some() && target.first() != Some(&b'/');
    let authority = target_authority(target);
    let listed = Listed::new(buf, &head.headers);
    let set = &fwd.edits.request;
    let mut xff_seen = false;
    let mut host: &[u8] = b"";
    let mut host_present = false;
    let mut upgrade_value: &[u8] = b"";
    let mut run = 0..0;
    for h in &head.headers {
        match h.kind {
            Kind::XForwardedFor => {
                xff_seen = true;
                continue;
            }
            Kind::Upgrade => upgrade_value = &buf[h.value.clone()],
            Kind::Host => {
                // An empty Host (only an HTTP/1.0 client gets this far with one) goes as
                // absent: the request leaves as HTTP/1.1, where an empty Host is a 400.
                if absolute || h.value.is_empty() {
                    continue;
                }
                host = &buf[h.value.clone()];
                host_present = true;
            }
            _ => {}
        }
        if h.kind.is_hop_by_hop() || h.kind.is_set_by_gateway() {
            continue;
        }
        let name = &buf[h.name.clone()];
        if (fwd.drop_underscore && memchr::memchr(b'_', name).is_some())
            || listed.has(buf, &head.headers, h)
            || set.drops(name)
        {
            continue;
        }
        push_header(out, buf, h, &mut run);
    }
    flush(out, buf, &mut run);
    // The rule's own headers; X-Forwarded-Host below still names the client's host.
    out.extend_from_slice(set.lines());
    if absolute && !authority.is_empty() {
        host = authority;
        if !set.sets_host() {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(authority);
            out.extend_from_slice(b"\r\n");
        }
    } else if !host_present && !set.sets_host() {
        // An HTTP/1.1 request needs a Host (RFC 9112 §3.2), which an HTTP/1.0 client may not
        // have sent: the target's authority when it names one, else the upstream address.
        out.extend_from_slice(b"Host: ");
        if authority.is_empty() {
            out.extend_from_slice(fwd.host_fallback.as_bytes());
        } else {
            out.extend_from_slice(authority);
        }
        out.extend_from_slice(b"\r\n");
    }
    // Earlier hops first, in the order the client sent them, then this hop's client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff_seen {
        for h in &head.headers {
            if h.kind == Kind::XForwardedFor && !h.value.is_empty() {
                out.extend_from_slice(&buf[h.value.clone()]);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"X-Forwarded-Proto: ");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !host.is_empty() {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Request-Id: ");
    out.extend_from_slice(fwd.request_id);
    out.extend_from_slice(b"\r\n");
    if let Some(name) = fwd.api_key_name {
        out.extend_from_slice(b"X-Api-Key-Name: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = fwd.shard {
        out.extend_from_slice(b"X-Shard: ");
        push_u64(out, u64::from(n));
        out.extend_from_slice(b"\r\n");
    }
    if !fwd.via.is_empty() {
        // A Via line of our own after the client's (a list across lines is one list).
        out.extend_from_slice(b"Via: 1.1 ");
        out.extend_from_slice(fwd.via);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = fwd.content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, n);
        out.extend_from_slice(b"\r\n");
    } else if fwd.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if fwd.upgrade && !upgrade_value.is_empty() {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        out.extend_from_slice(upgrade_value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the client side of a response is framed and what the gateway adds.
pub struct Reply<'a> {
    pub gateway: &'a str,
    /// Time from sending the request to the response head, for `Server-Timing`.
    pub upstream_ms: f64,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// Closing after this response: `Connection: close`.
    pub close: bool,
    /// An HTTP/1.0 client that asked for keep-alive gets `Connection: keep-alive`.
    pub keep_alive_1_0: bool,
    /// A 101 (or a tunnel): keep Upgrade and send `Connection: upgrade`.
    pub switching: bool,
    /// The rule's response header sets and removals.
    pub edits: &'a HeaderEdits,
}

/// Writes the head a client receives into `out` (cleared first).
pub fn response_head(buf: &[u8], head: &ResponseHead, reply: &Reply<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let listed = Listed::new(buf, &head.headers);
    let mut run = 0..0;
    for h in &head.headers {
        let keep_upgrade = reply.switching && h.kind == Kind::Upgrade;
        if !keep_upgrade
            && (h.kind.is_hop_by_hop()
                || h.kind == Kind::ContentLength
                || listed.has(buf, &head.headers, h)
                || reply.edits.drops(&buf[h.name.clone()]))
        {
            continue;
        }
        push_header(out, buf, h, &mut run);
    }
    flush(out, buf, &mut run);
    out.extend_from_slice(reply.edits.lines());
    if let Some(n) = reply.content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, n);
        out.extend_from_slice(b"\r\n");
    } else if reply.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"X-Gateway: ");
    out.extend_from_slice(reply.gateway.as_bytes());
    out.extend_from_slice(b"\r\nServer-Timing: ");
    super::push_server_timing(out, reply.upstream_ms);
    out.extend_from_slice(b"\r\n");
    if reply.switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if reply.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if reply.keep_alive_1_0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A bare interim response (100 Continue and friends) as relayed to the client.
pub fn interim_head(buf: &[u8], head: &ResponseHead, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    for h in &head.headers {
        if h.kind.is_hop_by_hop() {
            continue;
        }
        out.extend_from_slice(&buf[h.name.clone()]);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[h.value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, scan, Scan};

    fn rewrite(s: &str, fwd: &Forward<'_>) -> String {
        let b = s.as_bytes();
        let Ok(Scan::Complete(n)) = scan(b, 0, 65536) else {
            panic!()
        };
        let mut h = RequestHead::default();
        parse(b, n, &mut h).unwrap();
        let mut out = Vec::new();
        request_head(b, &h, fwd, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn fwd() -> Forward<'static> {
        Forward {
            client_ip: "10.1.2.3",
            proto: "http",
            request_id: b"rid",
            api_key_name: None,
            shard: None,
            content_length: None,
            chunked: false,
            upgrade: false,
            host_fallback: "10.9.9.9:80",
            path: None,
            drop_underscore: true,
            via: b"sy-test",
            edits: &edits::NONE,
        }
    }

    #[test]
    fn strips_hop_by_hop_and_adds_forwarding() {
        let out = rewrite(
            "GET /a?x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nX-API-Key: k\r\nX-Shard: 9\r\nAccept: */*\r\n\r\n",
            &fwd(),
        );
        assert!(
            out.starts_with("GET /a?x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"),
            "{out}"
        );
        for gone in [
            "X-Secret",
            "Keep-Alive",
            "X-API-Key",
            "Connection",
            "X-Shard",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("X-Forwarded-For: 10.1.2.3\r\n"));
        assert!(out.contains("X-Forwarded-Proto: http\r\n"));
        assert!(out.contains("X-Forwarded-Host: h\r\n"));
        assert!(out.contains("X-Request-Id: rid\r\n"));
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn appends_to_existing_forwarded_for() {
        let out = rewrite(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nHost: h\r\n\r\n",
            &fwd(),
        );
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3\r\n"),
            "{out}"
        );
        let out = rewrite(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            &fwd(),
        );
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n"),
            "{out}"
        );
    }

    #[test]
    fn missing_host_gets_the_fallback_and_a_present_one_is_kept() {
        let out = rewrite("GET /a HTTP/1.0\r\nAccept: */*\r\n\r\n", &fwd());
        assert!(out.starts_with("GET /a HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("\r\nHost: 10.9.9.9:80\r\n"), "{out}");
        assert!(!out.contains("X-Forwarded-Host"), "{out}");
        let out = rewrite("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", &fwd());
        assert_eq!(out.matches("Host: ").count(), 2, "{out}");
        assert!(!out.contains("10.9.9.9"), "{out}");
        // An empty Host (HTTP/1.0) is replaced: an HTTP/1.1 backend must refuse an empty one.
        let out = rewrite("GET /a HTTP/1.0\r\nHost:\r\n\r\n", &fwd());
        assert!(out.contains("\r\nHost: 10.9.9.9:80\r\n"), "{out}");
        assert_eq!(out.matches("Host:").count(), 1, "{out}");
    }

    #[test]
    fn header_lines_are_copied_whole_or_respelled() {
        // Canonical runs go as one copy; odd spacing is respelled; dropped lines break runs.
        let b = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC:3\r\nD: 4 \r\nConnection: x\r\nX: 5\r\nE: \r\nF: 6\r\n\r\n";
        let mut h = ResponseHead::default();
        crate::http::response::parse(b, b.len(), &mut h).unwrap();
        let reply = Reply {
            gateway: "g",
            upstream_ms: 0.0,
            content_length: None,
            chunked: false,
            close: false,
            keep_alive_1_0: false,
            switching: false,
            edits: &edits::NONE.response,
        };
        let mut out = Vec::new();
        response_head(b, &h, &reply, &mut out);
        let out = String::from_utf8(out).unwrap();
        let want = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: \r\nF: 6\r\nX-Gateway: g";
        assert!(out.starts_with(want), "{out:?}");
    }

    #[test]
    fn response_head_numbers() {
        let b = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
        let mut h = ResponseHead::default();
        crate::http::response::parse(b, b.len(), &mut h).unwrap();
        for (ms, want) in [
            (0.0, "0.000"),
            (1.2344, "1.234"),
            (1.2346, "1.235"),
            (12.0006, "12.001"),
            (0.0004, "0.000"),
        ] {
            let mut out = Vec::new();
            let reply = Reply {
                gateway: "g",
                upstream_ms: ms,
                content_length: Some(1234),
                chunked: false,
                close: false,
                keep_alive_1_0: false,
                switching: false,
                edits: &edits::NONE.response,
            };
            response_head(b, &h, &reply, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with("HTTP/1.1 204 No Content\r\n"), "{out}");
            assert!(out.contains("Content-Length: 1234\r\n"), "{out}");
            assert!(
                out.contains(&format!("Server-Timing: upstream;dur={want}\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn many_connection_options_are_all_honoured() {
        let opts: Vec<String> = (0..12).map(|i| format!("X-O{i}")).collect();
        let mut req = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: {}\r\n",
            opts.join(", ")
        );
        for o in &opts {
            req.push_str(&format!("{o}: v\r\n"));
        }
        req.push_str("X-Kept: k\r\n\r\n");
        let out = rewrite(&req, &fwd());
        for o in &opts {
            assert!(!out.contains(o.as_str()), "{o} in {out}");
        }
        assert!(out.contains("X-Kept: k\r\n"), "{out}");
    }

    #[test]
    fn connection_cannot_strip_host() {
        let out = rewrite(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n",
            &fwd(),
        );
        assert!(out.contains("Host: h\r\n"));
    }

    #[test]
    fn http10_without_host_gets_one() {
        // Found by fuzz/request_head: an HTTP/1.0 request without Host was forwarded as an
        // HTTP/1.1 request without Host, which a backend must refuse with 400.
        let out = rewrite("GET /p HTTP/1.0\r\n\r\n", &fwd());
        assert!(out.contains("\r\nHost: 10.9.9.9:80\r\n"), "{out}");
        assert_eq!(out.matches("Host: ").count(), 1, "{out}");
        assert!(!out.contains("X-Forwarded-Host"), "{out}");
        let b = out.as_bytes();
        let mut h = RequestHead::default();
        parse(b, b.len(), &mut h).unwrap();
        assert!(crate::http::framing::request(b, &h).is_ok(), "{out}");
        let out = rewrite("GET http://u@a:1#f HTTP/1.0\r\n\r\n", &fwd());
        assert!(out.contains("\r\nHost: a:1\r\n"), "{out}");
        let out = rewrite("GET HTTPS://a/x?y HTTP/1.0\r\n\r\n", &fwd());
        assert!(
            out.starts_with("GET /x?y HTTP/1.1\r\n") && out.contains("\r\nHost: a\r\n"),
            "{out}"
        );
        let out = rewrite("CONNECT a:443 HTTP/1.0\r\n\r\n", &fwd());
        assert!(
            out.starts_with("CONNECT a:443 HTTP/1.1\r\n") && out.contains("\r\nHost: a:443\r\n"),
            "{out}"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let out = rewrite("GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n", &fwd());
        assert!(out.starts_with("GET /p?q HTTP/1.1\r\n"), "{out}");
        let out = rewrite("GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n", &fwd());
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
        let out = rewrite("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", &fwd());
        assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
    }

    fn rule_edits() -> Edits {
        crate::config::Rewrites {
            strip_prefix: Some("/files".into()),
            set_request_headers: vec![
                ("Host".into(), "files.internal".into()),
                ("X-Env".into(), "prod".into()),
            ],
            remove_request_headers: vec!["X-Debug".into()],
            set_response_headers: vec![("Cache-Control".into(), "no-store".into())],
            remove_response_headers: vec!["Server".into()],
        }
        .edits()
    }

    #[test]
    fn rule_edits_strip_set_and_remove() {
        let e = rule_edits();
        let mut f = fwd();
        f.edits = &e;
        let out = rewrite(
            "GET /files/a.pdf?x=1 HTTP/1.1\r\nHost: Client.Example\r\nX-Debug: 1\r\nx-env: dev\r\nAccept: */*\r\n\r\n",
            &f,
        );
        assert!(out.starts_with("GET /a.pdf?x=1 HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("\r\nHost: files.internal\r\n"), "{out}");
        assert_eq!(out.matches("Host: ").count(), 2, "{out}");
        assert!(
            out.contains("X-Forwarded-Host: Client.Example\r\n"),
            "{out}"
        );
        assert!(
            out.contains("X-Env: prod\r\n") && !out.contains("dev"),
            "{out}"
        );
        assert!(!out.contains("X-Debug"), "{out}");
        assert!(out.contains("Accept: */*\r\n"), "{out}");
        for (target, want) in [
            ("/files", "GET / HTTP/1.1"),
            ("/files/", "GET / HTTP/1.1"),
            ("/files?q", "GET /?q HTTP/1.1"),
            ("http://h/files/b", "GET /b HTTP/1.1"),
        ] {
            let out = rewrite(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"), &f);
            assert!(out.starts_with(want), "{target}: {out}");
        }
        // An HTTP/1.0 request without Host takes the set Host, not the fallback.
        let out = rewrite("GET /files/x HTTP/1.0\r\n\r\n", &f);
        assert!(out.contains("\r\nHost: files.internal\r\n"), "{out}");
        assert!(
            !out.contains("10.9.9.9") && !out.contains("X-Forwarded-Host"),
            "{out}"
        );
    }

    #[test]
    fn response_edits() {
        let e = rule_edits();
        let b = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncache-control: public\r\nX-A: 1\r\n\r\n";
        let mut h = ResponseHead::default();
        crate::http::response::parse(b, b.len(), &mut h).unwrap();
        let reply = Reply {
            gateway: "g",
            upstream_ms: 1.0,
            content_length: Some(0),
            chunked: false,
            close: false,
            keep_alive_1_0: false,
            switching: false,
            edits: &e.response,
        };
        let mut out = Vec::new();
        response_head(b, &h, &reply, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("nginx") && !out.contains("public"), "{out}");
        assert!(out.contains("Cache-Control: no-store\r\n"), "{out}");
        assert!(
            out.contains("X-A: 1\r\n") && out.contains("X-Gateway: g\r\n"),
            "{out}"
        );
    }

    #[test]
    fn framing_and_upgrade_are_rewritten() {
        let mut f = fwd();
        f.chunked = true;
        f.upgrade = true;
        f.shard = Some(2);
        f.api_key_name = Some("blog");
        let out = rewrite(
            "GET /ws HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &f,
        );
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
        assert!(out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"));
        assert!(out.contains("X-Shard: 2\r\n"));
        assert!(out.contains("X-Api-Key-Name: blog\r\n"));
    }

    #[test]
    fn asserted_headers_go_under_every_spelling() {
        let mut f = fwd();
        f.drop_underscore = false;
        f.api_key_name = Some("blog");
        let out = rewrite(
            "GET / HTTP/1.1\r\nHost: h\r\nX_Api_Key_Name: ops\r\nx-api-key-NAME: ops\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil\r\nx_shard: 1\r\nX-Retry-Attempt: 3\r\nX_Request_Id: forged\r\nContent_Length: 9\r\nX_Other: kept\r\n\r\n",
            &f,
        );
        for gone in [
            "ops",
            "6.6.6.6",
            "evil",
            "x_shard",
            "X-Retry-Attempt",
            "forged",
            "Content_Length",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("X_Other: kept\r\n"), "{out}");
        assert!(out.contains("X-Api-Key-Name: blog\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-For: 10.1.2.3\r\n"), "{out}");
        f.drop_underscore = true;
        let out = rewrite(
            "GET / HTTP/1.1\r\nHost: h\r\nX_Other: x\r\nX-Fine: y\r\n\r\n",
            &f,
        );
        assert!(!out.contains("X_Other"), "{out}");
        assert!(out.contains("X-Fine: y\r\n"), "{out}");
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let out = rewrite(
            "GET http://evil.example/x?q HTTP/1.1\r\nHost: good.example\r\n\r\n",
            &fwd(),
        );
        assert!(out.starts_with("GET /x?q HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("\r\nHost: evil.example\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-Host: evil.example\r\n"), "{out}");
        assert!(!out.contains("good.example"), "{out}");
        assert_eq!(out.matches("Host: ").count(), 2, "{out}");
    }

    #[test]
    fn canonical_path_goes_with_the_query_as_sent() {
        let mut f = fwd();
        f.path = Some(b"/admin/x");
        let out = rewrite("GET /%61dmin//x?a=%2f&b HTTP/1.1\r\nHost: h\r\n\r\n", &f);
        assert!(
            out.starts_with("GET /admin/x?a=%2f&b HTTP/1.1\r\n"),
            "{out}"
        );
        let out = rewrite("GET http://h//a?q HTTP/1.1\r\nHost: h\r\n\r\n", &f);
        assert!(out.starts_with("GET /admin/x?q HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn via_is_appended_after_the_clients() {
        let out = rewrite("GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred\r\n\r\n", &fwd());
        let a = out.find("Via: 1.0 fred\r\n").expect("client's Via kept");
        let b = out.find("Via: 1.1 sy-test\r\n").expect("ours added");
        assert!(a < b, "{out}");
    }
}
