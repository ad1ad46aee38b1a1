//! The fleet store: registrations in etcd, one key per service under the prefix. Writes are
//! transactions guarded by the prefix's revision, so two replicas cannot store clashing routes.
use super::mirror::Mirror;
use super::{BoxFuture, ConflictCheck, ReadCounts, Store, StoreError};
use crate::etcd::client::{compare_mod_revision, prefix_end, put_op};
use crate::etcd::pb::etcdserverpb::compare::CompareResult;
use crate::etcd::{Client, ConnectOptions};
use crate::registry::{parse_registration, Registration};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Each etcd call gives up after this, so a registration answers 503 instead of hanging.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Retries of a registration whose transaction lost a race to another writer.
const TXN_ATTEMPTS: usize = 8;

/// What a replica knows of its link to etcd, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct SyncStatus {
    pub connected: AtomicBool,
    /// Unix ms of the last successful full load or applied watch event; 0 = never.
    pub last_sync_ms: AtomicU64,
    pub revision: AtomicI64,
    /// Whole-prefix reads: start, reconnect, a refresh that found a difference, and the
    /// conflict check of each registration.
    pub full_loads: AtomicU64,
    /// Periodic refreshes answered by the cheap check (`Mirror`), whatever it found.
    pub refresh_checks: AtomicU64,
}

pub struct EtcdStore {
    pub endpoints: Vec<String>,
    pub prefix: String,
    client: tokio::sync::Mutex<Option<Client>>,
    pub status: SyncStatus,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

impl EtcdStore {
    pub fn new(endpoints: Vec<String>, prefix: String) -> Self {
        EtcdStore {
            endpoints,
            prefix,
            client: tokio::sync::Mutex::new(None),
            status: SyncStatus::default(),
        }
    }

    /// `<prefix>services/`: the range every service key lives in.
    pub fn services_prefix(&self) -> String {
        format!("{}services/", self.prefix)
    }

    fn key(&self, service: &str) -> String {
        format!("{}{service}", self.services_prefix())
    }

    /// The client, made once: tonic dials on first use and re-dials by itself, and the client
    /// moves to the next endpoint when one fails, which it remembers across calls.
    pub async fn client(&self) -> Result<Client, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let opts = ConnectOptions {
            connect_timeout: CONNECT_TIMEOUT,
            op_timeout: OP_TIMEOUT,
        };
        let c = Client::connect(&self.endpoints, opts).map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Every registration under the prefix and the revision they were read at. Values that
    /// are not valid registrations are logged and skipped, never fatal.
    pub async fn load_all(&self) -> Result<(Vec<Registration>, i64), StoreError> {
        self.load_mirrored().await.map(|(r, m)| (r, m.verified()))
    }

    /// `load_all`, plus every key's mod revision (valid registration or not) for the cheap
    /// refresh check.
    pub async fn load_mirrored(&self) -> Result<(Vec<Registration>, Mirror), StoreError> {
        let c = self.client().await?;
        let prefix = self.services_prefix();
        self.status.full_loads.fetch_add(1, Relaxed);
        let resp = c
            .range_prefix(prefix.as_bytes())
            .await
            .map_err(unavailable)?;
        let revision = resp.header.map_or(0, |h| h.revision);
        let mut out = Vec::new();
        for kv in &resp.kvs {
            if let Some(r) = self.decode(&kv.key, &kv.value) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        let keys = resp.kvs.into_iter().map(|kv| (kv.key, kv.mod_revision));
        Ok((out, Mirror::loaded(keys, revision)))
    }

    /// The periodic refresh's cheap question: does `mirror` still equal the prefix? An
    /// index-only count, then, if anything was written anywhere since, a keys-only range of
    /// what changed; at rest each answers a header and a count (see `mirror.rs`).
    pub async fn unchanged(&self, mirror: &mut Mirror) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let prefix = self.services_prefix();
        self.status.refresh_checks.fetch_add(1, Relaxed);
        let quick = c
            .count_prefix(prefix.as_bytes())
            .await
            .map_err(unavailable)?;
        if mirror.quiet(quick.count, quick.header.map_or(0, |h| h.revision)) {
            return Ok(true);
        }
        let resp = c
            .range_prefix_modified_since(prefix.as_bytes(), mirror.verified() + 1)
            .await
            .map_err(unavailable)?;
        let at = resp.header.map_or(0, |h| h.revision);
        let changed: Vec<(&[u8], i64)> = resp
            .kvs
            .iter()
            .map(|kv| (kv.key.as_slice(), kv.mod_revision))
            .collect();
        Ok(mirror.check(resp.count, &changed, at))
    }

