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
    /// A revision at which this replica's registry (`Control::services`) held at least every
    /// registration etcd held, as the fleet loop verified it (a full load, a passing refresh
    /// check) or a registration's own guarded write left it; 0 = not known. A registration
    /// checks conflicts against that registry and guards its write with "nothing under the
    /// prefix modified after it" instead of reading the whole prefix first (`put_txn`).
    pub registry_at: AtomicI64,
}

/// What the periodic refresh's cheap check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// What the replica holds is etcd's prefix (verified at a new revision).
    Same,
    /// It is not, read at cluster revision `at`.
    Differs { at: i64 },
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
    pub async fn unchanged(&self, mirror: &mut Mirror) -> Result<Checked, StoreError> {
        let c = self.client().await?;
        let prefix = self.services_prefix();
        self.status.refresh_checks.fetch_add(1, Relaxed);
        let quick = c
            .count_prefix(prefix.as_bytes())
            .await
            .map_err(unavailable)?;
        if mirror.quiet(quick.count, quick.header.map_or(0, |h| h.revision)) {
            return Ok(Checked::Same);
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
        Ok(if mirror.check(resp.count, &changed, at) {
            Checked::Same
        } else {
            Checked::Differs { at }
        })
    }

    /// The fleet loop verified the registry at `revision` (0: it no longer knows).
    pub fn registry_verified(&self, revision: i64) {
        self.status.registry_at.store(revision, Relaxed);
    }

    /// A watch event at `revision` changed the registry: the verified revision no longer
    /// describes it, except when the event is the one our own guarded write already applied.
    pub fn registry_applied(&self, revision: i64) {
        let _ = self
            .status
            .registry_at
            .fetch_update(Relaxed, Relaxed, |at| (revision > at).then_some(0));
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

    /// Puts `reg` only if nothing under the prefix was modified after `revision`; the new
    /// revision when it was stored, None when something was.
    async fn guarded_put(
        &self,
        reg: &Registration,
        value: &[u8],
        revision: i64,
    ) -> Result<Option<i64>, StoreError> {
        let prefix = self.services_prefix();
        let unchanged = compare_mod_revision(
            prefix.as_bytes(),
            &prefix_end(prefix.as_bytes()),
            CompareResult::Less,
            revision + 1,
        );
        let put = put_op(self.key(&reg.service).as_bytes(), value);
        let c = self.client().await?;
        let resp = c
            .txn(vec![unchanged], vec![put], Vec::new())
            .await
            .map_err(unavailable)?;
        Ok(resp
            .succeeded
            .then(|| resp.header.map_or(revision, |h| h.revision)))
    }

    /// `local` is this replica's registry after the change (`reg` in it).
    async fn put_txn(
        &self,
        reg: &Registration,
        local: &[Registration],
        check: ConflictCheck<'_>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(reg).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // When the registry is known to hold everything etcd held at some revision, checking
        // it is checking etcd, as long as nothing was modified since: the guard of the write
        // says so. That spares the whole-prefix read (and its decoding) on the way from a
        // registration to every replica's watch, which waits for this write.
        let known = self.status.registry_at.load(Relaxed);
        if known > 0 {
            if let Some(conflict) = check(reg, local) {
                return Err(StoreError::Conflict(conflict));
            }
            if let Some(at) = self.guarded_put(reg, &value, known).await? {
                self.mark_synced(at);
                // `local` becomes the registry (under the control lock) and held everything
                // etcd did at `known`; nothing was modified between that and `at`.
                let _ = self
                    .status
                    .registry_at
                    .compare_exchange(known, at, Relaxed, Relaxed);
                return Ok(());
            }
        }
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
            if let Some(at) = self.guarded_put(reg, &value, revision).await? {
                self.mark_synced(at);
                // The registry was not what was checked: the next check verifies it.
                self.registry_verified(0);
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
        all: &'a [Registration],
        check: ConflictCheck<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let r = self.put_txn(reg, all, check).await;
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
            // Unguarded: what else changed meanwhile is not known.
            self.registry_verified(0);
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
