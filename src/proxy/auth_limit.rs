//! Failed API-key checks per source address (SPEC §4: 429 `rate_limited` after
//! `auth_failure_limit` a minute), in a fixed-size table of atomics: bounded memory whatever
//! the number of addresses, no lock, and nothing at all for requests that carry no key. Time
//! is an input; unit-tested on a fake clock.
//!
//! The table has `BUCKETS` sets of `WAYS` entries; an entry packs a 32-bit tag of the address
//! (from a per-process keyed hash, so collisions cannot be aimed at a victim), the window it
//! counts in and the count. A new address takes a free or stale entry of its set, else the
//! one with the lowest count: someone with more addresses than the table holds can make their
//! own counts start over, which the per-address limit cannot prevent anyway. IPv6 addresses
//! count per /64, the unit one subscriber gets.
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The window `auth_failure_limit` counts in (SPEC §4: per minute).
pub const WINDOW_MS: u64 = 60_000;
const BUCKETS: usize = 1024;
const WAYS: usize = 4;

pub struct AuthLimiter {
    slots: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthLimiter")
    }
}

fn pack(tag: u32, window: u16, count: u16) -> u64 {
    u64::from(tag) << 32 | u64::from(window) << 16 | u64::from(count)
}

fn unpack(v: u64) -> (u32, u16, u16) {
    ((v >> 32) as u32, (v >> 16) as u16, v as u16)
}

/// The unit an address is counted in: itself for IPv4 (also v4-mapped), its /64 for IPv6.
fn unit(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(a) >> 64 << 64) | 1 << 32,
        },
    }
}

impl AuthLimiter {
    pub fn new() -> Self {
        AuthLimiter {
            slots: (0..BUCKETS * WAYS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The set and the tag (never 0: 0 marks a free entry) of an address.
    fn locate(&self, ip: IpAddr) -> (&[AtomicU64], u32) {
        let h = self.hasher.hash_one(unit(ip));
        let set = (h as usize % BUCKETS) * WAYS;
        ((&self.slots[set..set + WAYS]), ((h >> 32) as u32) | 1)
    }

    fn window(now_ms: u64, window_ms: u64) -> u16 {
        (now_ms / window_ms.max(1)) as u16
    }

    /// True if `ip` had `limit` or more failures in the current window (limit 0: never).
    pub fn blocked(&self, ip: IpAddr, limit: u32, now_ms: u64, window_ms: u64) -> bool {
        if limit == 0 {
            return false;
        }
        let (set, tag) = self.locate(ip);
        let w = Self::window(now_ms, window_ms);
        set.iter().any(|e| {
            let (t, ew, n) = unpack(e.load(Relaxed));
            t == tag && ew == w && u32::from(n) >= limit
        })
    }

    /// Counts one failed check for `ip`.
    pub fn record_failure(&self, ip: IpAddr, now_ms: u64, window_ms: u64) {
        let (set, tag) = self.locate(ip);
        let w = Self::window(now_ms, window_ms);
        for _ in 0..8 {
            // Its own entry, if it has one.
            if let Some(e) = set.iter().find(|e| unpack(e.load(Relaxed)).0 == tag) {
                let cur = e.load(Relaxed);
                let (t, ew, n) = unpack(cur);
                if t != tag {
                    continue;
                }
                let next = if ew == w {
                    pack(tag, w, n.saturating_add(1))
                } else {
                    pack(tag, w, 1)
                };
                if e.compare_exchange(cur, next, Relaxed, Relaxed).is_ok() {
                    return;
                }
                continue;
            }
            // A free or stale entry, else the one with the lowest count.
            let victim = set
                .iter()
                .min_by_key(|e| {
                    let (t, ew, n) = unpack(e.load(Relaxed));
                    if t == 0 || ew != w {
                        0
                    } else {
                        u32::from(n)
                    }
                })
                .expect("WAYS > 0");
            let cur = victim.load(Relaxed);
            if victim
                .compare_exchange(cur, pack(tag, w, 1), Relaxed, Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // Contended eight times over: dropping one count is better than spinning.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limit_per_address_per_window() {
        let l = AuthLimiter::new();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t = 10 * MIN + 5;
        for i in 0..20 {
            assert!(!l.blocked(a, 20, t, MIN), "after {i}");
            l.record_failure(a, t, MIN);
        }
        assert!(l.blocked(a, 20, t, MIN));
        assert!(l.blocked(a, 20, t + MIN - 10, MIN), "same window");
        assert!(!l.blocked(b, 20, t, MIN), "another address");
        assert!(!l.blocked(a, 0, t, MIN), "0 is no limit");
        assert!(!l.blocked(a, 20, 11 * MIN, MIN), "next window");
        l.record_failure(a, 11 * MIN, MIN);
        assert!(!l.blocked(a, 2, 11 * MIN, MIN), "counting starts over");
    }

    #[test]
    fn ipv6_counts_per_64_and_v4_mapped_as_v4() {
        let l = AuthLimiter::new();
        for i in 0..5 {
            l.record_failure(ip(&format!("2001:db8:1:2::{i}")), 0, MIN);
        }
        assert!(l.blocked(ip("2001:db8:1:2::ffff"), 5, 0, MIN));
        assert!(!l.blocked(ip("2001:db8:1:3::1"), 5, 0, MIN));
        for _ in 0..3 {
            l.record_failure(ip("::ffff:192.0.2.9"), 0, MIN);
        }
        assert!(l.blocked(ip("192.0.2.9"), 3, 0, MIN));
    }

    #[test]
    fn memory_stays_bounded_and_heavy_hitters_stay() {
        let l = AuthLimiter::new();
        let attacker = ip("198.51.100.7");
        for _ in 0..50 {
            l.record_failure(attacker, 0, MIN);
        }
        // Many one-off addresses churn through the table; the heavy hitter's entry has the
        // highest count of its set and is never the one replaced.
        for i in 0..100_000u32 {
            l.record_failure(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                0,
                MIN,
            );
        }
        assert!(l.blocked(attacker, 20, 0, MIN));
        assert_eq!(l.slots.len(), BUCKETS * WAYS);
    }

    #[test]
    fn concurrent_failures_are_counted() {
        let l = std::sync::Arc::new(AuthLimiter::new());
        let a = ip("203.0.113.5");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        l.record_failure(a, 0, MIN);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Under contention a count may be dropped (see record_failure), never invented.
        assert!(l.blocked(a, 80, 0, MIN));
        assert!(!l.blocked(a, 101, 0, MIN));
    }
}
