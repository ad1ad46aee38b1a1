//! Idle keep-alive connections to one backend address. A lock-free bounded queue per worker
//! (`workers.rs`): a checkout never waits on another worker, a connection is handed to one
//! request at a time, and with per-core workers a backend socket stays with the event loop it
//! is registered with (taken from another, its readiness would arrive on that worker's thread
//! and cost a cross-thread wakeup per read).
use crate::proxy::stream::BackendStream;
use crossbeam_queue::ArrayQueue;
use std::time::{Duration, Instant};

/// Idle connections kept per address; beyond this a released connection is closed.
pub const IDLE_PER_ADDRESS: usize = 256;

#[derive(Debug)]
pub struct IdlePool {
    /// One queue per worker, `IDLE_PER_ADDRESS` shared out between them.
    queues: Box<[ArrayQueue<(BackendStream, Instant)>]>,
}

impl Default for IdlePool {
    fn default() -> Self {
        Self::new()
    }
}

impl IdlePool {
    pub fn new() -> Self {
        let n = crate::workers::count().max(1);
        let each = (IDLE_PER_ADDRESS / n).max(16);
        IdlePool {
            queues: (0..n).map(|_| ArrayQueue::new(each)).collect(),
        }
    }

    fn mine(&self) -> &ArrayQueue<(BackendStream, Instant)> {
        &self.queues[crate::workers::current() % self.queues.len()]
    }

    /// Takes an idle connection that is still open and was idle less than `max_idle` at
    /// `now` (the caller's recent clock read: the request's arrival). Connections the backend
    /// closed (readable EOF) or that hold unexpected bytes are dropped.
    pub fn checkout(&self, max_idle: Duration, now: Instant) -> Option<BackendStream> {
        while let Some((mut stream, since)) = self.mine().pop() {
            if now.saturating_duration_since(since) < max_idle && stream.still_idle() {
                return Some(stream);
            }
        }
        None
    }

    /// Returns a connection for reuse, idle since `since`; closes it if the pool is full.
    pub fn release(&self, stream: BackendStream, since: Instant) {
        if let BackendStream::H2(_) = stream {
            // An HTTP/2 stream is done once answered; its connection stays in `h2pool`.
            return;
        }
        let _ = self.mine().push((stream, since));
    }

    pub fn len(&self) -> usize {
        self.queues.iter().map(ArrayQueue::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(ArrayQueue::is_empty)
    }
}
