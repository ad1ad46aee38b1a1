//! The retry decision (SPEC §11 `[retry]`) as a pure function of what failed and what the
//! request is. It never looks at sockets or strings: the proxy describes the failure in a
//! [`Failure`], the request in a [`RequestFacts`], and gets back whether to try again and
//! whether that try spends budget.
use std::time::Duration;

/// One of the `on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    ConnectFailure,
    Reset,
    Timeout,
    Status502,
    Status503,
    Status504,
}

impl On {
    pub fn parse(s: &str) -> Option<On> {
        Some(match s {
            "connect-failure" => On::ConnectFailure,
            "reset" => On::Reset,
            "timeout" => On::Timeout,
            "502" => On::Status502,
            "503" => On::Status503,
            "504" => On::Status504,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "connect-failure, reset, timeout, 502, 503, 504";

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`On`] conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnSet(u8);

impl OnSet {
    pub fn of(list: &[On]) -> Self {
        OnSet(list.iter().fold(0, |m, o| m | o.bit()))
    }
    pub fn contains(self, o: On) -> bool {
        self.0 & o.bit() != 0
    }
}

/// `[retry]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Tries per request, the first included.
    pub attempts: u32,
    pub on: OnSet,
    pub budget_percent: u32,
    pub min_retries_per_second: u32,
    pub max_retry_body: u64,
    /// How long one request may wait for a probe after it was handed out (see `outlier`).
    pub probe_timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            on: OnSet::of(&[On::ConnectFailure, On::Reset, On::Status503]),
            budget_percent: 20,
            min_retries_per_second: 5,
            max_retry_body: 65_536,
            probe_timeout: Duration::from_secs(30),
        }
    }
}

/// What went wrong with one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// The connect failed or was refused: nothing reached the backend.
    ConnectFailure,
    /// The connection broke (reset, or closed before a full answer).
    Reset,
    /// The backend did not answer within `upstream_timeout`.
    Timeout,
    /// The backend answered with this status (a 5xx the proxy may retry instead of relaying).
    Status(u16),
}

/// A failed try, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub what: What,
    /// Bytes of the answer already written to the client.
    pub relayed: u64,
    /// The upstream connection came from the idle pool.
    pub reused: bool,
    /// Whether any byte came back from the backend on this connection for this request.
    pub answered: bool,
    /// The backend said it did not process the request (HTTP/2 REFUSED_STREAM, or a GOAWAY
    /// whose last stream is below it: RFC 9113 §8.7).
    pub not_processed: bool,
}

/// What the policy needs to know about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    pub idempotent: bool,
    pub has_idempotency_key: bool,
    /// The body can be sent again: none went yet, or every byte that went is kept (at most
    /// `max_retry_body` of them; `proxy::replay`). False for protocol switches and tunnels.
    /// Whatever the method: only the idempotent ones (or a key) are retried after a failure
    /// the backend may have acted on.
    pub body_kept: bool,
}

/// RFC 9110 §9.2.2: the methods whose repeated effect is that of one request.
pub fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer the client with this failure.
    GiveUp,
    /// Try the next candidate, spending budget.
    Retry,
    /// Try again outside the budget: the backend never saw the request (a connect failure,
    /// or a reused idle connection that was already closed).
    RetryFree,
    /// The one retry of a stale pooled connection: a new connection to the same address.
    FreshConnection,
}

