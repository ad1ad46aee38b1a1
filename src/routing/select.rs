//! Pools of upstreams and the order in which a request tries them. Every policy yields an
//! ordered list of candidates; the forwarder takes the first that connects, so failover needs
//! no special case anywhere else.
//!
//! Which addresses take traffic (active and passive health together, docs/operations.md):
//! an address must be usable by its health checks — UP, or UNKNOWN while no address of its
//! pool is in service, never DOWN — *and* not ejected by outlier detection. An ejected address
//! whose time is up is handed to exactly one request (the probe); the others skip it. When
//! every UP address of a pool is ejected, the UNKNOWN ones are tried as if nothing were UP.
use super::shard::{next_in_order, HashKind, Pick};
use crate::config::resilience::Hold;
use crate::health::Status;
use crate::resilience::pool_rt::PoolRuntime;
use crate::upstream::Upstream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    /// State that outlives the table: hold queue, retry budget, in-flight count.
    pub rt: Arc<PoolRuntime>,
    /// How requests wait when nothing is usable (SPEC §11).
    pub hold: Hold,
}

impl Pool {
    pub fn new(name: String, upstreams: Vec<Arc<Upstream>>) -> Self {
        Pool {
            name,
            upstreams,
            next: AtomicUsize::new(0),
            rt: Arc::default(),
            hold: Hold::default(),
        }
    }

    /// The same pool with its long-lived state and hold settings.
    pub fn with(mut self, rt: Arc<PoolRuntime>, hold: Hold) -> Self {
        self.rt = rt;
        self.hold = hold;
        self
    }

    /// Whether any address speaks HTTP/2 (`h2c` / `h2`).
    pub fn any_h2(&self) -> bool {
        self.upstreams.iter().any(|u| u.protocol.is_h2())
    }

    /// Whether any address could take a request now (in service, or usable UNKNOWN, or an
    /// ejected one whose time is up), without claiming a probe.
    pub fn has_usable(&self, now_ms: u64) -> bool {
        let tier = tier_of(&self.upstreams);
        self.upstreams.iter().any(|u| {
            usable_in(tier, u.status()) && {
                let until = u.outlier.ejected_until();
                until == 0 || now_ms >= until
            }
        })
    }

    /// Whether any address is UP by its checks (ejected or not): without one, a pool that
    /// failed to connect is starting, and holding for it makes sense.
    pub fn any_up(&self) -> bool {
        self.upstreams.iter().any(|u| u.status() == Status::Up)
    }

    /// The earliest end of an ejection in this pool, in Unix ms.
    pub fn next_return_ms(&self) -> Option<u64> {
        self.upstreams
            .iter()
            .map(|u| u.outlier.ejected_until())
            .filter(|t| *t != 0)
            .min()
    }

    /// Round robin over the pool's usable addresses (SPEC §6): the UP ones; only while none is
    /// UP, the UNKNOWN ones; never a DOWN one.
    pub fn candidates(&self) -> Candidates<'_> {
        let n = self.upstreams.len();
        let tier = tier_of(&self.upstreams);
        let start = if n > 1 {
            self.next.fetch_add(1, Relaxed) % n
        } else {
            0
        };
        Candidates {
            upstreams: &self.upstreams,
            order: Order::Rotate { start, step: 0 },
            tier,
        }
    }

    /// Like [`candidates`](Self::candidates) but from a fixed start (L4 `source_hash`): the
    /// same client keeps its address, and falls over to the next one in list order.
    pub fn candidates_from(&self, start: usize) -> Candidates<'_> {
        Candidates {
            upstreams: &self.upstreams,
            order: Order::Rotate {
                start: start % self.upstreams.len().max(1),
                step: 0,
            },
            tier: tier_of(&self.upstreams),
        }
    }

    /// The pods of a shard in its fixed failover order, skipping DOWN pods (an UNKNOWN pod
    /// keeps its keys: each pod is its own pool). With `reject`, only the first pod.
    pub fn shard_candidates(&self, kind: HashKind, pick: Pick, reject: bool) -> Candidates<'_> {
        Candidates {
            upstreams: &self.upstreams,
            order: Order::Shard {
                kind,
                pick,
                next: Some(pick.first),
                step: 0,
                reject,
            },
            tier: Status::Unknown,
        }
    }

    /// The ordinal of an upstream in this pool (a shard's pod number).
    pub fn ordinal_of(&self, u: &Arc<Upstream>) -> Option<u32> {
        self.upstreams
            .iter()
            .position(|x| Arc::ptr_eq(x, u))
            .map(|i| i as u32)
    }

    /// Peeks at the order without advancing round robin (for `switchyard route`).
    pub fn preview(&self) -> Candidates<'_> {
        Candidates {
            upstreams: &self.upstreams,
            order: Order::Rotate {
                start: self.next.load(Relaxed) % self.upstreams.len().max(1),
                step: 0,
            },
            tier: tier_of(&self.upstreams),
        }
    }
}

