//! The retry budget (SPEC §11 `budget_percent`, `min_retries_per_second`): retries may be at
//! most a share of the requests of the last 10 seconds, plus a small per-second floor so a pool
//! with little traffic keeps its retries. Without it, retries multiply the load on a pool that
//! is already failing (a retry storm).
//!
//! A ring of ten one-second buckets of atomics; a bucket whose second has passed is claimed by
//! a compare-exchange on its second and zeroed. Time comes from the caller (whole seconds).
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const WINDOW: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts, +1 (0 = never used).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW],
}

impl RetryBudget {
    /// The bucket of `now_s`, zeroed first if it still holds an older second. A count added
    /// by another thread between the claim and the zeroing can be lost: the budget is an
    /// estimate, and a lost count errs by one request, never by a storm.
    fn bucket(&self, now_s: u64) -> &Bucket {
        let b = &self.buckets[(now_s % WINDOW as u64) as usize];
        let tag = now_s + 1;
        let seen = b.second.load(Relaxed);
        if seen != tag
            && seen < tag
            && b.second
                .compare_exchange(seen, tag, Relaxed, Relaxed)
                .is_ok()
        {
            b.requests.store(0, Relaxed);
            b.retries.store(0, Relaxed);
        }
        b
    }

    /// Counts a request (its first try).
    #[inline]
    pub fn record_request(&self, now_s: u64) {
        self.bucket(now_s).requests.fetch_add(1, Relaxed);
    }

    /// (requests, retries) over the window ending at `now_s`.
    pub fn window(&self, now_s: u64) -> (u64, u64) {
        let oldest = (now_s + 1).saturating_sub(WINDOW as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.second.load(Relaxed);
                s >= oldest && s <= now_s + 1
            })
            .fold((0, 0), |(q, r), b| {
                (q + b.requests.load(Relaxed), r + b.retries.load(Relaxed))
            })
    }

    /// Takes one retry from the budget if there is room: retries in this second below
    /// `min_per_second`, or retries over the window below `percent` of its requests.
    pub fn try_retry(&self, now_s: u64, percent: u32, min_per_second: u32) -> bool {
        let this = self.bucket(now_s);
        let allowed = this.retries.load(Relaxed) < u64::from(min_per_second) || {
            let (requests, retries) = self.window(now_s);
            retries * 100 < requests * u64::from(percent)
        };
        if allowed {
            this.retries.fetch_add(1, Relaxed);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_the_window_without_a_floor() {
        let b = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..100 {
            b.record_request(50);
            if b.try_retry(50, 20, 0) {
                retries += 1;
            }
        }
        assert_eq!(retries, 20);
        assert_eq!(b.window(50), (100, 20));
    }

    #[test]
    fn the_floor_keeps_retries_for_little_traffic() {
        let b = RetryBudget::default();
        b.record_request(7);
        assert!(b.try_retry(7, 20, 5));
        for _ in 0..4 {
            assert!(b.try_retry(7, 20, 5));
        }
        assert!(
            !b.try_retry(7, 20, 5),
            "floor used up, 5 retries > 20 % of 1"
        );
        // A new second brings the floor back.
        assert!(b.try_retry(8, 20, 5));
        // Without a floor and without traffic there is nothing to retry with.
        assert!(!RetryBudget::default().try_retry(1, 20, 0));
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.record_request(100);
        }
        assert_eq!(b.window(100), (100, 0));
        assert_eq!(b.window(109), (100, 0));
        assert_eq!(b.window(110), (0, 0));
        // The same slot, ten seconds later, starts from zero.
        b.record_request(110);
        assert_eq!(b.window(110), (1, 0));
        assert_eq!(
            b.window(105),
            (0, 0),
            "the newer second is not counted for an older now"
        );
    }

    #[test]
    fn concurrent_use_stays_close_to_the_share() {
        let b = std::sync::Arc::new(RetryBudget::default());
        let taken: u32 = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    for _ in 0..1000 {
                        b.record_request(3);
                        n += u32::from(b.try_retry(3, 20, 0));
                    }
                    n
                })
            })
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert!((790..=810).contains(&taken), "{taken}");
    }
}
