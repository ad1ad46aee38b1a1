//! Passive health (SPEC §11 `[outlier]`): per-address atomics that count failures seen by real
//! requests and eject an address for a while, next to its active health cell.
//!
//! Everything takes `now_ms` (Unix milliseconds) from the caller, so the logic runs on a fake
//! clock in tests. Nothing here locks: an ejection is one compare-exchange on `ejected_until`,
//! and the single probe after an ejection is one compare-exchange on `probe_at`.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `[outlier]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Connect failures, resets or timeouts in a row that eject; 0 = off.
    pub consecutive_failures: u32,
    /// 5xx answers in a row that eject; 0 = off (the default).
    pub consecutive_5xx: u32,
    pub base_ejection_time: Duration,
    /// At most this share of a pool's addresses is ejected at once; 0 = never eject.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            consecutive_5xx: 0,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// The longest ejection (Envoy's `max_ejection_time` default), unless the base is longer.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// What one request learned about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a failure (any status below 500, or a 5xx while
    /// `consecutive_5xx` is off).
    Success,
    /// The connect failed, the connection was reset, or the backend timed out.
    Failure,
    /// A 5xx answer.
    Status5xx,
}

/// A change worth a log line and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Ejected until this Unix ms, for the `times`-th time in a row.
    Ejected { until_ms: u64, times: u32 },
    /// The probe succeeded: back to full traffic.
    Returned,
}

/// Whether a request may use an address right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Not ejected.
    Open,
    /// Ejected and its time is not up, or another request holds the probe.
    Ejected,
    /// Its time is up and this request is the one probe.
    Probe,
}

/// The per-address state. `ejected_until == 0` means "in service".
#[derive(Debug, Default)]
pub struct Outlier {
    failures: AtomicU32,
    fivexx: AtomicU32,
    /// Ejections in a row (reset when a probe succeeds): the multiplier of the next one.
    times: AtomicU32,
    ejected_until: AtomicU64,
    /// When the current probe was handed out (Unix ms); 0 = none in flight.
    probe_at: AtomicU64,
    /// Ejections since start, for `/metrics`.
    ejections: AtomicU64,
}

impl Outlier {
    /// Unix ms until which the address is ejected; 0 when it is in service. An address whose
    /// time is up but whose probe has not succeeded yet still reports its (past) time.
    #[inline]
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Relaxed)
    }

    /// In service: never ejected, or returned by a successful probe.
    #[inline]
    pub fn in_service(&self) -> bool {
        self.ejected_until() == 0
    }

    /// Ends an ejection and its run (the active check saw the address come back UP).
    /// Returns whether it was ejected.
    pub fn reset(&self) -> bool {
        let was = self.ejected_until.swap(0, Relaxed) != 0;
        self.times.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.fivexx.store(0, Relaxed);
        self.probe_at.store(0, Relaxed);
        was
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    /// Whether a request may use this address. Once the time is up, exactly one caller gets
    /// [`Admit::Probe`]; a probe whose request vanished without reporting (the client went
    /// away) is handed out again after `probe_timeout`, so an address cannot stay out forever.
    #[inline]
    pub fn admit(&self, now_ms: u64, probe_timeout: Duration) -> Admit {
        let until = self.ejected_until();
        if until == 0 {
            return Admit::Open;
        }
        self.admit_slow(until, now_ms, probe_timeout)
    }

    #[cold]
    fn admit_slow(&self, until: u64, now_ms: u64, probe_timeout: Duration) -> Admit {
        if now_ms < until {
            return Admit::Ejected;
        }
        let held = self.probe_at.load(Relaxed);
        let stale = held != 0 && now_ms.saturating_sub(held) >= probe_timeout.as_millis() as u64;
        if (held == 0 || stale)
            && self
                .probe_at
                .compare_exchange(held, now_ms.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            Admit::Probe
        } else {
            Admit::Ejected
        }
    }

    /// Records one request's outcome. `pool` is every address of the pool the request used
    /// (this one included), for `max_ejection_percent`.
    pub fn report<'a>(
        &self,
        outcome: Outcome,
        now_ms: u64,
        cfg: &OutlierConfig,
        pool: impl Iterator<Item = &'a Outlier> + Clone,
    ) -> Option<Event> {
        let outcome = match outcome {
            Outcome::Status5xx if cfg.consecutive_5xx == 0 => Outcome::Success,
            o => o,
        };
        let until = self.ejected_until();
        if until != 0 {
            // Ejected: only the probe's answer (time up) counts; answers of requests that
            // started before the ejection change nothing.
            if now_ms < until {
                return None;
            }
            return match outcome {
                Outcome::Success => self.restore(until),
                _ => self.eject_again(until, now_ms, cfg),
            };
        }
        match outcome {
            Outcome::Success => {
                // Plain stores only when needed: the hot path reads, it does not write.
                if self.failures.load(Relaxed) != 0 {
                    self.failures.store(0, Relaxed);
                }
                if self.fivexx.load(Relaxed) != 0 {
                    self.fivexx.store(0, Relaxed);
                }
                None
            }
            Outcome::Failure => {
                self.fivexx.store(0, Relaxed);
                let n = self.failures.fetch_add(1, Relaxed) + 1;
                (cfg.consecutive_failures > 0 && n >= cfg.consecutive_failures)
                    .then(|| self.eject(now_ms, cfg, pool))
                    .flatten()
            }
            Outcome::Status5xx => {
                // The connection worked: the run of connect failures is broken.
                self.failures.store(0, Relaxed);
                let n = self.fivexx.fetch_add(1, Relaxed) + 1;
                (n >= cfg.consecutive_5xx)
                    .then(|| self.eject(now_ms, cfg, pool))
                    .flatten()
            }
        }
    }

    fn restore(&self, until: u64) -> Option<Event> {
        self.ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .ok()?;
        self.times.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.fivexx.store(0, Relaxed);
        self.probe_at.store(0, Relaxed);
        Some(Event::Returned)
    }

    fn eject_again(&self, until: u64, now_ms: u64, cfg: &OutlierConfig) -> Option<Event> {
        let times = self.times.load(Relaxed).saturating_add(1);
        let new_until = now_ms + ejection_ms(cfg, times);
        self.ejected_until
            .compare_exchange(until, new_until, Relaxed, Relaxed)
            .ok()?;
        self.times.store(times, Relaxed);
        self.probe_at.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        Some(Event::Ejected {
            until_ms: new_until,
            times,
        })
    }

    fn eject<'a>(
        &self,
        now_ms: u64,
        cfg: &OutlierConfig,
        pool: impl Iterator<Item = &'a Outlier> + Clone,
    ) -> Option<Event> {
        if cfg.max_ejection_percent == 0 {
            return None;
        }
        let size = pool.clone().count().max(1) as u64;
        let out = pool.clone().filter(|o| !o.in_service()).count() as u64;
        if !may_eject(out, size, cfg.max_ejection_percent) {
            return None;
        }
        let times = self.times.load(Relaxed).saturating_add(1);
        let until = now_ms.max(1) + ejection_ms(cfg, times);
        self.ejected_until
            .compare_exchange(0, until, Relaxed, Relaxed)
            .ok()?;
        // Two addresses ejected at the same moment may both have seen room for one more:
        // count again and step back if the pool is now over its share. (Both stepping back
        // under-ejects for a moment, which is the safe side.)
        let out = pool.filter(|o| !o.in_service()).count() as u64;
        if out > allowed(size, cfg.max_ejection_percent) {
            let _ = self
                .ejected_until
                .compare_exchange(until, 0, Relaxed, Relaxed);
            return None;
        }
        self.times.store(times, Relaxed);
        self.failures.store(0, Relaxed);
        self.fivexx.store(0, Relaxed);
        self.probe_at.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        Some(Event::Ejected {
            until_ms: until,
            times,
        })
    }
}

