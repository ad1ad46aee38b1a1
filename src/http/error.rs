//! The JSON error answers of SPEC §4: one place that maps a failure to its status, code and
//! body, so every path that refuses a request answers the same way.
use std::io::Write;

/// Every error switchyard itself answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NoRoute,
    MethodNotAllowed,
    RequestTimeout,
    ExpectationFailed,
    UriTooLong,
    HeadersTooLarge,
    RateLimited,
    BadGateway,
    ServiceUnavailable,
    NotReady,
    GatewayTimeout,
    LoopDetected,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NoRoute => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::UriTooLong => 414,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::RateLimited => 429,
            ErrorKind::BadGateway => 502,
            ErrorKind::ServiceUnavailable | ErrorKind::NotReady => 503,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::LoopDetected => 508,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::ExpectationFailed => "expectation_failed",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::ServiceUnavailable => "service_unavailable",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::GatewayTimeout => "gateway_timeout",
            ErrorKind::LoopDetected => "loop_detected",
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "",
    }
}

/// The JSON body of an error.
pub fn body(code: &str, message: &str, request_id: &str) -> Vec<u8> {
    let v = serde_json::json!({"error": code, "message": message, "request_id": request_id});
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    b
}

/// A whole error response: head and JSON body. `close` adds `Connection: close`. An answer to
/// HEAD keeps its Content-Length but carries no body: the client reads none, and bytes after
/// the head would be taken as the start of the next response on the connection.
pub fn response(
    kind: ErrorKind,
    message: &str,
    request_id: &str,
    gateway: &str,
    close: bool,
    head_request: bool,
) -> Vec<u8> {
    let body = body(kind.code(), message, request_id);
    let status = kind.status();
    let mut out = Vec::with_capacity(body.len() + 200);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Gateway: {gateway}\r\nX-Request-Id: {request_id}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    if !head_request {
        out.extend_from_slice(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_json_with_request_id() {
        let r = response(
            ErrorKind::NoRoute,
            "no \"route\"",
            "rid-1",
            "switchyard",
            false,
            false,
        );
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "no_route");
        assert_eq!(v["message"], "no \"route\"");
        assert_eq!(v["request_id"], "rid-1");
    }

    #[test]
    fn answer_to_head_has_length_but_no_body() {
        let get = response(ErrorKind::NoRoute, "m", "r", "g", false, false);
        let head = response(ErrorKind::NoRoute, "m", "r", "g", false, true);
        let s = String::from_utf8(head).unwrap();
        assert!(s.ends_with("\r\n\r\n"), "{s}");
        let body_len = get.len() - s.len();
        assert!(
            s.contains(&format!("Content-Length: {body_len}\r\n")),
            "{s}"
        );
    }
}
