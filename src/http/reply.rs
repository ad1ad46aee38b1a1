//! How the answer a client receives is framed (RFC 9112 §6, RFC 9110 §8.6): from the body a
//! backend's response carries, the request method and the client's HTTP version, the length
//! header to announce and how the body moves. Pure; the proxy and the response-head fuzz target
//! share it, so the fuzzer checks the rule the proxy runs.
use super::framing::{self, Body};
use super::head::HeaderRange;

/// How a response body moves from the backend to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// No body bytes follow the head.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked both ways: validated and passed through as it came.
    Chunked,
    /// Chunked from the backend, decoded for an HTTP/1.0 client, which reads until close.
    Dechunk,
    /// Until the backend closes; `rechunk` sends it chunked to an HTTP/1.1 client so that
    /// its connection survives.
    UntilClose { rechunk: bool },
}

/// The client side of a response: what its head announces and how its body is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyFraming {
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The client connection closes after this answer (`Connection: close`).
    pub close: bool,
    pub relay: Relay,
}

/// Frames a response whose backend body is `body` (from [`framing::response`]) for a client
/// speaking HTTP/1.`client_minor`. `close` is whether the connection closes anyway; a body
/// an HTTP/1.0 client can only see delimited by the close adds to it.
pub fn frame(
    buf: &[u8],
    headers: &[HeaderRange],
    body: Body,
    status: u16,
    request_was_head: bool,
    client_minor: u8,
    close: bool,
) -> ReplyFraming {
    let v11 = client_minor == 1;
    let (content_length, chunked, relay) = match body {
        Body::Length(n) => (Some(n), false, Relay::Length(n)),
        // The length of the resource a HEAD or 304 describes is kept (RFC 9110 §8.6).
        Body::None if request_was_head || status == 304 => {
            (framing::declared_length(buf, headers), false, Relay::None)
        }
        Body::None if status == 204 || status < 200 => (None, false, Relay::None),
        Body::None => (Some(0), false, Relay::None),
        Body::Chunked if v11 => (None, true, Relay::Chunked),
        Body::Chunked => (None, false, Relay::Dechunk),
        Body::UntilClose => (None, v11, Relay::UntilClose { rechunk: v11 }),
    };
    ReplyFraming {
        content_length,
        chunked,
        close: close || (!v11 && matches!(body, Body::Chunked | Body::UntilClose)),
        relay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{scan, Scan};
    use crate::http::response::{parse, ResponseHead};

    fn framed(head: &str, is_head: bool, minor: u8) -> ReplyFraming {
        let b = head.as_bytes();
        let Ok(Scan::Complete(n)) = scan(b, 0, 65536) else {
            panic!("incomplete")
        };
        let mut r = ResponseHead::default();
        parse(b, n, &mut r).unwrap();
        let body = framing::response(b, &r.headers, r.status, is_head).unwrap();
        frame(b, &r.headers, body, r.status, is_head, minor, false)
    }

    #[test]
    fn head_and_304_keep_the_declared_length_and_carry_no_body() {
        let f = framed("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", true, 1);
        assert_eq!((f.content_length, f.relay), (Some(42), Relay::None));
        let f = framed(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            false,
            1,
        );
        assert_eq!((f.content_length, f.relay), (Some(7), Relay::None));
        let f = framed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
            1,
        );
        assert_eq!((f.content_length, f.chunked), (None, false));
    }

    #[test]
    fn bodiless_statuses_and_empty_bodies() {
        let f = framed("HTTP/1.1 204 No Content\r\n\r\n", false, 1);
        assert_eq!((f.content_length, f.relay), (None, Relay::None));
        let f = framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 1);
        assert_eq!((f.content_length, f.relay), (Some(0), Relay::None));
    }

    #[test]
    fn chunked_and_close_delimited_bodies_by_client_version() {
        let f = framed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            1,
        );
        assert_eq!((f.chunked, f.close, f.relay), (true, false, Relay::Chunked));
        let f = framed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            0,
        );
        assert_eq!((f.chunked, f.close, f.relay), (false, true, Relay::Dechunk));
        let f = framed("HTTP/1.0 200 OK\r\n\r\n", false, 1);
        let rechunk = Relay::UntilClose { rechunk: true };
        assert_eq!((f.chunked, f.close, f.relay), (true, false, rechunk));
        let f = framed("HTTP/1.0 200 OK\r\n\r\n", false, 0);
        let raw = Relay::UntilClose { rechunk: false };
        assert_eq!((f.chunked, f.close, f.relay), (false, true, raw));
    }
}