/// How many of a pool's `size` addresses may be out at once: the percentage rounded down,
/// but at least one (as Envoy does), so a small pool can still lose its one bad address.
fn allowed(size: u64, percent: u32) -> u64 {
    (size * u64::from(percent.min(100)) / 100).max(1)
}

fn may_eject(out: u64, size: u64, percent: u32) -> bool {
    out < allowed(size, percent)
}

/// `base_ejection_time × times`, capped at [`MAX_EJECTION`] (or the base when it is longer).
pub fn ejection_ms(cfg: &OutlierConfig, times: u32) -> u64 {
    let base = cfg.base_ejection_time.as_millis() as u64;
    let cap = (MAX_EJECTION.as_millis() as u64).max(base);
    base.saturating_mul(u64::from(times.max(1))).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_secs(10);

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            consecutive_5xx: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }

    fn fail(o: &Outlier, pool: &[&Outlier], now: u64, c: &OutlierConfig) -> Option<Event> {
        o.report(Outcome::Failure, now, c, pool.iter().copied())
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        let c = cfg();
        assert_eq!(fail(&a, &pool, 1000, &c), None);
        assert_eq!(fail(&a, &pool, 1000, &c), None);
        assert_eq!(
            a.report(Outcome::Success, 1000, &c, pool.iter().copied()),
            None
        );
        assert_eq!(fail(&a, &pool, 1000, &c), None);
        assert_eq!(fail(&a, &pool, 1000, &c), None);
        assert_eq!(
            fail(&a, &pool, 1000, &c),
            Some(Event::Ejected {
                until_ms: 31_000,
                times: 1
            })
        );
        assert_eq!(a.ejected_until(), 31_000);
        assert_eq!(a.admit(30_999, PROBE), Admit::Ejected);
        assert_eq!(a.ejections(), 1);
    }

    #[test]
    fn one_probe_when_time_is_up_then_back_or_out_for_longer() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        let c = cfg();
        for _ in 0..3 {
            fail(&a, &pool, 0, &c);
        }
        assert_eq!(a.ejected_until(), 30_001);
        // Time up: one request gets the probe, the others are still kept away.
        assert_eq!(a.admit(30_001, PROBE), Admit::Probe);
        assert_eq!(a.admit(30_002, PROBE), Admit::Ejected);
        // The probe fails: out again at once, for twice the base.
        assert_eq!(
            fail(&a, &pool, 30_100, &c),
            Some(Event::Ejected {
                until_ms: 90_100,
                times: 2
            })
        );
        assert_eq!(a.admit(90_099, PROBE), Admit::Ejected);
        assert_eq!(a.admit(90_100, PROBE), Admit::Probe);
        assert_eq!(
            a.report(Outcome::Success, 90_200, &c, pool.iter().copied()),
            Some(Event::Returned)
        );
        assert!(a.in_service());
        assert_eq!(a.admit(90_300, PROBE), Admit::Open);
        // The run is over: the next ejection starts at the base time again.
        for _ in 0..3 {
            fail(&a, &pool, 100_000, &c);
        }
        assert_eq!(a.ejected_until(), 130_000);
        assert_eq!(a.ejections(), 3);
    }

    #[test]
    fn a_lost_probe_is_handed_out_again_after_the_probe_timeout() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        for _ in 0..3 {
            fail(&a, &pool, 0, &cfg());
        }
        assert_eq!(a.admit(40_000, PROBE), Admit::Probe);
        assert_eq!(a.admit(49_999, PROBE), Admit::Ejected);
        assert_eq!(a.admit(50_000, PROBE), Admit::Probe);
    }

    #[test]
    fn answers_of_requests_from_before_the_ejection_change_nothing() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        let c = cfg();
        for _ in 0..3 {
            fail(&a, &pool, 0, &c);
        }
        assert_eq!(
            a.report(Outcome::Success, 10, &c, pool.iter().copied()),
            None
        );
        assert_eq!(fail(&a, &pool, 10, &c), None);
        assert_eq!(a.ejected_until(), 30_001);
    }

    #[test]
    fn ejection_time_grows_to_the_cap() {
        let c = cfg();
        assert_eq!(ejection_ms(&c, 1), 30_000);
        assert_eq!(ejection_ms(&c, 3), 90_000);
        assert_eq!(ejection_ms(&c, 10), 300_000);
        assert_eq!(ejection_ms(&c, u32::MAX), 300_000);
        let long = OutlierConfig {
            base_ejection_time: Duration::from_secs(600),
            ..c
        };
        assert_eq!(ejection_ms(&long, 4), 600_000);
    }

    #[test]
    fn fivexx_only_counts_when_enabled() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        let off = OutlierConfig {
            consecutive_5xx: 0,
            ..cfg()
        };
        for _ in 0..100 {
            assert_eq!(
                a.report(Outcome::Status5xx, 0, &off, pool.iter().copied()),
                None
            );
        }
        let c = cfg();
        assert_eq!(
            a.report(Outcome::Status5xx, 0, &c, pool.iter().copied()),
            None
        );
        assert!(matches!(
            a.report(Outcome::Status5xx, 0, &c, pool.iter().copied()),
            Some(Event::Ejected { times: 1, .. })
        ));
    }

    #[test]
    fn a_5xx_breaks_a_run_of_connect_failures() {
        let (a, b) = (Outlier::default(), Outlier::default());
        let pool = [&a, &b];
        let c = OutlierConfig {
            consecutive_5xx: 10,
            ..cfg()
        };
        fail(&a, &pool, 0, &c);
        fail(&a, &pool, 0, &c);
        a.report(Outcome::Status5xx, 0, &c, pool.iter().copied());
        assert_eq!(fail(&a, &pool, 0, &c), None);
        assert!(a.in_service());
    }

    #[test]
    fn max_ejection_percent_keeps_part_of_the_pool() {
        let all: Vec<Outlier> = (0..4).map(|_| Outlier::default()).collect();
        let pool: Vec<&Outlier> = all.iter().collect();
        let c = cfg();
        for o in &all {
            for _ in 0..3 {
                fail(o, &pool, 0, &c);
            }
        }
        assert_eq!(all.iter().filter(|o| !o.in_service()).count(), 2);
        // A pool of one may lose its one address; 0 % never ejects.
        let solo = Outlier::default();
        for _ in 0..3 {
            fail(&solo, &[&solo], 0, &c);
        }
        assert!(!solo.in_service());
        let never = OutlierConfig {
            max_ejection_percent: 0,
            ..c
        };
        let x = Outlier::default();
        for _ in 0..10 {
            fail(&x, &[&x], 0, &never);
        }
        assert!(x.in_service());
    }

    #[test]
    fn off_means_never() {
        let off = OutlierConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        let a = Outlier::default();
        for _ in 0..1000 {
            assert_eq!(a.report(Outcome::Failure, 0, &off, [&a].into_iter()), None);
        }
    }

    #[test]
    fn only_one_of_many_threads_gets_the_probe() {
        let a = std::sync::Arc::new(Outlier::default());
        let c = cfg();
        for _ in 0..3 {
            a.report(Outcome::Failure, 0, &c, [&*a].into_iter());
        }
        let got: usize = (0..8)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| a.admit(40_000, PROBE) == Admit::Probe)
                        .count()
                })
            })
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert_eq!(got, 1);
    }
}
