//! What every section's checks share: the problem list with line numbers, and the readers
//! of common values (addresses, positive durations) that report into it.
use super::address::{self, Address};
use super::value::{Secs, Val};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// 1-based line of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub(super) struct Checker<'s> {
    pub(super) src: &'s str,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn problem(
        &mut self,
        span: Option<&std::ops::Range<usize>>,
        key: &str,
        message: String,
    ) {
        self.problems.push(Problem {
            line: span.map(|s| line_of(self.src, s.start)),
            key: key.to_string(),
            message,
        });
    }

    pub(super) fn address(
        &mut self,
        v: &Val<String>,
        key: &str,
        allow_zero: bool,
    ) -> Option<Address> {
        match address::parse(v.value.trim(), allow_zero) {
            Ok(a) => Some(a),
            Err(e) => {
                self.problem(Some(&v.span), key, e);
                None
            }
        }
    }

    /// `protocol` of a backend or shard; `http1` when not given.
    pub(super) fn protocol(
        &mut self,
        v: &Option<Val<String>>,
        key: &str,
    ) -> crate::upstream::protocol::Protocol {
        let Some(v) = v else {
            return Default::default();
        };
        match crate::upstream::protocol::Protocol::parse(&v.value) {
            Ok(p) => p,
            Err(m) => {
                self.problem(Some(&v.span), key, m);
                Default::default()
            }
        }
    }

    /// `health_check_endpoint` of a backend of this protocol: a path, or `"grpc"` (the gRPC
    /// health protocol) for an HTTP/2 backend.
    pub(super) fn endpoint_for(
        &mut self,
        v: &Option<Val<String>>,
        key: &str,
        protocol: crate::upstream::protocol::Protocol,
    ) -> Option<String> {
        match v {
            Some(g) if g.value == crate::health::grpc::ENDPOINT => {
                if protocol.is_h2() {
                    Some(g.value.clone())
                } else {
                    self.problem(
                        Some(&g.span),
                        key,
                        "\"grpc\" (the gRPC health protocol) needs protocol = \"h2c\" or \"h2\""
                            .into(),
                    );
                    None
                }
            }
            _ => self.endpoint(v, key),
        }
    }

    pub(super) fn endpoint(&mut self, v: &Option<Val<String>>, key: &str) -> Option<String> {
        let v = v.as_ref()?;
        if !v.value.starts_with('/') || v.value.contains([' ', '\r', '\n']) {
            self.problem(
                Some(&v.span),
                key,
                format!("{:?} must be a path starting with /", v.value),
            );
            return None;
        }
        Some(v.value.clone())
    }

    pub(super) fn positive(
        &mut self,
        v: &Option<Val<Secs>>,
        key: &str,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match v {
            None => default,
            Some(v) if v.value.0.is_zero() => {
                self.problem(Some(&v.span), key, "must be greater than 0".into());
                default
            }
            Some(v) => v.value.0,
        }
    }
}
