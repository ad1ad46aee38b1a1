//! Trailer fields that must not cross the proxy (RFC 9110 §6.5.1): fields that frame, route,
//! authenticate or control a message are only meaningful in the head, and a recipient that
//! merges trailers into the headers (many do) would take a forged one for real. Pure.
use super::name_is;

/// Dropped from trailers in both directions: RFC 9110 §6.5.1's categories spelled out as
/// RFC 7230 §4.1.2 listed them, Go net/http's `badTrailer` set, the hop-by-hop fields, and
/// every header switchyard asserts.
const FORBIDDEN: [&str; 40] = [
    // framing
    "content-length",
    "transfer-encoding",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    // routing and request modifiers
    "host",
    "expect",
    "max-forwards",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    // authentication
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "cookie",
    "set-cookie",
    // response control and content handling
    "cache-control",
    "pragma",
    "age",
    "expires",
    "date",
    "location",
    "retry-after",
    "vary",
    "content-encoding",
    "content-type",
    "content-range",
    // what switchyard asserts
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-api-key",
    "x-api-key-name",
    "via",
];

/// Asserted headers beyond the table's size; kept apart so the list above reads by category.
const ASSERTED: [&str; 3] = ["x-shard", "x-request-id", "x-retry-attempt"];

/// True if a trailer field with this name is dropped. Names with `_` go too: CGI-style
/// backends read `X_Api_Key_Name` as `X-Api-Key-Name`.
pub fn forbidden(name: &[u8]) -> bool {
    memchr::memchr(b'_', name).is_some()
        || FORBIDDEN.iter().chain(&ASSERTED).any(|f| name_is(name, f))
}

/// Writes a validated trailer section (the field lines after the last chunk and the final
/// CRLF, as `chunked::Decoder` accepted them) into `out` without its forbidden fields.
pub fn filter(section: &[u8], out: &mut Vec<u8>) {
    let mut rest = section;
    while let Some(i) = memchr::memmem::find(rest, b"\r\n") {
        let line = &rest[..i + 2];
        rest = &rest[i + 2..];
        if i == 0 {
            out.extend_from_slice(line);
            continue;
        }
        let name = &line[..memchr::memchr(b':', line).unwrap_or(0)];
        if !forbidden(name) {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> String {
        let mut out = Vec::new();
        filter(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn drops_forbidden_keeps_the_rest() {
        assert_eq!(f("\r\n"), "\r\n");
        assert_eq!(
            f("Content-Length: 5\r\nX-Checksum: abc\r\nhost: evil\r\nAuthorization: x\r\nX_Api_Key_Name: ops\r\ngrpc-status: 0\r\nSet-Cookie: a=b\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "X-Checksum: abc\r\ngrpc-status: 0\r\n\r\n"
        );
        assert_eq!(f("X-Api-Key-Name: ops\r\nVia: 1.1 x\r\n\r\n"), "\r\n");
    }

    #[test]
    fn forbidden_names() {
        assert!(forbidden(b"CONTENT-LENGTH"));
        assert!(forbidden(b"x_forwarded_for"));
        assert!(!forbidden(b"x-checksum"));
        assert!(!forbidden(b"grpc-message"));
    }
}
