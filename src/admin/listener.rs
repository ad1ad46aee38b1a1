//! The admin listener's accept loop: a connection limit of its own, and at that limit a new
//! connection evicts the oldest one that is still sending its request (or lingering after
//! its answer). Idle or slow connections therefore cannot keep an orchestrator's `/ready`
//! probe out: 1,000 idle sockets cost the probe nothing but an eviction.
use crate::state::Shared;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Admin connections served at once. Each request is small and answered at once; what
/// stays open beyond that is idle, slow or lingering, and evictable.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections that may be closed to make room, oldest first.
#[derive(Default)]
pub struct Evictable {
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next_id: AtomicU64,
}

impl Evictable {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection's slot, not yet evictable.
    pub fn slot(self: &Arc<Self>) -> Slot {
        Slot {
            id: self.next_id.fetch_add(1, Relaxed),
            notify: Arc::new(Notify::new()),
            set: self.clone(),
        }
    }

    /// Tells the oldest evictable connection to close; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, n)) => {
                // notify_one keeps the wake-up if the task is not waiting yet.
                n.notify_one();
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's place in the eviction queue.
pub struct Slot {
    id: u64,
    notify: Arc<Notify>,
    set: Arc<Evictable>,
}

impl Slot {
    /// From now on this connection may be closed to make room (it is waiting on the peer).
    pub fn evictable(&self) {
        let mut q = self.set.lock();
        if !q.iter().any(|(id, _)| *id == self.id) {
            q.push_back((self.id, self.notify.clone()));
        }
    }

    /// From now on it is doing work that must finish (answering).
    pub fn busy(&self) {
        self.set.lock().retain(|(id, _)| *id != self.id);
    }

    /// Resolves when this connection was chosen for eviction.
    pub async fn evicted(&self) {
        self.notify.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
    }
}

/// Accepts admin connections until the process ends (the admin port keeps answering `/ready`
/// with 503 while draining).
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let evictable = Arc::new(Evictable::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if crate::fdlimit::is_exhaustion(&e) {
                    crate::fdlimit::count(crate::fdlimit::Site::Accept);
                }
                log::warn!("admin accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the limit: make room. With nothing evictable (every connection is
                // busy answering, each within a bounded time) wait like the data port does.
                evictable.evict_oldest();
                match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let slot = evictable.slot();
        let shared = shared.clone();
        tokio::spawn(async move {
            super::serve(shared, stream, peer, slot).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn oldest_evictable_goes_first_and_busy_ones_never() {
        let set = Arc::new(Evictable::default());
        let (a, b, c) = (set.slot(), set.slot(), set.slot());
        a.evictable();
        b.evictable();
        c.evictable();
        a.busy();
        assert_eq!(set.len(), 2);
        assert!(set.evict_oldest());
        // b was chosen: its wake-up is kept even though nobody waited yet.
        tokio::time::timeout(Duration::from_secs(1), b.evicted())
            .await
            .expect("b evicted");
        assert!(tokio::time::timeout(Duration::from_millis(20), c.evicted())
            .await
            .is_err());
        drop(c);
        assert!(set.is_empty());
        assert!(!set.evict_oldest());
        drop(a);
    }
}
