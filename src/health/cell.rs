//! The per-address health cell: atomics written by one checker and read by the data plane and
//! the admin listener without locks.
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "UNKNOWN",
            Status::Up => "UP",
            Status::Down => "DOWN",
        }
    }
}

#[derive(Debug, Default)]
pub struct HealthCell {
    status: AtomicU8,
    failures: AtomicU32,
    /// Unix time of the last completed check in milliseconds; 0 = never.
    last_check_ms: AtomicU64,
    /// Duration of the last successful check in microseconds.
    response_us: AtomicU64,
    /// Whether checking has stopped after `stop_ping_after_failures`.
    stopped: AtomicU8,
    /// A checker task is running for this cell.
    checking: AtomicU8,
    /// Unix ms since when the status is UP; 0 when it is not.
    up_since_ms: AtomicU64,
    checks_ok: AtomicU64,
    checks_failed: AtomicU64,
    /// Fired on every transition to UP: requests held through a cold start wait on it
    /// (`resilience::hold`) instead of polling the status.
    up: tokio::sync::Notify,
}

impl HealthCell {
    pub fn new(initial: Status) -> Self {
        let c = HealthCell::default();
        c.status.store(initial as u8, Relaxed);
        c
    }

    #[inline]
    pub fn status(&self) -> Status {
        match self.status.load(Relaxed) {
            1 => Status::Up,
            2 => Status::Down,
            _ => Status::Unknown,
        }
    }

    pub fn set_status(&self, s: Status) {
        self.status.store(s as u8, Relaxed);
    }

    pub fn failures(&self) -> u32 {
        self.failures.load(Relaxed)
    }

    pub fn set_failures(&self, n: u32) {
        self.failures.store(n, Relaxed);
    }

    pub fn last_check_ms(&self) -> u64 {
        self.last_check_ms.load(Relaxed)
    }

    pub fn response_us(&self) -> u64 {
        self.response_us.load(Relaxed)
    }

    pub fn record_check(&self, unix_ms: u64, response_us: Option<u64>) {
        self.last_check_ms.store(unix_ms, Relaxed);
        if let Some(us) = response_us {
            self.response_us.store(us, Relaxed);
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Relaxed) != 0
    }

    /// Claims the right to run the checker; false if one is already running.
    pub fn try_start_checking(&self) -> bool {
        let started = self.checking.swap(1, Relaxed) == 0;
        if started {
            self.set_stopped(false);
        }
        started
    }

    pub fn stop_checking(&self) {
        self.checking.store(0, Relaxed);
    }

    /// Sets the status and when it changed (for uptime).
    pub fn set_status_at(&self, s: Status, unix_ms: u64) {
        let was = self.status.swap(s as u8, Relaxed);
        self.up_since_ms
            .store(if s == Status::Up { unix_ms.max(1) } else { 0 }, Relaxed);
        if s == Status::Up && was != Status::Up as u8 {
            self.up.notify_waiters();
        }
    }

    /// Resolves at the next transition to UP (a listener created before the transition sees
    /// it even if it was not polled yet).
    pub fn became_up(&self) -> tokio::sync::futures::Notified<'_> {
        self.up.notified()
    }

    /// Unix ms since the address is UP, 0 if it is not.
    pub fn up_since_ms(&self) -> u64 {
        self.up_since_ms.load(Relaxed)
    }

    pub fn count_check(&self, ok: bool) {
        if ok {
            self.checks_ok.fetch_add(1, Relaxed);
        } else {
            self.checks_failed.fetch_add(1, Relaxed);
        }
    }

    /// (successful, failed) checks so far.
    pub fn checks(&self) -> (u64, u64) {
        (
            self.checks_ok.load(Relaxed),
            self.checks_failed.load(Relaxed),
        )
    }

    pub fn set_stopped(&self, v: bool) {
        self.stopped.store(u8::from(v), Relaxed);
    }
}
