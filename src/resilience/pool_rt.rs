//! A pool's runtime state that outlives routing tables (kept by name in the upstream set):
//! its hold queue, its retry budget and its in-flight count. A rebuilt table points at the
//! same values, so a reload neither empties a waiting room nor zeroes a gauge.
use super::budget::RetryBudget;
use super::hold::HoldQueue;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct PoolRuntime {
    pub hold: HoldQueue,
    pub budget: RetryBudget,
    /// Requests routed to the pool and not finished, held ones included
    /// (`switchyard_pool_in_flight`).
    pub in_flight: AtomicU64,
}

/// Counts one request in flight while it lives.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub fn enter(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
