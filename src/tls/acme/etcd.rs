//! The etcd keeper of ACME state, for a fleet: the account credentials, the certificates and
//! the pending http-01 answers live under `<prefix>acme/`, each value sealed with a version
//! and a CRC-32 like the file store (a value failing its check is logged and never served).
//! One replica orders a given domain at a time: it holds the etcd lock
//! `<prefix>acme/locks/<domain>` (a lease kept alive while it works; should the replica die,
//! the lease runs out after `LOCK_TTL` and the next replica takes over), reads the stored
//! certificate again under the lock (another replica may just have ordered it), and writes
//! the new one in a transaction that succeeds only while it still holds the lock; a failed
//! order writes the fleet's backoff (`retry/<domain>`) the same way, so the others wait too.
//! Every replica follows the prefix with its own watch (separate from the registry's) and
//! serves what arrives; while etcd is away it keeps serving the certificates it has.
use super::{Obtained, StoredCert};
use crate::config::tls::Acme;
use crate::etcd::client::{compare_absent, delete_op, put_op};
use crate::etcd::pb::mvccpb::event::EventType;
use crate::etcd::{Client, Error};
use crate::registry::store::etcd::EtcdStore;
use crate::state::Shared;
use instant_acme::Account;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The lease behind an ordering replica's lock: how long a dead replica keeps the others
/// waiting. The keep-alive renews it every third of this while the replica lives.
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a replica waits for another one's lock before looking again (the other one's
/// certificate usually arrives through the watch first).
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Between publishing an http-01 answer and telling the CA to validate: the time SPEC §7
/// gives a change to reach every replica, since the CA's request may reach any of them.
pub const CHALLENGE_PROPAGATION: Duration = Duration::from_secs(1);
/// Pending http-01 answers taken from etcd at most (a handful per order in flight).
const MAX_CHALLENGES: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The keys under `<prefix>acme/`.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

/// What a key under the ACME prefix stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Certificate(String),
    Challenge(String),
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            base: format!("{prefix}acme/"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn certificate(&self, domain: &str) -> String {
        format!("{}certificates/{domain}", self.base)
    }

    pub fn challenge(&self, token: &str) -> String {
        format!("{}challenges/{token}", self.base)
    }

    pub fn lock(&self, domain: &str) -> String {
        format!("{}locks/{domain}", self.base)
    }

    /// The fleet's backoff for `domain` after failed orders.
    pub fn retry(&self, domain: &str) -> String {
        format!("{}retry/{domain}", self.base)
    }

    /// Per directory URL, percent-encoded so the key has no `/` of its own.
    pub fn account(&self, directory: &str) -> String {
        let mut k = format!("{}accounts/", self.base);
        for b in directory.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                k.push(b as char);
            } else {
                k.push_str(&format!("%{b:02X}"));
            }
        }
        k
    }

    /// Certificates and challenges; None for anything else (locks, accounts, strangers).
    pub fn classify(&self, key: &[u8]) -> Option<Kind> {
        let rest = std::str::from_utf8(key.strip_prefix(self.base.as_bytes())?).ok()?;
        if let Some(d) = rest.strip_prefix("certificates/") {
            return Some(Kind::Certificate(d.to_string()));
        }
        let t = rest.strip_prefix("challenges/")?;
        valid_token(t).then(|| Kind::Challenge(t.to_string()))
    }
}