/// Decides what to do after try number `attempt` (1-based) failed. `stale_retried` says
/// whether this request already used its one stale-connection retry.
pub fn decide(
    cfg: &RetryConfig,
    req: &RequestFacts,
    f: &Failure,
    attempt: u32,
    stale_retried: bool,
) -> Decision {
    if f.relayed > 0 {
        // The client has part of an answer: anything else would be spliced onto it.
        return Decision::GiveUp;
    }
    if f.what == What::ConnectFailure {
        // Nothing reached the backend (SPEC §4): always the next candidate, at most once per
        // address, which the caller bounds by the candidate list.
        return Decision::RetryFree;
    }
    if f.not_processed && !f.answered && req.body_kept && !stale_retried {
        // The backend says it never processed it: safe to send again whatever the method
        // (RFC 9113 §8.7), once, on a new connection like the stale-connection retry.
        return Decision::FreshConnection;
    }
    let replayable = (req.idempotent || req.has_idempotency_key) && req.body_kept;
    if !replayable {
        return Decision::GiveUp;
    }
    if f.reused && !f.answered && f.what == What::Reset && !stale_retried {
        // The backend closed an idle connection as we reused it: it never saw the request.
        return Decision::FreshConnection;
    }
    if attempt >= cfg.attempts {
        return Decision::GiveUp;
    }
    let on = match f.what {
        What::ConnectFailure => On::ConnectFailure,
        What::Reset => On::Reset,
        What::Timeout => On::Timeout,
        What::Status(502) => On::Status502,
        What::Status(503) => On::Status503,
        What::Status(504) => On::Status504,
        What::Status(_) => return Decision::GiveUp,
    };
    if cfg.on.contains(on) {
        Decision::Retry
    } else {
        Decision::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> RequestFacts {
        RequestFacts {
            idempotent: true,
            has_idempotency_key: false,
            body_kept: true,
        }
    }

    fn post() -> RequestFacts {
        RequestFacts {
            idempotent: false,
            ..get()
        }
    }

    fn failure(what: What) -> Failure {
        Failure {
            what,
            relayed: 0,
            reused: false,
            answered: false,
            not_processed: false,
        }
    }

    #[test]
    fn methods_of_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(m.as_bytes()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PROPFIND"] {
            assert!(!idempotent(m.as_bytes()), "{m}");
        }
    }

    #[test]
    fn defaults_retry_reset_and_503_for_idempotent_requests_only() {
        let c = RetryConfig::default();
        let d = |r: &RequestFacts, w| decide(&c, r, &failure(w), 1, false);
        assert_eq!(d(&get(), What::Reset), Decision::Retry);
        assert_eq!(d(&get(), What::Status(503)), Decision::Retry);
        assert_eq!(d(&get(), What::Status(502)), Decision::GiveUp);
        assert_eq!(d(&get(), What::Timeout), Decision::GiveUp);
        assert_eq!(d(&get(), What::Status(500)), Decision::GiveUp);
        assert_eq!(d(&post(), What::Status(503)), Decision::GiveUp);
        assert_eq!(d(&post(), What::Reset), Decision::GiveUp);
        let keyed = RequestFacts {
            has_idempotency_key: true,
            ..post()
        };
        assert_eq!(d(&keyed, What::Status(503)), Decision::Retry);
    }

    #[test]
    fn connect_failures_are_always_retried_outside_the_budget() {
        let c = RetryConfig {
            on: OnSet::of(&[]),
            attempts: 1,
            ..RetryConfig::default()
        };
        // A body that was not kept (too large, or a POST without a key) changes nothing.
        let lost = RequestFacts {
            body_kept: false,
            ..post()
        };
        assert_eq!(
            decide(&c, &lost, &failure(What::ConnectFailure), 5, false),
            Decision::RetryFree
        );
    }

    #[test]
    fn attempts_bound_retries() {
        let c = RetryConfig {
            attempts: 3,
            ..RetryConfig::default()
        };
        let f = failure(What::Reset);
        assert_eq!(decide(&c, &get(), &f, 2, false), Decision::Retry);
        assert_eq!(decide(&c, &get(), &f, 3, false), Decision::GiveUp);
    }

    #[test]
    fn nothing_after_a_response_byte() {
        let c = RetryConfig::default();
        for w in [What::Reset, What::Status(503), What::ConnectFailure] {
            let f = Failure {
                relayed: 1,
                ..failure(w)
            };
            assert_eq!(decide(&c, &get(), &f, 1, false), Decision::GiveUp);
        }
    }

    #[test]
    fn a_body_must_still_be_whole() {
        let c = RetryConfig::default();
        let keyed = |kept| RequestFacts {
            has_idempotency_key: true,
            body_kept: kept,
            ..post()
        };
        let f = failure(What::Reset);
        assert_eq!(decide(&c, &keyed(true), &f, 1, false), Decision::Retry);
        assert_eq!(decide(&c, &keyed(false), &f, 1, false), Decision::GiveUp);
        let lost = RequestFacts {
            body_kept: false,
            ..get()
        };
        assert_eq!(decide(&c, &lost, &f, 1, false), Decision::GiveUp);
        let stale = Failure { reused: true, ..f };
        assert_eq!(decide(&c, &lost, &stale, 1, false), Decision::GiveUp);
        assert_eq!(
            decide(&c, &keyed(true), &stale, 1, false),
            Decision::FreshConnection
        );
    }

    #[test]
    fn a_stale_pooled_connection_gets_one_fresh_try_whatever_on_says() {
        let c = RetryConfig {
            on: OnSet::of(&[]),
            attempts: 1,
            ..RetryConfig::default()
        };
        let stale = Failure {
            reused: true,
            ..failure(What::Reset)
        };
        assert_eq!(
            decide(&c, &get(), &stale, 1, false),
            Decision::FreshConnection
        );
        assert_eq!(decide(&c, &get(), &stale, 1, true), Decision::GiveUp);
        // Not for a POST without a key: the backend may have read it before closing.
        assert_eq!(decide(&c, &post(), &stale, 1, false), Decision::GiveUp);
        // Nor once the backend answered anything.
        let answered = Failure {
            answered: true,
            ..stale
        };
        assert_eq!(decide(&c, &get(), &answered, 1, false), Decision::GiveUp);
    }

    #[test]
    fn a_request_the_backend_did_not_process_gets_one_fresh_try_whatever_its_method() {
        let c = RetryConfig {
            on: OnSet::of(&[]),
            attempts: 1,
            ..RetryConfig::default()
        };
        let refused = Failure {
            not_processed: true,
            ..failure(What::Reset)
        };
        // On a new connection too, not only on a reused one.
        assert_eq!(
            decide(&c, &post(), &refused, 1, false),
            Decision::FreshConnection
        );
        assert_eq!(
            decide(&c, &get(), &refused, 1, false),
            Decision::FreshConnection
        );
        // Once.
        assert_eq!(decide(&c, &post(), &refused, 2, true), Decision::GiveUp);
        // Not when the body could not be kept, nor once an answer began.
        let lost = RequestFacts {
            body_kept: false,
            ..post()
        };
        assert_eq!(decide(&c, &lost, &refused, 1, false), Decision::GiveUp);
        let answered = Failure {
            answered: true,
            ..refused
        };
        assert_eq!(decide(&c, &post(), &answered, 1, false), Decision::GiveUp);
        let relayed = Failure {
            relayed: 10,
            ..refused
        };
        assert_eq!(decide(&c, &post(), &relayed, 1, false), Decision::GiveUp);
        // Any other reset of a POST without a key is never sent again.
        assert_eq!(
            decide(&c, &post(), &failure(What::Reset), 1, false),
            Decision::GiveUp
        );
    }

    #[test]
    fn on_names_parse() {
        for n in On::NAMES.split(", ") {
            assert!(On::parse(n).is_some(), "{n}");
        }
        assert_eq!(On::parse("5xx"), None);
        let s = OnSet::of(&[On::Timeout, On::Status504]);
        assert!(s.contains(On::Timeout) && s.contains(On::Status504) && !s.contains(On::Reset));
    }
}
