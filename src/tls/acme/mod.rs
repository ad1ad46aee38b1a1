//! ACME (RFC 8555) certificates for `[tls.acme] domains`: a background task orders a
//! certificate for every domain without a valid stored one, answers http-01 through the plain
//! listener (the challenges table in `TlsRuntime`), renews `renew_before` expiry, and backs
//! off exponentially on failure. It never blocks the data plane: certificates are swapped in
//! through the resolver's `ArcSwap`. Where the account and the certificates are kept is the
//! keeper's job: `file` (one switchyard) or `etcd` (a fleet: one replica orders a domain at a
//! time under an etcd lock, every replica serves what the store holds).
pub mod etcd;
pub mod file;

use super::certs;
use super::store::{Entry, Source};
use crate::config::tls::Acme;
use crate::state::Shared;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use file::file_beside;

/// A certificate chain and its key, PEM, as every keeper stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What one attempt at a domain came to.
#[derive(Debug)]
pub enum Obtained {
    /// This switchyard ordered it.
    Ordered(StoredCert),
    /// The store already had a valid one (another replica ordered it meanwhile).
    Present(StoredCert),
    /// Another replica is ordering it right now; look again soon. Not a failure.
    Busy,
    /// The store cannot be reached, so nothing was asked of the CA: retried on its own
    /// schedule (`store_retry`), not with the CA's backoff.
    StoreDown(String),
    /// Nothing is tried for `wait`: the fleet's shared backoff after `failures` failed orders
    /// (`failed_here`: this replica's order just failed, and was logged).
    Deferred {
        failures: u32,
        wait: Duration,
        failed_here: bool,
    },
}

/// Where the ACME state lives.
pub enum Keep {
    File(file::FileKeep),
    Etcd(etcd::EtcdKeep),
}

/// How soon a domain another replica is ordering is looked at again (its result usually
/// arrives through the watch before that).
const BUSY_RETRY: Duration = Duration::from_secs(2);

impl Keep {
    fn certificate(&self, domain: &str) -> Option<StoredCert> {
        match self {
            Keep::File(f) => f.certificates().get(domain).cloned(),
            Keep::Etcd(e) => e.certificate(domain),
        }
    }

    /// Serves what the keeper holds now.
    fn serve(&self, shared: &Shared, domains: &[String]) {
        match self {
            Keep::File(f) => shared.dp.tls.set_acme(entries(f.certificates(), domains)),
            Keep::Etcd(e) => e.serve(shared, domains),
        }
    }

    async fn obtain(
        &mut self,
        shared: &Shared,
        cfg: &Acme,
        account: &mut Option<Account>,
        domain: &str,
    ) -> Result<Obtained, String> {
        match self {
            Keep::File(f) => f.obtain(shared, cfg, account, domain).await,
            Keep::Etcd(e) => e.obtain(shared, cfg, account, domain).await,
        }
    }

    /// Resolves when the stored certificates changed under us (etcd watch); never for a file.
    async fn changed(&self) {
        match self {
            Keep::File(_) => std::future::pending().await,
            Keep::Etcd(e) => e.changed().await,
        }
    }
}

/// Delay before retry number `failures` (1 = after the first failure): 10 s doubling, at
/// most an hour, as Let's Encrypt asks of clients.
pub fn backoff(failures: u32) -> Duration {
    let secs = 10u64.saturating_mul(1 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(3600))
}

/// Delay before retry number `n` (1 = first) while the store is unreachable: 1 s doubling to
/// a minute, so an etcd outage at start does not push the first order back by an hour.
pub fn store_retry(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// When a certificate valid from `not_before` until `not_after` (Unix seconds) is renewed:
/// `renew_before` its expiry, but never in the first half of its life, so a `renew_before`
/// longer than what the CA issues cannot make every fresh certificate due at once (an order
/// loop against the CA).
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Duration) -> i64 {
    let half = not_before.saturating_add(not_after.saturating_sub(not_before) / 2);
    not_after
        .saturating_sub(renew_before.as_secs() as i64)
        .max(half)
}

/// When `cert` is due for renewal (Unix seconds); `now` for one that does not parse.
fn due_at(cert: Option<&StoredCert>, renew_before: Duration, now: i64) -> i64 {
    cert.and_then(|c| certs::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).ok())
        .map_or(now, |l| renew_at(l.not_before, l.not_after, renew_before))
}

/// Unix seconds now.
fn now_secs() -> i64 {
    (crate::clock::unix_ms() / 1000) as i64
}

/// Checks a stored certificate for `domain`: it parses, its key matches, and its leaf names
/// the domain (a value written for another name is never served for this one).
pub fn check_stored(domain: &str, c: &StoredCert) -> Result<certs::Loaded, String> {
    let l = certs::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).map_err(|e| e.message)?;
    if !l.dns_names.iter().any(|n| n == domain) {
        return Err(format!("its leaf names {:?}, not {domain}", l.dns_names));
    }
    Ok(l)
}