/// An ACME token (RFC 8555 §8.1: base64url, at least 128 bits); bounded here.
fn valid_token(t: &str) -> bool {
    (16..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A key authorization for `token`: `token.` and a base64url thumbprint.
fn valid_key_authorization(token: &str, auth: &str) -> bool {
    auth.strip_prefix(token)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|thumb| {
            (1..=128).contains(&thumb.len())
                && thumb
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The fleet's backoff for one domain, written by the replica whose order failed, so the
/// others do not each try the CA again at once (per directory: a replica that cannot reach
/// its own directory does not hold back one that can reach another).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub directory: String,
    pub failures: u32,
    /// Unix ms before which no replica orders the domain from `directory`.
    pub not_before_ms: u64,
}

/// A stored value: the JSON text of what it holds, its CRC-32 (IEEE), a version.
#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    crc32: u32,
    value: String,
}

pub fn seal<T: Serialize>(v: &T) -> Vec<u8> {
    let value = serde_json::to_string(v).unwrap_or_default();
    let s = Sealed {
        version: 1,
        crc32: crc32fast::hash(value.as_bytes()),
        value,
    };
    serde_json::to_vec(&s).unwrap_or_default()
}

pub fn unseal<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let s: Sealed = serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
    if s.version != 1 {
        return Err(format!("unknown version {}", s.version));
    }
    if s.crc32 != crc32fast::hash(s.value.as_bytes()) {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(&s.value).map_err(|e| format!("does not parse: {e}"))
}

/// A stored certificate value for `domain`, checked.
fn certificate_value(domain: &str, bytes: &[u8]) -> Result<StoredCert, String> {
    let c: StoredCert = unseal(bytes)?;
    super::check_stored(domain, &c)?;
    Ok(c)
}

fn etcd_err(e: Error) -> String {
    format!("etcd: {e}")
}

/// The certificates a replica serves, and which of them etcd no longer holds.
#[derive(Default)]
struct Held {
    /// Domain → the last valid certificate seen in etcd (or just written): what is served.
    served: BTreeMap<String, StoredCert>,
    /// Domains whose etcd value went away or went bad: still served from `served` (never the
    /// bad value), but due for a new order.
    missing: BTreeSet<String>,
}

impl Held {
    /// The stored certificate for `domain`, None when etcd has none (or a bad one).
    fn stored(&self, domain: &str) -> Option<StoredCert> {
        if self.missing.contains(domain) {
            return None;
        }
        self.served.get(domain).cloned()
    }

    /// Records `cert` for `domain`; true if that changed anything.
    fn insert(&mut self, domain: &str, cert: StoredCert) -> bool {
        let back = self.missing.remove(domain);
        if self.served.get(domain) == Some(&cert) {
            return back;
        }
        self.served.insert(domain.to_string(), cert);
        true
    }

    /// etcd no longer holds a usable certificate for `domain`: keep serving ours, order anew.
    /// True if that is news.
    fn forget(&mut self, domain: &str) -> bool {
        self.served.contains_key(domain) && self.missing.insert(domain.to_string())
    }
}

/// What the watch task and the ordering loop share.
struct Inner {
    client: Client,
    keys: Keys,
    domains: Vec<String>,
    certs: Mutex<Held>,
    /// Tokens of http-01 answers taken from etcd (so a full reload can drop stale ones).
    learned: Mutex<BTreeSet<String>>,
    changed: Notify,
    /// `[store] full_refresh_interval`: the prefix is read whole this often, as the registry is.
    full_refresh: Duration,
}

impl Inner {
    fn certs(&self) -> std::sync::MutexGuard<'_, Held> {
        self.certs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in what is served; under its lock, so swaps cannot land out of order.
    fn serve(&self, shared: &Shared) {
        let certs = self.certs();
        shared
            .dp
            .tls
            .set_acme(super::entries(&certs.served, &self.domains));
    }

    fn stored(&self, domain: &str) -> Option<StoredCert> {
        self.certs().stored(domain)
    }

    fn insert(&self, domain: &str, cert: StoredCert) -> bool {
        self.certs().insert(domain, cert)
    }

    fn forget(&self, domain: &str) -> bool {
        self.certs().forget(domain)
    }

    /// One put (`value` Some) or delete under the prefix; true if the certificates changed.
    fn apply(&self, shared: &Shared, key: &[u8], value: Option<&[u8]>) -> bool {
        match self.keys.classify(key) {
            Some(Kind::Certificate(d)) if self.domains.contains(&d) => match value {
                None => {
                    let gone = self.forget(&d);
                    if gone {
                        log::warn!("acme: the certificate for {d} was deleted from etcd; serving ours until a new one is ordered");
                    }
                    gone
                }
                Some(v) => match certificate_value(&d, v) {
                    Ok(c) => {
                        let new = self.insert(&d, c);
                        if new {
                            log::info!("acme: certificate for {d} installed from etcd");
                        }
                        new
                    }
                    Err(e) => {
                        log::error!(
                            "acme: etcd value {} unusable ({e}); ignored, the domain will be ordered again (the last good certificate is served meanwhile)",
                            String::from_utf8_lossy(key)
                        );
                        self.forget(&d)
                    }
                },
            },
            Some(Kind::Challenge(t)) => {
                let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
                match value.map(unseal::<String>) {
                    None => {
                        learned.remove(&t);
                        shared.dp.tls.remove_challenge(&t);
                    }
                    Some(Ok(auth)) if valid_key_authorization(&t, &auth) => {
                        if learned.len() < MAX_CHALLENGES || learned.contains(&t) {
                            learned.insert(t.clone());
                            shared.dp.tls.add_challenge(t, auth);
                        } else {
                            log::warn!("acme: too many pending challenges in etcd; {t} ignored");
                        }
                    }
                    Some(_) => log::error!(
                        "acme: etcd value {} is not a key authorization; ignored",
                        String::from_utf8_lossy(key)
                    ),
                }
                false
            }
            _ => false,
        }
    }

    /// Reads the whole prefix again and replaces what we follow; returns its revision.
    async fn load(&self, shared: &Shared) -> Result<i64, String> {
        let r = self
            .client
            .range_prefix(self.keys.base().as_bytes())
            .await
            .map_err(etcd_err)?;
        let mut certs_seen = BTreeSet::new();
        let mut tokens_seen = BTreeSet::new();
        let mut changed = false;
        for kv in &r.kvs {
            match self.keys.classify(&kv.key) {
                Some(Kind::Certificate(d)) => {
                    certs_seen.insert(d);
                }
                Some(Kind::Challenge(t)) => {
                    tokens_seen.insert(t);
                }
                None => continue,
            }
            changed |= self.apply(shared, &kv.key, Some(&kv.value));
        }
        let gone: Vec<String> = self
            .certs()
            .served
            .keys()
            .filter(|d| !certs_seen.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            changed |= self.apply(shared, self.keys.certificate(&d).as_bytes(), None);
        }
        let stale: Vec<String> = {
            let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            learned.difference(&tokens_seen).cloned().collect()
        };
        for t in stale {
            self.apply(shared, self.keys.challenge(&t).as_bytes(), None);
        }
        if changed {
            self.serve(shared);
            self.changed.notify_one();
        }
        Ok(r.header.map_or(0, |h| h.revision))
    }
}

/// The fleet's ACME state, as one replica sees it.
pub struct EtcdKeep {
    inner: Arc<Inner>,
}

/// Publishes http-01 answers for the duration of one order, on the lock's lease (a replica
/// that dies mid-order leaves none behind once the lease runs out).
pub struct Publisher<'a> {
    client: &'a Client,
    keys: &'a Keys,
    lease: i64,
}

impl Publisher<'_> {
    pub async fn publish(&self, token: &str, auth: &str) -> Result<(), String> {
        let key = self.keys.challenge(token);
        self.client
            .put(key.as_bytes(), &seal(&auth), self.lease)
            .await
            .map_err(|e| format!("publishing the challenge: {e}"))?;
        tokio::time::sleep(CHALLENGE_PROPAGATION).await;
        Ok(())
    }

    pub async fn withdraw(&self, token: &str) {
        let key = self.keys.challenge(token);
        if let Err(e) = self.client.delete(key.as_bytes()).await {
            log::warn!(
                "acme: removing the challenge {token} from etcd: {e} (it goes with the lease)"
            );
        }
    }
}

