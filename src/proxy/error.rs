//! One error for everything that can end an exchange early. Each phase says what it knows (the
//! kind, which side failed, whether the client connection can carry another request, whether a
//! retry could be allowed, what already reached the client); the finish phase reads it to
//! answer, log and count, and nothing downstream re-parses a message or a status number.
use crate::http::error::ErrorKind;
use std::borrow::Cow;

/// Who caused the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client sent something invalid, stalled, or went away.
    Client,
    /// switchyard refused the request itself: no route, no key, nothing healthy.
    Gateway,
    /// The backend failed, stalled or answered something that cannot be relayed.
    Upstream,
}

/// What the client hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A JSON error answer with this status (SPEC §4).
    Answer(ErrorKind),
    /// No answer is possible: the client is gone, or the response head already reached it
    /// and the only honest signal left is closing the connection.
    Gone,
}

#[derive(Debug)]
pub(crate) struct ProxyError {
    pub kind: Kind,
    pub side: Side,
    /// The client connection cannot carry another request after this, whatever its framing.
    pub must_close: bool,
    /// Nothing reached a backend, so trying another candidate is safe (connect failures).
    pub retry: bool,
    /// Bytes of the answer already written to the client (the head's, once it is out).
    pub relayed: u64,
    /// The upstream connection came from the idle pool.
    pub reused: bool,
    /// A 5xx the backend answered that was held back for a retry (its budget already taken).
    pub status: Option<u16>,
    /// Whether the backend sent any byte of an answer before failing.
    pub answered: bool,
    /// The backend said it did not process the request (HTTP/2 REFUSED_STREAM, or a GOAWAY
    /// below its stream): it may be sent again whatever its method (RFC 9113 §8.7).
    pub not_processed: bool,
    /// For the log line and the JSON `message`.
    pub detail: Cow<'static, str>,
    /// What the client is told instead of the generic text for its status, when a failure
    /// can be named without an address or an OS error (SPEC §11).
    pub public: Option<&'static str>,
}

impl ProxyError {
    fn new(kind: Kind, side: Side, must_close: bool, detail: Cow<'static, str>) -> Self {
        ProxyError {
            kind,
            side,
            must_close,
            retry: false,
            relayed: 0,
            reused: false,
            status: None,
            answered: false,
            not_processed: false,
            detail,
            public: None,
        }
    }

    /// An invalid or incomplete request: answered, then the connection closes (its framing
    /// can no longer be trusted).
    pub fn client(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Answer(kind), Side::Client, true, detail.into())
    }

    /// A refusal of a well-formed request; the connection stays when its body was read.
    pub fn refuse(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Answer(kind), Side::Gateway, false, detail.into())
    }

    /// A backend failure: answered, and the connection closes, since the request body may
    /// be half sent and the backend's state is unknown.
    pub fn upstream(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Answer(kind), Side::Upstream, true, detail.into())
    }

    /// Nobody to answer; the connection just closes.
    pub fn gone(side: Side, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Gone, side, true, detail.into())
    }

    /// The client went away (or stopped reading) mid-exchange.
    pub fn client_gone() -> Self {
        Self::gone(Side::Client, "the client closed the connection")
    }

    /// The connection closes after the answer whatever its framing (bytes the client may
    /// already send after the head, a tunnel's, must not be read as a request).
    pub fn closing(mut self) -> Self {
        self.must_close = true;
        self
    }

    /// Notes whether the backend refused the request unprocessed, as its stream tells.
    pub fn seen_on(mut self, stream: &super::stream::BackendStream) -> Self {
        self.not_processed = stream.not_processed();
        self
    }

    pub fn retryable(mut self) -> Self {
        self.retry = true;
        self
    }

    /// The status and code the client is answered with, or None when it cannot be.
    pub fn answer(&self) -> Option<ErrorKind> {
        match self.kind {
            Kind::Answer(k) if self.relayed == 0 => Some(k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_answered_once_the_head_is_out() {
        let mut e = ProxyError::upstream(ErrorKind::BadGateway, "broken");
        assert_eq!(e.answer(), Some(ErrorKind::BadGateway));
        assert!(e.must_close && !e.retry);
        e.relayed = 120;
        assert_eq!(e.answer(), None);
        assert_eq!(ProxyError::client_gone().answer(), None);
    }

    #[test]
    fn refusals_keep_the_connection_unless_told() {
        let e = ProxyError::refuse(ErrorKind::NoRoute, "none");
        assert!(!e.must_close);
        assert!(ProxyError::client(ErrorKind::BadRequest, "bad").must_close);
        let e = ProxyError::refuse(ErrorKind::ServiceUnavailable, "down").retryable();
        assert!(e.retry);
    }
}