/// The store entries for the stored certificates of `domains` that pass `check_stored`.
pub fn entries(stored: &BTreeMap<String, StoredCert>, domains: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    for d in domains {
        let Some(c) = stored.get(d) else {
            continue;
        };
        match check_stored(d, c) {
            Ok(l) => out.push(Entry {
                loaded: Arc::new(l),
                hosts: vec![d.clone()],
                source: Source::Acme,
                default: false,
                file: None,
            }),
            Err(e) => log::error!("acme: stored certificate for {d} unusable: {e}"),
        }
    }
    out
}

/// The ACME task over the store the config names: the file beside the registry, or etcd.
pub async fn start(
    shared: Arc<Shared>,
    acme: Acme,
    store: crate::config::Store,
    etcd: Option<Arc<crate::registry::store::etcd::EtcdStore>>,
) {
    let keep = match (&store, etcd) {
        (crate::config::Store::File { path }, _) => {
            Keep::File(file::FileKeep::open(file_beside(path)).await)
        }
        (
            crate::config::Store::Etcd {
                full_refresh_interval,
                ..
            },
            Some(s),
        ) => {
            match etcd::EtcdKeep::start(&shared, &s, &acme.domains, *full_refresh_interval).await {
                Ok(k) => Keep::Etcd(k),
                Err(e) => {
                    log::error!("acme: cannot use etcd: {e}; no certificates will be ordered");
                    return;
                }
            }
        }
        (crate::config::Store::Etcd { .. }, None) => return,
    };
    run(shared, acme, keep).await;
}

/// Runs the ACME loop for `cfg` over `keep`; never returns.
pub async fn run(shared: Arc<Shared>, cfg: Acme, mut keep: Keep) {
    keep.serve(&shared, &cfg.domains);
    let mut failures: BTreeMap<String, (u32, tokio::time::Instant)> = BTreeMap::new();
    let mut store_down: BTreeMap<String, (u32, tokio::time::Instant)> = BTreeMap::new();
    let mut account: Option<Account> = None;
    loop {
        let now = now_secs();
        // Wake at least hourly: renewal dates are wall-clock, and sleeps are not.
        let mut wake = tokio::time::Instant::now() + Duration::from_secs(3600);
        for d in &cfg.domains {
            let due = due_at(keep.certificate(d).as_ref(), cfg.renew_before, now);
            if due > now {
                let at = tokio::time::Instant::now() + Duration::from_secs((due - now) as u64);
                wake = wake.min(at);
                continue;
            }
            let waiting = failures.get(d).into_iter().chain(store_down.get(d));
            if let Some(retry) = waiting.map(|f| f.1).max() {
                if retry > tokio::time::Instant::now() {
                    wake = wake.min(retry);
                    continue;
                }
            }
            let outcome = keep.obtain(&shared, &cfg, &mut account, d).await;
            if !matches!(outcome, Ok(Obtained::StoreDown(_))) {
                store_down.remove(d);
            }
            let cert = match outcome {
                Ok(Obtained::StoreDown(e)) => {
                    let n = store_down.get(d).map_or(0, |f| f.0) + 1;
                    let delay = store_retry(n);
                    log::warn!("acme: cannot order {d} now ({e}); retrying in {delay:?}");
                    let retry = tokio::time::Instant::now() + delay;
                    store_down.insert(d.clone(), (n, retry));
                    wake = wake.min(retry);
                    continue;
                }
                Ok(Obtained::Deferred {
                    failures: n,
                    wait,
                    failed_here,
                }) => {
                    if failed_here {
                        account = None;
                    } else {
                        log::info!("acme: an order for {d} failed in the fleet; the next attempt is in {wait:?}");
                    }
                    let retry = tokio::time::Instant::now() + wait;
                    failures.insert(d.clone(), (n, retry));
                    wake = wake.min(retry);
                    continue;
                }
                Ok(Obtained::Busy) => {
                    log::info!("acme: another replica is ordering {d}; waiting for it");
                    wake = wake.min(tokio::time::Instant::now() + BUSY_RETRY);
                    continue;
                }
                Ok(Obtained::Ordered(c)) => {
                    log::info!("acme: certificate for {d} installed");
                    c
                }
                Ok(Obtained::Present(c)) => {
                    log::info!("acme: certificate for {d} installed from the store");
                    c
                }
                Err(e) => {
                    let n = failures.get(d).map_or(0, |f| f.0) + 1;
                    let delay = backoff(n);
                    log::warn!("acme: order for {d} failed ({e}); retrying in {delay:?}");
                    let retry = tokio::time::Instant::now() + delay;
                    failures.insert(d.clone(), (n, retry));
                    wake = wake.min(retry);
                    // A failure may come from a stale account: make a fresh client next time.
                    account = None;
                    continue;
                }
            };
            failures.remove(d);
            keep.serve(&shared, &cfg.domains);
            if due_at(Some(&cert), cfg.renew_before, now) <= now_secs() {
                // A CA that issues certificates already due (a lifetime under a second):
                // pace it like a failure instead of ordering in a loop.
                log::warn!("acme: the new certificate for {d} is already due for renewal");
                failures.insert(d.clone(), (0, tokio::time::Instant::now() + backoff(1)));
            }
            // Look again at once: the next turn sleeps until the renewal time.
            wake = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = keep.changed() => {}
        }
    }
}