impl EtcdKeep {
    /// Reads what etcd holds (once; a failure is logged and left to the watch task, which
    /// retries) and starts following the prefix.
    pub async fn start(
        shared: &Arc<Shared>,
        store: &EtcdStore,
        domains: &[String],
        full_refresh: Duration,
    ) -> Result<EtcdKeep, String> {
        let client = store.client().await.map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            client,
            keys: Keys::new(&store.prefix),
            domains: domains.to_vec(),
            certs: Mutex::default(),
            learned: Mutex::default(),
            changed: Notify::new(),
            full_refresh,
        });
        let first = match inner.load(shared).await {
            Ok(rev) => Some(rev),
            Err(e) => {
                log::warn!("acme: {e}; no stored certificates yet, retrying");
                None
            }
        };
        tokio::spawn(follow(inner.clone(), shared.clone(), first));
        Ok(EtcdKeep { inner })
    }

    pub fn certificate(&self, domain: &str) -> Option<StoredCert> {
        self.inner.stored(domain)
    }

    pub fn serve(&self, shared: &Shared, _domains: &[String]) {
        self.inner.serve(shared);
    }

    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Takes the domain's lock (or reports `Busy` when another replica holds it past
    /// `LOCK_WAIT`), then orders unless the store has a valid certificate by now.
    pub async fn obtain(
        &self,
        shared: &Shared,
        cfg: &Acme,
        account: &mut Option<Account>,
        domain: &str,
    ) -> Result<Obtained, String> {
        let name = self.inner.keys.lock(domain);
        let guard = match self
            .inner
            .client
            .acquire(name.as_bytes(), LOCK_TTL, LOCK_WAIT)
            .await
        {
            Ok(g) => g,
            Err(Error::Timeout("lock")) => return Ok(Obtained::Busy),
            Err(e) => return Ok(Obtained::StoreDown(etcd_err(e))),
        };
        let r = self
            .obtain_locked(shared, cfg, account, domain, &guard)
            .await;
        if let Err(e) = guard.release().await {
            log::warn!("acme: releasing the lock for {domain}: {e} (its lease runs out by itself)");
        }
        r
    }

    async fn obtain_locked(
        &self,
        shared: &Shared,
        cfg: &Acme,
        account: &mut Option<Account>,
        domain: &str,
        guard: &crate::etcd::LockGuard,
    ) -> Result<Obtained, String> {
        let (c, keys) = (&self.inner.client, &self.inner.keys);
        let key = keys.certificate(domain);
        let stored = match c.get(key.as_bytes()).await {
            Ok(v) => v,
            Err(e) => return Ok(Obtained::StoreDown(etcd_err(e))),
        };
        if let Some(v) = stored {
            match certificate_value(domain, &v) {
                Ok(s) if super::due_at(Some(&s), cfg.renew_before, 0) > super::now_secs() => {
                    if self.inner.insert(domain, s.clone()) {
                        self.inner.serve(shared);
                    }
                    return Ok(Obtained::Present(s));
                }
                Ok(_) => {}
                Err(e) => log::error!("acme: etcd value {key} unusable ({e}); ordering anew"),
            }
        }
        let rkey = keys.retry(domain);
        let prior = match c.get(rkey.as_bytes()).await {
            Err(e) => return Ok(Obtained::StoreDown(etcd_err(e))),
            Ok(v) => v
                .and_then(|v| {
                    unseal::<Retry>(&v)
                        .map_err(|e| log::error!("acme: etcd value {rkey} unusable ({e}); ignored"))
                        .ok()
                })
                .filter(|r| r.directory == cfg.directory),
        };
        let now_ms = crate::clock::unix_ms();
        if let Some(r) = prior.as_ref().filter(|r| r.not_before_ms > now_ms) {
            return Ok(Obtained::Deferred {
                failures: r.failures,
                wait: Duration::from_millis(r.not_before_ms - now_ms),
                failed_here: false,
            });
        }
        match self.order_locked(shared, cfg, account, domain, guard).await {
            Ok(o) => Ok(o),
            Err(e) => {
                let failures = prior.map_or(0, |r| r.failures) + 1;
                let wait = super::backoff(failures);
                log::warn!("acme: order for {domain} failed ({e}); the fleet retries in {wait:?}");
                let r = Retry {
                    directory: cfg.directory.clone(),
                    failures,
                    not_before_ms: crate::clock::unix_ms() + wait.as_millis() as u64,
                };
                let put = put_op(rkey.as_bytes(), &seal(&r));
                match c.txn(vec![guard.still_held()], vec![put], Vec::new()).await {
                    Ok(w) if w.succeeded => {}
                    Ok(_) => log::warn!("acme: lost the lock for {domain}; backoff not shared"),
                    Err(e) => log::warn!("acme: backoff for {domain} not shared: {e}"),
                }
                Ok(Obtained::Deferred {
                    failures,
                    wait,
                    failed_here: true,
                })
            }
        }
    }

    /// Account, order, fenced write: everything that asks the CA.
    async fn order_locked(
        &self,
        shared: &Shared,
        cfg: &Acme,
        account: &mut Option<Account>,
        domain: &str,
        guard: &crate::etcd::LockGuard,
    ) -> Result<Obtained, String> {
        let (c, keys) = (&self.inner.client, &self.inner.keys);
        let key = keys.certificate(domain);
        let akey = keys.account(&cfg.directory);
        let stored = match account {
            Some(_) => None,
            None => match c.get(akey.as_bytes()).await {
                Err(e) => return Ok(Obtained::StoreDown(etcd_err(e))),
                Ok(None) => None,
                Ok(Some(v)) => match unseal::<serde_json::Value>(&v) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        log::error!(
                            "acme: etcd value {akey} unusable ({e}); a new account is made"
                        );
                        None
                    }
                },
            },
        };
        let (acct, created) = super::account(cfg, account, stored.as_ref()).await?;
        if let Some(creds) = created {
            // First writer wins; a replica that lost the race uses its own account for this
            // order and the stored one after its next failure.
            let w = c
                .txn(
                    vec![compare_absent(akey.as_bytes())],
                    vec![put_op(akey.as_bytes(), &seal(&creds))],
                    Vec::new(),
                )
                .await
                .map_err(etcd_err)?;
            if !w.succeeded {
                log::info!("acme: another replica stored an account first");
            }
        }
        super::log_ordering(cfg, domain);
        let publisher = Publisher {
            client: c,
            keys,
            lease: guard.lease(),
        };
        let cert = super::order(shared, &acct, domain, Some(&publisher)).await?;
        // Fenced: a holder whose lease ran out unnoticed cannot overwrite its successor.
        let done = vec![
            put_op(key.as_bytes(), &seal(&cert)),
            delete_op(keys.retry(domain).as_bytes()),
        ];
        let w = c
            .txn(vec![guard.still_held()], done, Vec::new())
            .await
            .map_err(etcd_err)?;
        if !w.succeeded {
            return Err("lost the etcd lock while ordering; the certificate is discarded".into());
        }
        self.inner.insert(domain, cert.clone());
        Ok(Obtained::Ordered(cert))
    }
}

