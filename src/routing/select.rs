//! Pools of upstreams and the order in which a request tries them. Every policy yields an
//! ordered list of candidates; the forwarder takes the first that connects, so failover needs
//! no special case anywhere else.
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
    Rotate { start: usize, step: usize },
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
