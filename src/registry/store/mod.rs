//! Where registrations live, behind one trait so the rest of switchyard does not know which
//! store is in use: the embedded file store (default) or, later, etcd.
pub mod file;

use super::Registration;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

pub trait Store: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Every stored registration.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>>;
    /// Stores `reg` (replacing a registration of the same service); `all` is the whole
    /// registry after the change, for stores that write it at once. Returns once durable.
    fn put<'a>(
        &'a self,
        reg: &'a Registration,
        all: &'a [Registration],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Removes a service; `all` is the registry after the removal.
    fn delete<'a>(
        &'a self,
        service: &'a str,
        all: &'a [Registration],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}
