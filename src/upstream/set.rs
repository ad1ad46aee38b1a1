//! The control plane's index of upstreams, keyed by address and health endpoint, so that a
//! rebuilt table points at the same cells and health survives reloads and registrations.
use super::protocol::Protocol;
use super::Upstream;
use crate::config::address::Address;
use crate::resilience::pool_rt::PoolRuntime;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Address, health endpoint, and the TLS settings' fingerprint (a backend reached over TLS
/// is another upstream than the same address in clear).
type Key = (Address, Option<String>, Option<[u8; 32]>, Protocol);

#[derive(Debug, Default)]
pub struct UpstreamSet {
    inner: Mutex<Inner>,
    /// Per-rule counters by stable rule id, kept across rebuilds the same way.
    pub rule_stats: crate::metrics::keep::StatsKeep,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Arc<Upstream>>,
    fresh: Vec<Arc<Upstream>>,
    /// Per-pool runtime state by pool name (hold queue, retry budget, in-flight).
    pools: HashMap<String, Arc<PoolRuntime>>,
}

impl UpstreamSet {
    /// The upstream for this address and endpoint, created (and remembered as fresh, for the
    /// health checker to pick up) if new.
    pub fn get(&self, address: &Address, endpoint: Option<&str>) -> Arc<Upstream> {
        self.get_tls(address, endpoint, None)
    }

    /// `get` for an upstream that may be reached over TLS.
    pub fn get_tls(
        &self,
        address: &Address,
        endpoint: Option<&str>,
        tls: Option<&Arc<crate::tls::client::BackendTls>>,
    ) -> Arc<Upstream> {
        self.get_proto(address, endpoint, tls, Protocol::Http1)
    }

    /// `get_tls` for a backend of this protocol. An `h2` backend without TLS settings (a
    /// shard) is verified against the system's roots.
    pub fn get_proto(
        &self,
        address: &Address,
        endpoint: Option<&str>,
        tls: Option<&Arc<crate::tls::client::BackendTls>>,
        protocol: Protocol,
    ) -> Arc<Upstream> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            address.clone(),
            endpoint.map(str::to_string),
            tls.map(|t| t.fingerprint),
            protocol,
        );
        if let Some(u) = inner.map.get(&key) {
            return u.clone();
        }
        let mut u = Upstream::new(address.clone(), endpoint.map(str::to_string));
        u.tls = tls.cloned();
        u.protocol = protocol;
        if protocol == Protocol::H2 && u.tls.is_none() {
            u.tls = crate::tls::client::BackendTls::new(None, None)
                .ok()
                .map(Arc::new);
        }
        let u = Arc::new(u);
        inner.map.insert(key, u.clone());
        inner.fresh.push(u.clone());
        u
    }

    /// Forgets every upstream the newest table does not use (their checkers then stop).
    pub fn retain(&self, used: &[Arc<Upstream>]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .retain(|_, u| used.iter().any(|x| Arc::ptr_eq(x, u)));
        inner
            .fresh
            .retain(|u| used.iter().any(|x| Arc::ptr_eq(x, u)));
    }

    /// The runtime state of the pool called `name`, the same one every table gets.
    pub fn pool_runtime(&self, name: &str) -> Arc<PoolRuntime> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.pools.entry(name.to_string()).or_default().clone()
    }

    /// Forgets the runtime state of pools the newest table does not have.
    pub fn retain_pools(&self, names: &HashSet<&str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.pools.retain(|n, _| names.contains(n.as_str()));
    }

    /// Upstreams created since the last call.
    pub fn take_fresh(&self) -> Vec<Arc<Upstream>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut inner.fresh)
    }

    pub fn all(&self) -> Vec<Arc<Upstream>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = inner.map.values().cloned().collect();
        v.sort_by(|a, b| a.label.cmp(&b.label));
        v
    }
}
