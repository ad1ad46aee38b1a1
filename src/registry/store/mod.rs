//! Where registrations live, behind one trait so the rest of switchyard does not know which
//! store is in use: the embedded file store (default) or, later, etcd.
pub mod etcd;
pub mod file;
pub mod mirror;

use super::Registration;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A conflict check the store runs against its own, current view of the other services (for
/// stores shared by several writers, inside the write's transaction).
pub type ConflictCheck<'a> =
    &'a (dyn Fn(&Registration, &[Registration]) -> Option<String> + Send + Sync);

/// What a store failed at; `Unavailable` answers registrations with 503.
#[derive(Debug)]
pub enum StoreError {
    Unavailable(String),
    /// A conflicting route was stored concurrently by another writer (409).
    Conflict(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m) | StoreError::Conflict(m) => f.write_str(m),
        }
    }
}

/// How often a shared store was read, for `/metrics`: whole-table loads and the cheap
/// "anything changed?" checks of the periodic refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub full_loads: u64,
    pub refresh_checks: u64,
}

pub trait Store: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Every stored registration.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>>;
    /// Stores `reg` (replacing a registration of the same service) once `check` finds no
    /// conflict in the store's own view; `all` is the whole registry after the change, for
    /// stores that write it at once. Returns once durable.
    fn put<'a>(
        &'a self,
        reg: &'a Registration,
        all: &'a [Registration],
        check: ConflictCheck<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes a service; `all` is the registry after the removal.
    fn delete<'a>(
        &'a self,
        service: &'a str,
        all: &'a [Registration],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The store's part of `GET /health` (`kind` and whatever else it can tell).
    fn health(&self) -> serde_json::Value;
    /// Unix ms of the last successful sync with a shared store; 0 when not applicable.
    fn last_sync_ms(&self) -> u64 {
        0
    }
    /// Read counters of a shared store; None for the file store.
    fn read_counts(&self) -> Option<ReadCounts> {
        None
    }
}
