//! The health-check state machine of SPEC §6 as pure code: results in, transitions and the
//! delay until the next check out. No clock of its own: callers (and tests) supply time.
use super::Status;
use crate::config::Gateway;
use std::time::Duration;

/// HAProxy's names for the same knobs, for the docs: `inter`, `fall`, `downinter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub down_interval: Duration,
    pub stop_after: u32,
}

impl From<&Gateway> for Timings {
    fn from(g: &Gateway) -> Self {
        Timings {
            interval: g.health_check_interval,
            timeout: g.health_check_timeout,
            fall: g.max_consecutive_failures,
            down_interval: g.down_check_interval,
            stop_after: g.stop_ping_after_failures,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub status: Status,
    pub failures: u32,
    pub stopped: bool,
}

/// A status change caused by one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            status: Status::Unknown,
            failures: 0,
            stopped: false,
        }
    }
}

impl Machine {
    /// Resumes from a cell's current status (after a restart of checking).
    pub fn resume(status: Status) -> Self {
        Machine {
            status,
            failures: 0,
            stopped: false,
        }
    }

    /// Applies one check result.
    pub fn record(&mut self, success: bool, t: &Timings) -> Option<Transition> {
        let from = self.status;
        if success {
            self.failures = 0;
            self.status = Status::Up;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.status != Status::Down && self.failures >= t.fall {
                self.status = Status::Down;
            }
            if self.failures >= t.stop_after {
                self.stopped = true;
            }
        }
        (from != self.status).then_some(Transition {
            from,
            to: self.status,
        })
    }

    /// How long until the next check; None once checking has stopped.
    pub fn next_delay(&self, t: &Timings) -> Option<Duration> {
        if self.stopped {
            None
        } else if self.status == Status::Down {
            Some(t.down_interval)
        } else {
            Some(t.interval)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timings {
        Timings {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            fall: 3,
            down_interval: Duration::from_secs(120),
            stop_after: 10,
        }
    }

    /// Runs results through the machine on a fake clock; returns (time of each check, status after).
    fn simulate(results: &[bool]) -> Vec<(u64, Status)> {
        let mut m = Machine::default();
        let mut now = Duration::ZERO; // the first check runs at once
        let mut out = Vec::new();
        for ok in results {
            m.record(*ok, &t());
            out.push((now.as_secs(), m.status));
            match m.next_delay(&t()) {
                Some(d) => now += d,
                None => break,
            }
        }
        out
    }

    #[test]
    fn first_success_is_up() {
        let mut m = Machine::default();
        assert_eq!(
            m.record(true, &t()),
            Some(Transition {
                from: Status::Unknown,
                to: Status::Up
            })
        );
        assert_eq!(m.record(true, &t()), None);
        assert_eq!(m.next_delay(&t()), Some(Duration::from_secs(30)));
    }

    #[test]
    fn down_at_exactly_fall_failures_then_slower() {
        let r = simulate(&[true, false, false, false, false]);
        assert_eq!(
            r,
            vec![
                (0, Status::Up),
                (30, Status::Up),
                (60, Status::Up),
                (90, Status::Down),
                (210, Status::Down)
            ]
        );
    }

    #[test]
    fn unknown_goes_down_too() {
        let r = simulate(&[false, false, false]);
        assert_eq!(r.last(), Some(&(60, Status::Down)));
    }

    #[test]
    fn one_success_recovers_and_resets() {
        let mut m = Machine::default();
        for _ in 0..3 {
            m.record(false, &t());
        }
        assert_eq!(m.status, Status::Down);
        assert_eq!(
            m.record(true, &t()),
            Some(Transition {
                from: Status::Down,
                to: Status::Up
            })
        );
        assert_eq!(m.failures, 0);
        assert_eq!(m.next_delay(&t()), Some(Duration::from_secs(30)));
        m.record(false, &t());
        assert_eq!(
            m.status,
            Status::Up,
            "one failure after recovery is not DOWN"
        );
    }

    #[test]
    fn stops_after_stop_after_failures() {
        let r = simulate(&[false; 20]);
        assert_eq!(r.len(), 10, "exactly stop_ping_after_failures checks");
        let mut m = Machine::default();
        for _ in 0..10 {
            m.record(false, &t());
        }
        assert!(m.stopped);
        assert_eq!(m.next_delay(&t()), None);
        let mut again = Machine::resume(m.status);
        assert_eq!(again.next_delay(&t()), Some(Duration::from_secs(120)));
        again.record(true, &t());
        assert_eq!(again.status, Status::Up);
    }
}
