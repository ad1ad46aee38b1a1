//! Pools of upstreams and the order in which a request tries them. Every policy yields an
//! ordered list of candidates; the forwarder takes the first that connects, so failover needs
//! no special case anywhere else.
use super::shard::{next_in_order, HashKind, Pick};
use crate::health::Status;
use crate::upstream::Upstream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(name: String, upstreams: Vec<Arc<Upstream>>) -> Self {
        Pool {
            name,
            upstreams,
            next: AtomicUsize::new(0),
        }
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

/// Which status a request may use in this pool right now.
pub fn tier_of(upstreams: &[Arc<Upstream>]) -> Status {
    if upstreams.iter().any(|u| u.status() == Status::Up) {
        Status::Up
    } else {
        Status::Unknown
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
                    if u.status() == self.tier {
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
                if u.status() != Status::Down {
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