/// Which statuses a request may use in this pool right now: `Up` = only UP addresses (some
/// are in service); `Unknown` = UP or UNKNOWN (none is: nothing UP, or every UP one ejected).
pub fn tier_of(upstreams: &[Arc<Upstream>]) -> Status {
    if upstreams.iter().any(|u| u.in_service()) {
        Status::Up
    } else {
        Status::Unknown
    }
}

/// How long a probe handed to a request may stay unanswered before another request gets it
/// (the request was lost: its client went away before the backend answered).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether outlier detection lets a request use `u` now (see the module comment).
#[inline]
fn admitted(u: &Upstream) -> bool {
    use crate::resilience::outlier::Admit;
    if u.outlier.in_service() {
        return true;
    }
    u.outlier.admit(crate::clock::unix_ms(), PROBE_TIMEOUT) != Admit::Ejected
}

#[inline]
fn usable_in(tier: Status, s: Status) -> bool {
    match tier {
        Status::Up => s == Status::Up,
        _ => s != Status::Down,
    }
}

#[derive(Debug, Clone)]
enum Order {
    Rotate {
        start: usize,
        step: usize,
    },
    Shard {
        kind: HashKind,
        pick: Pick,
        next: Option<u32>,
        step: u32,
        reject: bool,
    },
}

/// An ordered iterator of the addresses a request may try.
#[derive(Debug, Clone)]
pub struct Candidates<'p> {
    upstreams: &'p [Arc<Upstream>],
    order: Order,
    tier: Status,
}

