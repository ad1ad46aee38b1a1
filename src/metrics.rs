//! Request metrics recorded by the data plane: lock-free counters and a latency histogram,
//! read by the admin listener's `/metrics` at scrape time.
//!
//! Nothing here takes a lock or allocates per request. Status codes are counted in a fixed
//! array per (rule, backend address): one slot for each common code, one per class (`4xx`) for
//! the rest. A rule holds one such array per address of its pool plus one for answers that
//! switchyard gave itself (503 with nothing healthy), and a latency histogram and byte
//! counters, all behind `Arc`s taken when its table was built (`keep` hands the same cells to
//! every table, so rebuilds keep counting). `observe` is a pointer scan over the pool and a
//! few relaxed `fetch_add`s; labels are only put together when someone scrapes.
use crate::routing::Rule;
use crate::upstream::Upstream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub mod keep;

/// Codes counted exactly; anything else lands in its class.
const EXACT: [u16; 26] = [
    101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
    413, 429, 431, 500, 502, 503, 504,
];
const EXACT_LABELS: [&str; 26] = [
    "101", "200", "201", "202", "204", "206", "301", "302", "303", "304", "307", "308", "400",
    "401", "403", "404", "405", "408", "409", "413", "429", "431", "500", "502", "503", "504",
];
const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// Slots in one [`CodeCounters`].
pub const CODE_SLOTS: usize = EXACT.len() + CLASS_LABELS.len();

/// status (0..600) -> slot, built at compile time so the hot path is one table load.
static SLOT_OF: [u8; 600] = slot_table();

const fn slot_table() -> [u8; 600] {
    let mut t = [0u8; 600];
    let mut s = 0;
    while s < 600 {
        t[s] = if s >= 100 {
            (EXACT.len() + s / 100 - 1) as u8
        } else {
            (EXACT.len() + 5) as u8
        };
        s += 1;
    }
    let mut i = 0;
    while i < EXACT.len() {
        t[EXACT[i] as usize] = i as u8;
        i += 1;
    }
    t
}

/// The slot a status code is counted in.
#[inline]
pub fn code_slot(status: u16) -> usize {
    SLOT_OF
        .get(usize::from(status))
        .map_or(CODE_SLOTS - 1, |s| usize::from(*s))
}

/// The `code` label of a slot: `"200"`, or a class such as `"4xx"` for codes without a slot.
pub fn slot_label(slot: usize) -> &'static str {
    EXACT_LABELS
        .get(slot)
        .copied()
        .unwrap_or_else(|| CLASS_LABELS[(slot - EXACT.len()).min(CLASS_LABELS.len() - 1)])
}

/// Requests by status code, one fixed slot per code (see [`code_slot`]).
#[derive(Debug)]
pub struct CodeCounters([AtomicU64; CODE_SLOTS]);

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl CodeCounters {
    #[inline]
    pub fn count(&self, status: u16) {
        self.0[code_slot(status)].fetch_add(1, Relaxed);
    }

    /// (code label, count) for every slot that counted something.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Relaxed);
            (n > 0).then(|| (slot_label(i), n))
        })
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// What a rule counts besides status codes: its latency and its bytes both ways.
#[derive(Debug, Default)]
pub struct RuleTotals {
    pub duration: Histogram,
    /// Request bytes read from clients (head and body) and answer bytes written to them.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A rule's counters: one [`CodeCounters`] per address of its pool (same order), a last one
/// for answers that no backend gave, and its [`RuleTotals`]. The cells are shared with the
/// rule's earlier tables through [`keep::StatsKeep`], so a rebuild keeps counting. A clone
/// shares the cells (two reference counts, no allocation): a rebuilt table reuses an unchanged
/// service's stats that way.
#[derive(Debug, Clone)]
pub struct RuleStats {
    pub(crate) totals: Arc<RuleTotals>,
    pub(crate) per_backend: Arc<[Arc<CodeCounters>]>,
}

impl RuleStats {
    /// Fresh cells, shared with nothing (tests and one-off tables).
    pub fn new(pool_len: usize) -> Self {
        RuleStats {
            totals: Arc::default(),
            per_backend: (0..=pool_len).map(|_| Arc::default()).collect(),
        }
    }