    /// Decodes one stored value; None (logged) if it is not a registration of that name.
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Option<Registration> {
        let name = self.name_of(key)?;
        match parse_registration(value) {
            Ok(r) if r.service == name => Some(r),
            Ok(r) => {
                log::error!(
                    "etcd: key for {name:?} holds service {:?}; ignored",
                    r.service
                );
                None
            }
            Err(e) => {
                log::error!(
                    "etcd: invalid registration under {}: {e}; ignored",
                    String::from_utf8_lossy(key)
                );
                None
            }
        }
    }

    /// The service name a key is for.
    pub fn name_of(&self, key: &[u8]) -> Option<String> {
        let name = key.strip_prefix(self.services_prefix().as_bytes())?;
        let name = std::str::from_utf8(name).ok()?;
        crate::registry::valid_service_name(name).then(|| name.to_string())
    }

    pub fn mark_synced(&self, revision: i64) {
        self.status.connected.store(true, Relaxed);
        self.status
            .last_sync_ms
            .store(crate::clock::unix_ms(), Relaxed);
        self.status.revision.fetch_max(revision, Relaxed);
    }

    /// Records a failed call for `/health` (the client itself re-dials and fails over).
    pub async fn disconnected(&self) {
        self.status.connected.store(false, Relaxed);
    }

    async fn put_txn(
        &self,
        reg: &Registration,
        check: ConflictCheck<'_>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(reg).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        for _ in 0..TXN_ATTEMPTS {
            let (current, revision) = self.load_all().await?;
            let others: Vec<Registration> = current
                .into_iter()
                .filter(|r| r.service != reg.service)
                .collect();
            if let Some(conflict) = check(reg, &others) {
                return Err(StoreError::Conflict(conflict));
            }
            // Succeeds only if nothing under the prefix changed since it was read: the
            // conflict check above saw exactly what is stored.
            let prefix = self.services_prefix();
            let unchanged = compare_mod_revision(
                prefix.as_bytes(),
                &prefix_end(prefix.as_bytes()),
                CompareResult::Less,
                revision + 1,
            );
            let put = put_op(self.key(&reg.service).as_bytes(), &value);
            let c = self.client().await?;
            let resp = c
                .txn(vec![unchanged], vec![put], Vec::new())
                .await
                .map_err(unavailable)?;
            if resp.succeeded {
                self.mark_synced(resp.header.map_or(revision, |h| h.revision));
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "etcd: too much contention on the registry; try again".into(),
        ))
    }
}

impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(async move { self.load_all().await.map(|(r, _)| r) })
    }

    fn put<'a>(
        &'a self,
        reg: &'a Registration,
        _all: &'a [Registration],
        check: ConflictCheck<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let r = self.put_txn(reg, check).await;
            if matches!(r, Err(StoreError::Unavailable(_))) {
                self.disconnected().await;
            }
            r
        })
    }

    fn delete<'a>(
        &'a self,
        service: &'a str,
        _all: &'a [Registration],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = c
                .delete(self.key(service).as_bytes())
                .await
                .map_err(unavailable);
            match r {
                Ok(resp) => {
                    self.mark_synced(resp.header.map_or(0, |h| h.revision));
                    Ok(())
                }
                Err(e) => {
                    self.disconnected().await;
                    Err(e)
                }
            }
        })
    }

    fn last_sync_ms(&self) -> u64 {
        self.status.last_sync_ms.load(Relaxed)
    }

    fn read_counts(&self) -> Option<ReadCounts> {
        Some(ReadCounts {
            full_loads: self.status.full_loads.load(Relaxed),
            refresh_checks: self.status.refresh_checks.load(Relaxed),
        })
    }

    fn health(&self) -> serde_json::Value {
        let last = self.status.last_sync_ms.load(Relaxed);
        serde_json::json!({
            "kind": "etcd",
            "endpoints": self.endpoints,
            "prefix": self.prefix,
            "connected": self.status.connected.load(Relaxed),
            "last_sync": (last > 0).then(|| crate::clock::rfc3339(last)),
            "revision": self.status.revision.load(Relaxed),
        })
    }
}
