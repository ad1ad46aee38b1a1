//! One re-armable timer per connection for the waits of its hot path (the keep-alive wait, the
//! request head, the backend's answer head). A tokio timer costs a wheel insertion and removal
//! each time one is built, and a driver wake-up (an eventfd write) whenever its deadline is
//! earlier than every other one; most deadlines on a keep-alive connection only move later, so
//! [`Timer`] keeps its timer armed at an earlier deadline and moves it only when it fires
//! before the current one, or when a new deadline is earlier than where it is armed (as nginx
//! and HAProxy keep their connection timers). A wait still ends exactly at its own deadline.
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use tokio::time::{sleep_until, Instant, Sleep};

/// How a wait is bounded: a per-connection [`Timer`], or a fresh tokio timer ([`Fresh`]) for
/// the callers that wait once.
pub(crate) trait Wait {
    /// Runs `f` until it completes (Some) or `at` passes (None).
    fn until<F: Future>(&mut self, at: Instant, f: F) -> impl Future<Output = Option<F::Output>>;
}

/// A new tokio timer per wait.
pub(crate) struct Fresh;

impl Wait for Fresh {
    async fn until<F: Future>(&mut self, at: Instant, f: F) -> Option<F::Output> {
        tokio::time::timeout_at(at, f).await.ok()
    }
}

/// A connection's timer; allocated the first time a wait has to block.
#[derive(Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// Where the timer is armed (it may have fired there already).
    armed: Option<Instant>,
}

impl Timer {
    /// Polls the timer for a wait that ends at `at`: Ready once `at` has passed. Re-arms only
    /// when the armed time is later than `at`, or when it fired before `at`.
    fn poll_at(&mut self, cx: &mut std::task::Context<'_>, at: Instant) -> Poll<()> {
        loop {
            let fresh = self.sleep.is_none();
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
            if fresh || self.armed.is_none_or(|armed| armed > at) {
                if !fresh {
                    sleep.as_mut().reset(at);
                }
                self.armed = Some(at);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.armed >= Some(at) => return Poll::Ready(()),
                // It fired at an earlier deadline than this wait's: move it to this one.
                Poll::Ready(()) => self.armed = None,
            }
        }
    }
}

impl Wait for Timer {
    async fn until<F: Future>(&mut self, at: Instant, f: F) -> Option<F::Output> {
        let mut f = pin!(f);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            self.poll_at(cx, at).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn ends_at_its_own_deadline_whatever_was_armed_before() {
        let mut t = Timer::default();
        let start = Instant::now();
        // A first wait that has to block arms the timer at +100 ms.
        let quick = tokio::time::sleep(10 * MS);
        assert_eq!(t.until(start + 100 * MS, quick).await, Some(()));
        assert_eq!(t.armed, Some(start + 100 * MS));
        // A later deadline keeps that arming (it fires early, then moves); the wait still
        // lasts until +300 ms.
        let r = t
            .until(start + 300 * MS, std::future::pending::<()>())
            .await;
        assert_eq!(r, None);
        assert!(Instant::now() >= start + 300 * MS);
        assert_eq!(t.armed, Some(start + 300 * MS));
        // An earlier deadline than the armed one re-arms at once.
        t.armed = Some(Instant::now() + Duration::from_secs(3600));
        let now = Instant::now();
        let r = t.until(now + 50 * MS, std::future::pending::<()>()).await;
        assert_eq!(r, None);
        let took = Instant::now() - now;
        assert!(
            took >= 50 * MS && took < Duration::from_secs(30),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_wait_that_completes_returns_its_value_and_a_past_arming_ends_nothing_early() {
        let mut t = Timer::default();
        let slow = async {
            tokio::time::sleep(10 * MS).await;
            7
        };
        assert_eq!(t.until(Instant::now() + 50 * MS, slow).await, Some(7));
        // The timer, armed at +50 ms, fires during the next wait; that wait goes on.
        let took = Instant::now();
        let slow = async {
            tokio::time::sleep(150 * MS).await;
            8
        };
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(t.until(later, slow).await, Some(8));
        assert!(Instant::now() - took >= 150 * MS);
        assert_eq!(t.armed, Some(later));
        assert_eq!(
            Fresh
                .until(Instant::now(), std::future::pending::<()>())
                .await,
            None
        );
    }
}
