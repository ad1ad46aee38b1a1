//! Idle keep-alive connections to one backend address. A lock-free bounded queue: a checkout
//! never waits on another worker, and a connection is handed to one request at a time.
use crate::proxy::stream::BackendStream;
use crossbeam_queue::ArrayQueue;
use std::time::{Duration, Instant};

/// Idle connections kept per address; beyond this a released connection is closed.
pub const IDLE_PER_ADDRESS: usize = 256;

#[derive(Debug)]
pub struct IdlePool {
    queue: ArrayQueue<(BackendStream, Instant)>,
}

impl Default for IdlePool {
    fn default() -> Self {
        Self::new()
    }
}

impl IdlePool {
    pub fn new() -> Self {
        IdlePool {
            queue: ArrayQueue::new(IDLE_PER_ADDRESS),
        }
    }

    /// Takes an idle connection that is still open and was idle less than `max_idle` at
    /// `now` (the caller's recent clock read: the request's arrival). Connections the backend
    /// closed (readable EOF) or that hold unexpected bytes are dropped.
    pub fn checkout(&self, max_idle: Duration, now: Instant) -> Option<BackendStream> {
        while let Some((mut stream, since)) = self.queue.pop() {
            if now.saturating_duration_since(since) < max_idle && stream.still_idle() {
                return Some(stream);
            }
        }
        None
    }

    /// Returns a connection for reuse; closes it if the pool is full.
    pub fn release(&self, stream: BackendStream) {
        if let BackendStream::H2(_) = stream {
            // An HTTP/2 stream is done once answered; its connection stays in `h2pool`.
            return;
        }
        let _ = self.queue.push((stream, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