    /// The counters of pool member `i`, or of "no backend" for None.
    pub fn slot(&self, i: Option<usize>) -> &CodeCounters {
        let last = self.per_backend.len() - 1;
        &self.per_backend[i.map_or(last, |i| i.min(last))]
    }

    pub fn totals(&self) -> &RuleTotals {
        &self.totals
    }
}

/// Upper bounds of the latency histogram in microseconds (Prometheus' defaults, plus 30 s for
/// slow backends under `upstream_timeout = 30`).
const BUCKETS_US: [u64; 12] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// A fixed-bucket histogram of atomics; buckets are stored non-cumulative (one add per
/// observation) and summed up at scrape time.
#[derive(Debug)]
pub struct Histogram {
    /// `BUCKETS_US.len()` bounded buckets, then +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// (sum in seconds, count, non-cumulative (upper bound in seconds, count) with +Inf last).
    /// The count is the sum of the buckets, so a scrape racing an observation stays consistent.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            let le = BUCKETS_US
                .get(i)
                .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
            buckets.push((le, n));
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// The client protocols requests are counted by, in `by_protocol` order.
pub const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Answers given before a rule was found: malformed requests, 404, 408, 431...
    pub unrouted: CodeCounters,
    pub duration: Histogram,
    /// Finished requests by client protocol ([`PROTOCOLS`]).
    pub by_protocol: [AtomicU64; 3],
}

impl Metrics {
    /// Requests finished so far: the histogram's count, so the data plane pays no separate
    /// counter for it.
    pub fn requests(&self) -> u64 {
        self.duration.count()
    }

    /// Called once per finished exchange (including errors answered by switchyard itself),
    /// with the bytes read from and written to the client.
    #[inline]
    pub fn observe(
        &self,
        rule: Option<&Rule>,
        upstream: Option<&Upstream>,
        status: u16,
        took: Duration,
        bytes: (u64, u64),
    ) {
        let counters = match rule {
            Some(r) => {
                let i = upstream.and_then(|u| {
                    r.pool
                        .upstreams
                        .iter()
                        .position(|x| std::ptr::eq(Arc::as_ptr(x), u))
                });
                let t = r.stats.totals();
                t.duration.observe(took);
                t.bytes_in.fetch_add(bytes.0, Relaxed);
                t.bytes_out.fetch_add(bytes.1, Relaxed);
                r.stats.slot(i)
            }
            None => &self.unrouted,
        };
        counters.count(status);
        self.duration.observe(took);
    }

    /// Counts a finished request under its client protocol, by its index in [`PROTOCOLS`]
    /// (no name compared per request).
    #[inline]
    pub fn count_protocol(&self, slot: usize) {
        if let Some(c) = self.by_protocol.get(slot) {
            c.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_exact_slots_or_classes() {
        assert_eq!(slot_label(code_slot(200)), "200");
        assert_eq!(slot_label(code_slot(503)), "503");
        assert_eq!(slot_label(code_slot(418)), "4xx");
        assert_eq!(slot_label(code_slot(299)), "2xx");
        assert_eq!(slot_label(code_slot(102)), "1xx");
        assert_eq!(slot_label(code_slot(599)), "5xx");
        assert_eq!(slot_label(code_slot(42)), "other");
        assert_eq!(slot_label(code_slot(600)), "other");
        assert_eq!(slot_label(code_slot(u16::MAX)), "other");
        for (i, c) in EXACT.iter().enumerate() {
            assert_eq!(code_slot(*c), i);
            assert_eq!(slot_label(i), c.to_string());
        }
    }

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(60));
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.013).abs() < 1e-9);
        assert_eq!(b[0], (0.005, 2), "le is inclusive");
        assert_eq!(b[1], (0.01, 1));
        assert_eq!(b.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn rule_stats_has_a_slot_for_no_backend() {
        let s = RuleStats::new(2);
        s.slot(Some(0)).count(200);
        s.slot(None).count(503);
        s.slot(Some(9)).count(503);
        assert_eq!(s.slot(Some(0)).total(), 1);
        assert_eq!(s.slot(None).total(), 2);
        assert_eq!(s.slot(Some(1)).total(), 0);
    }
}
