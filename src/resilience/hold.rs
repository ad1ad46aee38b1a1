//! Holding requests through a cold start (SPEC §11 `hold_timeout`, `hold_max`): when a pool has
//! no usable address, a request may wait for one to turn UP instead of an immediate 503.
//!
//! The wait is woken by the health cells themselves: each cell has a `tokio::sync::Notify`
//! that its checker fires on the transition to UP, and a waiter listens on every cell of its
//! pool at once. Nothing polls. The number of waiters per pool is bounded by a
//! compare-exchange on one counter; a waiter holds no upstream connection or buffer of ours
//! beyond its own request.
use crate::health::HealthCell;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// How long and how many requests may wait for a pool to get a usable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// 0 = no holding: 503 at once.
    pub timeout: Duration,
    pub max: u32,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            timeout: Duration::ZERO,
            max: 100,
        }
    }
}

/// A pool's own `hold_timeout` / `hold_max`; what it leaves out comes from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldOverride {
    pub timeout: Option<Duration>,
    pub max: Option<u32>,
}

impl HoldOverride {
    pub fn over(self, server: Hold) -> Hold {
        Hold {
            timeout: self.timeout.unwrap_or(server.timeout),
            max: self.max.unwrap_or(server.max),
        }
    }
}

/// Per-pool waiting room and its counters.
#[derive(Debug, Default)]
pub struct HoldQueue {
    waiting: AtomicU32,
    /// Requests that waited and got an address.
    pub served: AtomicU64,
    pub timed_out: AtomicU64,
    pub overflowed: AtomicU64,
}

/// One place in the queue; leaving it (by drop) frees the place.
#[derive(Debug)]
pub struct Place<'q>(&'q HoldQueue);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

impl HoldQueue {
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Relaxed)
    }

    /// A place if fewer than `max` wait already; None (counted as an overflow) if not.
    pub fn enter(&self, max: u32) -> Option<Place<'_>> {
        let mut n = self.waiting.load(Relaxed);
        loop {
            if n >= max {
                self.overflowed.fetch_add(1, Relaxed);
                return None;
            }
            match self
                .waiting
                .compare_exchange_weak(n, n + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(Place(self)),
                Err(now) => n = now,
            }
        }
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// `usable()` became true (after a cell of the pool turned UP, or at once).
    Ready,
    TimedOut,
}

/// Waits until `usable()` holds, re-checking it each time one of `cells` turns UP, and at
/// the instant `recheck_at()` names (the end of an ejection, which no cell announces), for at
/// most `timeout`. The listeners are registered before each check, so a transition between
/// check and wait is not lost.
pub async fn wait_until<'c>(
    queue: &HoldQueue,
    cells: impl Iterator<Item = &'c HealthCell> + Clone,
    timeout: Duration,
    mut usable: impl FnMut() -> bool,
    mut recheck_at: impl FnMut() -> Option<Instant>,
) -> Held {
    let deadline = Instant::now() + timeout;
    loop {
        let mut notified: Vec<_> = cells.clone().map(|c| Box::pin(c.became_up())).collect();
        for n in &mut notified {
            // Registers the listener now (tokio's `enable`), not at the first poll.
            n.as_mut().enable();
        }
        if usable() {
            queue.served.fetch_add(1, Relaxed);
            return Held::Ready;
        }
        let any = std::future::poll_fn(|cx| {
            if notified.iter_mut().any(|n| n.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let wake = recheck_at().map_or(deadline, |t| t.min(deadline));
        if tokio::time::timeout_at(wake, any).await.is_err() && wake >= deadline {
            if usable() {
                queue.served.fetch_add(1, Relaxed);
                return Held::Ready;
            }
            queue.timed_out.fetch_add(1, Relaxed);
            return Held::TimedOut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;
    use std::sync::Arc;

    #[test]
    fn places_are_bounded_and_freed() {
        let q = HoldQueue::default();
        let a = q.enter(2);
        let b = q.enter(2);
        assert!(a.is_some() && b.is_some());
        assert!(q.enter(2).is_none());
        assert_eq!(q.overflowed.load(Relaxed), 1);
        assert_eq!(q.waiting(), 2);
        drop(a);
        assert_eq!(q.waiting(), 1);
        assert!(q.enter(2).is_some());
        assert!(q.enter(0).is_none());
    }

    // Real time, short spans: tokio's paused clock needs its test-util feature, which would
    // change the feature set (and rebuild) of every crate that depends on tokio.
    #[tokio::test]
    async fn a_transition_to_up_wakes_the_waiter() {
        let q = Arc::new(HoldQueue::default());
        let cells = Arc::new([HealthCell::new(Status::Down), HealthCell::new(Status::Down)]);
        let (q2, c2) = (q.clone(), cells.clone());
        let waiter = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let r = wait_until(
                &q2,
                c2.iter(),
                Duration::from_secs(20),
                || c2.iter().any(|c| c.status() == Status::Up),
                || None,
            )
            .await;
            (r, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A change that is not to UP does not end the wait.
        cells[0].set_status_at(Status::Unknown, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        cells[1].set_status_at(Status::Up, 2);
        let (r, took) = waiter.await.unwrap();
        assert_eq!(r, Held::Ready);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "woken at the transition, not by a timer: {took:?}"
        );
        assert_eq!(q.served.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn the_wait_times_out() {
        let q = HoldQueue::default();
        let cell = HealthCell::new(Status::Down);
        let start = tokio::time::Instant::now();
        let r = wait_until(
            &q,
            [&cell].into_iter(),
            Duration::from_millis(150),
            || false,
            || None,
        )
        .await;
        assert_eq!(r, Held::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(q.timed_out.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn usable_at_once_does_not_wait() {
        let q = HoldQueue::default();
        let cell = HealthCell::new(Status::Up);
        let r = wait_until(&q, [&cell].into_iter(), Duration::ZERO, || true, || None).await;
        assert_eq!(r, Held::Ready);
    }

    #[tokio::test]
    async fn the_end_of_an_ejection_is_checked_at_its_time() {
        let q = HoldQueue::default();
        let cell = HealthCell::new(Status::Up);
        let start = Instant::now();
        let free_at = start + Duration::from_millis(200);
        let r = wait_until(
            &q,
            [&cell].into_iter(),
            Duration::from_secs(20),
            || Instant::now() >= free_at,
            || Some(free_at),
        )
        .await;
        assert_eq!(r, Held::Ready);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}