fn log_ordering(cfg: &Acme, domain: &str) {
    log::info!(
        "acme: ordering a certificate for {domain} from {}",
        cfg.directory
    );
}

/// The account to order with: the one in use, else the stored credentials, else a new
/// account. Returns the new account's credentials for the keeper to store.
async fn account(
    cfg: &Acme,
    cached: &mut Option<Account>,
    stored: Option<&serde_json::Value>,
) -> Result<(Account, Option<serde_json::Value>), String> {
    if let Some(a) = cached {
        return Ok((a.clone(), None));
    }
    let builder = || match &cfg.ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    if let Some(creds) = stored.and_then(|v| AccountCredentials::deserialize(v).ok()) {
        let b = builder().map_err(|e| e.to_string())?;
        let a = b.from_credentials(creds).await.map_err(|e| e.to_string())?;
        *cached = Some(a.clone());
        return Ok((a, None));
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (a, creds) = builder()
        .map_err(|e| e.to_string())?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("account: {e}"))?;
    log::info!("acme: account created at {}", cfg.directory);
    let v = serde_json::to_value(&creds).map_err(|e| e.to_string())?;
    *cached = Some(a.clone());
    Ok((a, Some(v)))
}

/// One order for `domain`, start to finish. With `fleet`, every http-01 answer is also
/// published to etcd, so whichever replica the CA's validation request reaches can answer.
async fn order(
    shared: &Shared,
    acct: &Account,
    domain: &str,
    fleet: Option<&etcd::Publisher<'_>>,
) -> Result<StoredCert, String> {
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = acct
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authz = order.authorizations();
        while let Some(a) = authz.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(format!("authorization is {s:?}")),
            }
            let mut ch = a
                .challenge(ChallengeType::Http01)
                .ok_or("the server offers no http-01 challenge")?;
            let token = ch.token.clone();
            let auth = ch.key_authorization().as_str().to_string();
            shared.dp.tls.add_challenge(token.clone(), auth.clone());
            tokens.push(token.clone());
            if let Some(p) = fleet {
                p.publish(&token, &auth).await?;
            }
            ch.set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(60));
        match order.poll_ready(&retry).await {
            Ok(OrderStatus::Ready) => {}
            Ok(s) => return Err(format!("order is {s:?}, not ready")),
            Err(e) => return Err(format!("validation: {e}")),
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let cert_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        let cert = StoredCert { cert_pem, key_pem };
        check_stored(domain, &cert).map_err(|e| format!("issued certificate unusable: {e}"))?;
        Ok(cert)
    }
    .await;
    for t in &tokens {
        shared.dp.tls.remove_challenge(t);
        if let Some(p) = fleet {
            p.withdraw(t).await;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(30), Duration::from_secs(3600));
        assert_eq!(renew_at(0, 1000, Duration::from_secs(100)), 900);
        // Never in the first half of the certificate's life.
        assert_eq!(renew_at(0, 1000, Duration::from_secs(900)), 500);
        assert_eq!(store_retry(1), Duration::from_secs(1));
        assert_eq!(store_retry(3), Duration::from_secs(4));
        assert_eq!(store_retry(7), Duration::from_secs(60));
        assert_eq!(store_retry(40), Duration::from_secs(60));
    }

    fn pair(names: &[&str]) -> StoredCert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        StoredCert {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn a_stored_certificate_is_served_only_for_a_name_its_leaf_carries() {
        let mut stored = BTreeMap::new();
        stored.insert("a.test".to_string(), pair(&["a.test"]));
        stored.insert("b.test".to_string(), pair(&["other.test"]));
        stored.insert(
            "c.test".to_string(),
            StoredCert {
                cert_pem: "junk".into(),
                key_pem: "junk".into(),
            },
        );
        let domains: Vec<String> = ["a.test", "b.test", "c.test", "d.test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = entries(&stored, &domains);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].hosts, ["a.test"]);
        assert_eq!(e[0].source, Source::Acme);
        assert!(check_stored("b.test", &stored["b.test"])
            .unwrap_err()
            .contains("not b.test"));
        // Unparsable or missing: due now.
        assert_eq!(due_at(stored.get("c.test"), Duration::ZERO, 77), 77);
        assert_eq!(due_at(None, Duration::ZERO, 77), 77);
        assert!(due_at(stored.get("a.test"), Duration::ZERO, 77) > now_secs());
    }
}