impl<'p> Iterator for Candidates<'p> {
    type Item = &'p Arc<Upstream>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.upstreams.len();
        match &mut self.order {
            Order::Rotate { start, step } => {
                while *step < n {
                    let u = &self.upstreams[(*start + *step) % n];
                    *step += 1;
                    if usable_in(self.tier, u.status()) && admitted(u) {
                        return Some(u);
                    }
                }
                None
            }
            Order::Shard {
                kind,
                pick,
                next,
                step,
                reject,
            } => loop {
                let o = (*next)?;
                *next = if *reject {
                    None
                } else {
                    next_in_order(*kind, pick, o, *step, n as u32)
                };
                *step += 1;
                let u = self.upstreams.get(o as usize)?;
                if u.status() != Status::Down && admitted(u) {
                    return Some(u);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::address::parse;

    fn up(addr: &str, s: Status) -> Arc<Upstream> {
        let u = Upstream::new(parse(addr, false).unwrap(), Some("/h".into()));
        u.health.set_status(s);
        Arc::new(u)
    }

    fn labels(c: Candidates<'_>) -> Vec<String> {
        c.map(|u| u.label.to_string()).collect()
    }

    #[test]
    fn round_robin_rotates_over_up() {
        let p = Pool::new(
            "p".into(),
            vec![
                up("10.0.0.1:1", Status::Up),
                up("10.0.0.2:1", Status::Down),
                up("10.0.0.3:1", Status::Up),
            ],
        );
        assert_eq!(labels(p.candidates()), ["10.0.0.1:1", "10.0.0.3:1"]);
        assert_eq!(labels(p.candidates()), ["10.0.0.3:1", "10.0.0.1:1"]);
        assert_eq!(labels(p.candidates()), ["10.0.0.3:1", "10.0.0.1:1"]);
        assert_eq!(labels(p.candidates()), ["10.0.0.1:1", "10.0.0.3:1"]);
    }

    #[test]
    fn shard_order_skips_down_pods_and_reject_stops() {
        let p = Pool::new(
            "g".into(),
            vec![
                up("10.0.0.1:1", Status::Up),
                up("10.0.0.2:1", Status::Down),
                up("10.0.0.3:1", Status::Unknown),
            ],
        );
        let pick = Pick {
            first: 1,
            key_hash: 0,
        };
        assert_eq!(
            labels(p.shard_candidates(HashKind::Md5, pick, false)),
            ["10.0.0.3:1", "10.0.0.1:1"]
        );
        assert!(labels(p.shard_candidates(HashKind::Md5, pick, true)).is_empty());
        let pick = Pick {
            first: 2,
            key_hash: 0,
        };
        assert_eq!(
            labels(p.shard_candidates(HashKind::Md5, pick, true)),
            ["10.0.0.3:1"]
        );
    }

    fn eject(u: &Upstream, now: u64) {
        use crate::resilience::outlier::{Outcome, OutlierConfig};
        let c = OutlierConfig {
            consecutive_failures: 1,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        u.outlier
            .report(Outcome::Failure, now, &c, [&u.outlier].into_iter());
        assert!(!u.outlier.in_service());
    }

    #[test]
    fn ejected_addresses_are_skipped_until_their_probe() {
        let p = Pool::new(
            "p".into(),
            vec![
                up("10.0.0.1:1", Status::Up),
                up("10.0.0.2:1", Status::Up),
                up("10.0.0.3:1", Status::Unknown),
            ],
        );
        let now = crate::clock::unix_ms();
        eject(&p.upstreams[0], now);
        for _ in 0..4 {
            assert_eq!(labels(p.candidates()), ["10.0.0.2:1"]);
        }
        // Every UP address ejected: the UNKNOWN one is tried, as if nothing were UP.
        eject(&p.upstreams[1], now);
        assert_eq!(labels(p.candidates()), ["10.0.0.3:1"]);
        // Time up (ejected long ago): exactly one request gets the probe.
        let q = Pool::new("q".into(), vec![up("10.0.0.4:1", Status::Up)]);
        eject(&q.upstreams[0], 1);
        assert_eq!(labels(q.candidates()), ["10.0.0.4:1"]);
        assert!(labels(q.candidates()).is_empty());
        // A shard pod that is ejected is skipped for the next in the failover order.
        let s = Pool::new(
            "g".into(),
            vec![up("10.0.0.5:1", Status::Up), up("10.0.0.6:1", Status::Up)],
        );
        eject(&s.upstreams[0], now);
        let pick = Pick {
            first: 0,
            key_hash: 0,
        };
        assert_eq!(
            labels(s.shard_candidates(HashKind::Md5, pick, false)),
            ["10.0.0.6:1"]
        );
        assert!(labels(s.shard_candidates(HashKind::Md5, pick, true)).is_empty());
    }

    #[test]
    fn unknown_only_while_nothing_is_up() {
        let p = Pool::new(
            "p".into(),
            vec![
                up("10.0.0.1:1", Status::Unknown),
                up("10.0.0.2:1", Status::Up),
            ],
        );
        assert_eq!(labels(p.candidates()), ["10.0.0.2:1"]);
        p.upstreams[1].health.set_status(Status::Down);
        assert_eq!(labels(p.candidates()), ["10.0.0.1:1"]);
        p.upstreams[0].health.set_status(Status::Down);
        assert!(labels(p.candidates()).is_empty());
    }
}