/// Follows `<prefix>acme/` until the process ends: watch from the revision last read, a full
/// read every `full_refresh_interval`, reconnect with backoff and a full read after any
/// break, serving what we have meanwhile.
async fn follow(inner: Arc<Inner>, shared: Arc<Shared>, mut from: Option<i64>) {
    let mut backoff = Duration::from_millis(50);
    let mut last_error = String::new();
    loop {
        let err = watch(&inner, &shared, &mut from, &mut backoff).await;
        if err != last_error {
            log::warn!("acme: etcd watch: {err}; serving the certificates we have, retrying");
            last_error = err;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn watch(
    inner: &Inner,
    shared: &Shared,
    from: &mut Option<i64>,
    backoff: &mut Duration,
) -> String {
    let revision = match from.take() {
        Some(r) => r,
        None => match inner.load(shared).await {
            Ok(r) => r,
            Err(e) => return e,
        },
    };
    let mut w = match inner
        .client
        .watch_prefix(inner.keys.base().as_bytes(), revision + 1)
        .await
    {
        Ok(w) => w,
        Err(e) => return etcd_err(e),
    };
    *backoff = Duration::from_millis(50);
    let mut tick = tokio::time::interval(inner.full_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let msg = tokio::select! {
            m = w.message() => m,
            _ = tick.tick() => {
                // A safety net against a lost event; what it finds is served at once.
                if let Err(e) = inner.load(shared).await {
                    return format!("full refresh: {e}");
                }
                continue;
            }
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return "closed".into(),
            Err(e) => return etcd_err(e),
        };
        if resp.canceled || resp.compact_revision > 0 {
            return format!("cancelled (compact revision {})", resp.compact_revision);
        }
        let mut changed = false;
        for ev in &resp.events {
            let Some(kv) = ev.kv.as_ref() else { continue };
            let value = (ev.r#type == EventType::Put as i32).then_some(kv.value.as_slice());
            changed |= inner.apply(shared, &kv.key, value);
        }
        if changed {
            inner.serve(shared);
            inner.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_prefix_and_classify_back() {
        let k = Keys::new("/sy/");
        assert_eq!(k.certificate("a.test"), "/sy/acme/certificates/a.test");
        assert_eq!(k.lock("a.test"), "/sy/acme/locks/a.test");
        assert_eq!(
            k.account("https://127.0.0.1:14000/dir"),
            "/sy/acme/accounts/https%3A%2F%2F127.0.0.1%3A14000%2Fdir"
        );
        assert_eq!(
            k.classify(b"/sy/acme/certificates/a.test"),
            Some(Kind::Certificate("a.test".into()))
        );
        let tok = "AbCdEfGhIjKlMnOpQrSt_-12";
        assert_eq!(
            k.classify(k.challenge(tok).as_bytes()),
            Some(Kind::Challenge(tok.into()))
        );
        // Locks, accounts, other prefixes, and tokens that are not base64url: nothing.
        assert_eq!(k.classify(b"/sy/acme/locks/a.test/694d"), None);
        assert_eq!(k.classify(k.account("x").as_bytes()), None);
        assert_eq!(k.classify(b"/other/acme/certificates/a.test"), None);
        assert_eq!(k.classify(b"/sy/acme/challenges/short"), None);
        assert_eq!(
            k.classify(b"/sy/acme/challenges/AbCdEfGhIjKlMnOpQrSt<script>"),
            None
        );
    }

    #[test]
    fn sealed_values_round_trip_and_a_changed_byte_is_refused() {
        let c = StoredCert {
            cert_pem: "C".into(),
            key_pem: "K".into(),
        };
        let v = seal(&c);
        assert_eq!(unseal::<StoredCert>(&v).unwrap(), c);
        let bad = String::from_utf8(v.clone())
            .unwrap()
            .replace("\\\"C\\\"", "\\\"X\\\"");
        assert_ne!(bad.as_bytes(), v.as_slice());
        assert_eq!(
            unseal::<StoredCert>(bad.as_bytes()).unwrap_err(),
            "checksum mismatch"
        );
        let v2 = String::from_utf8(v)
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        assert!(unseal::<StoredCert>(v2.as_bytes())
            .unwrap_err()
            .contains("version 2"));
        assert!(unseal::<StoredCert>(b"{").is_err());
        // A sealed value that is valid but names another domain is still refused.
        assert!(certificate_value("a.test", &seal(&c)).is_err());
    }

    #[test]
    fn a_certificate_gone_from_etcd_is_still_served_but_due() {
        let c = |s: &str| StoredCert {
            cert_pem: s.into(),
            key_pem: "K".into(),
        };
        let mut h = Held::default();
        assert!(!h.forget("a.test"), "nothing to forget");
        assert!(h.insert("a.test", c("1")));
        assert!(!h.insert("a.test", c("1")), "same value: no change");
        assert_eq!(h.stored("a.test"), Some(c("1")));
        assert!(h.forget("a.test"));
        assert!(!h.forget("a.test"), "only news once");
        assert_eq!(h.stored("a.test"), None, "due for a new order");
        assert_eq!(h.served.get("a.test"), Some(&c("1")), "still served");
        // The same value written back, or a new one: stored again.
        assert!(h.insert("a.test", c("1")));
        assert_eq!(h.stored("a.test"), Some(c("1")));
        h.forget("a.test");
        assert!(h.insert("a.test", c("2")));
        assert_eq!(h.stored("a.test"), Some(c("2")));
    }

    #[test]
    fn key_authorizations_must_belong_to_their_token() {
        let t = "AbCdEfGhIjKlMnOpQrSt";
        assert!(valid_key_authorization(t, &format!("{t}.thumb_-9")));
        assert!(!valid_key_authorization(t, "other.thumb"));
        assert!(!valid_key_authorization(t, &format!("{t}.")));
        assert!(!valid_key_authorization(t, &format!("{t}.a\r\nb")));
        assert!(!valid_key_authorization(t, t));
    }
}
