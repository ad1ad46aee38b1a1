//! ACME (RFC 8555) certificates for `[tls.acme] domains`: a background task orders a
//! certificate for every domain without a valid stored one, answers http-01 through the plain
//! listener (the challenges table in `TlsRuntime`), renews `renew_before` expiry, and backs
//! off exponentially on failure. It never blocks the data plane: certificates are swapped in
//! through the resolver's `ArcSwap`. The account key and the certificates live beside the
//! registry file, written atomically with a CRC-32, like the registry itself.
use super::certs;
use super::store::{Entry, Source};
use crate::config::tls::Acme;
use crate::state::DataPlane;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What the ACME file holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct AcmeState {
    /// instant-acme's account credentials (id, key), per directory URL.
    #[serde(default)]
    pub accounts: BTreeMap<String, serde_json::Value>,
    /// Domain → certificate chain and key, PEM.
    #[serde(default)]
    pub certificates: BTreeMap<String, StoredCert>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredCert {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// CRC-32 (IEEE) of the compact JSON serialization of `acme`.
    crc32: u32,
    acme: AcmeState,
}

fn crc_of(s: &AcmeState) -> u32 {
    crc32fast::hash(&serde_json::to_vec(s).unwrap_or_default())
}

/// The ACME file beside a registry file: `state.json` → `state.acme.json`.
pub fn file_beside(registry: &Path) -> PathBuf {
    registry.with_extension("acme.json")
}

/// Reads the ACME file. Missing: empty. Unparsable or failing its CRC: moved aside and
/// logged, never used (its certificates are then ordered again).
pub fn load(path: &Path) -> AcmeState {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return AcmeState::default(),
        Err(e) => {
            log::error!("acme store {}: cannot read: {e}", path.display());
            return AcmeState::default();
        }
    };
    let problem = match serde_json::from_slice::<OnDisk>(&bytes) {
        Ok(d) if d.version == 1 && d.crc32 == crc_of(&d.acme) => return d.acme,
        Ok(d) if d.version != 1 => format!("unknown version {}", d.version),
        Ok(_) => "checksum mismatch".to_string(),
        Err(e) => format!("does not parse: {e}"),
    };
    let aside = path.with_extension(format!("corrupt-{}", crate::clock::unix_ms()));
    let moved = std::fs::rename(path, &aside);
    log::error!(
        "acme store {}: {problem}; moved aside ({}); certificates will be ordered again",
        path.display(),
        match moved {
            Ok(()) => aside.display().to_string(),
            Err(e) => format!("failed: {e}"),
        }
    );
    AcmeState::default()
}

/// Writes the ACME file durably: temp file, fsync, rename, directory fsync.
pub fn save(path: &Path, state: &AcmeState) -> std::io::Result<()> {
    let doc = OnDisk {
        version: 1,
        crc32: crc_of(state),
        acme: state.clone(),
    };
    let mut data = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    data.push(b'\n');
    let tmp = path.with_extension("acme.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_private()
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Private keys: the file is readable by its owner only.
trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Delay before retry number `failures` (1 = after the first failure): 10 s doubling, at
/// most an hour, as Let's Encrypt asks of clients.
pub fn backoff(failures: u32) -> Duration {
    let secs = 10u64.saturating_mul(1 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(3600))
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

/// The store entries for the stored certificates that parse.
fn entries(state: &AcmeState, domains: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    for d in domains {
        let Some(c) = state.certificates.get(d) else {
            continue;
        };
        match certs::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()) {
            Ok(l) => out.push(Entry {
                loaded: Arc::new(l),
                hosts: vec![d.clone()],
                source: Source::Acme,
                default: false,
                file: None,
            }),
            Err(e) => log::error!("acme: stored certificate for {d} unusable: {}", e.message),
        }
    }
    out
}

/// Runs the ACME loop for `cfg` with the state file `path`; never returns.
pub async fn run(shared: Arc<DataPlane>, cfg: Acme, path: PathBuf) {
    let p = path.clone();
    let mut state = tokio::task::spawn_blocking(move || load(&p))
        .await
        .unwrap_or_default();
    shared.tls.set_acme(entries(&state, &cfg.domains));
    let mut failures: BTreeMap<String, (u32, tokio::time::Instant)> = BTreeMap::new();
    let mut account: Option<Account> = None;
    loop {
        let now = (crate::clock::unix_ms() / 1000) as i64;
        // Wake at least hourly: renewal dates are wall-clock, and sleeps are not.
        let mut wake = tokio::time::Instant::now() + Duration::from_secs(3600);
        for d in &cfg.domains {
            let due = state
                .certificates
                .get(d)
                .and_then(|c| certs::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).ok())
                .map_or(now, |l| {
                    renew_at(l.not_before, l.not_after, cfg.renew_before)
                });
            if due > now {
                let at = tokio::time::Instant::now() + Duration::from_secs((due - now) as u64);
                wake = wake.min(at);
                continue;
            }
            if let Some((_, retry)) = failures.get(d) {
                if *retry > tokio::time::Instant::now() {
                    wake = wake.min(*retry);
                    continue;
                }
            }
            log::info!(
                "acme: ordering a certificate for {d} from {}",
                cfg.directory
            );
            match order(&shared, &cfg, &mut state, &mut account, d).await {
                Ok(cert) => {
                    failures.remove(d);
                    let fresh = certs::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                        .map_or(now, |l| {
                            renew_at(l.not_before, l.not_after, cfg.renew_before)
                        });
                    let now = (crate::clock::unix_ms() / 1000) as i64;
                    if fresh <= now {
                        // A CA that issues certificates already due (a lifetime under a
                        // second): pace it like a failure instead of ordering in a loop.
                        log::warn!("acme: the new certificate for {d} is already due for renewal");
                        failures.insert(d.clone(), (0, tokio::time::Instant::now() + backoff(1)));
                    }
                    // Look again at once: the next turn sleeps until the renewal time.
                    wake = tokio::time::Instant::now();
                    state.certificates.insert(d.clone(), cert);
                    let (p, s) = (path.clone(), state.clone());
                    match tokio::task::spawn_blocking(move || save(&p, &s)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log::error!("acme: cannot write {}: {e}", path.display()),
                        Err(e) => log::error!("acme: cannot write {}: {e}", path.display()),
                    }
                    shared.tls.set_acme(entries(&state, &cfg.domains));
                    log::info!("acme: certificate for {d} installed");
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
                }
            }
        }
        tokio::time::sleep_until(wake).await;
    }
}

async fn account_for(cfg: &Acme, state: &mut AcmeState) -> Result<Account, String> {
    let builder = || match &cfg.ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    if let Some(v) = state.accounts.get(&cfg.directory) {
        if let Ok(creds) = serde_json::from_value::<AccountCredentials>(v.clone()) {
            let b = builder().map_err(|e| e.to_string())?;
            return b.from_credentials(creds).await.map_err(|e| e.to_string());
        }
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()
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
    state.accounts.insert(
        cfg.directory.clone(),
        serde_json::to_value(&creds).map_err(|e| e.to_string())?,
    );
    log::info!("acme: account created at {}", cfg.directory);
    Ok(account)
}

/// One order for `domain`, start to finish.
async fn order(
    shared: &DataPlane,
    cfg: &Acme,
    state: &mut AcmeState,
    account: &mut Option<Account>,
    domain: &str,
) -> Result<StoredCert, String> {
    let acct = match account {
        Some(a) => a.clone(),
        None => {
            let a = account_for(cfg, state).await?;
            *account = Some(a.clone());
            a
        }
    };
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
            shared.tls.add_challenge(token.clone(), auth);
            tokens.push(token);
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
        certs::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e| format!("issued certificate unusable: {}", e.message))?;
        Ok(StoredCert { cert_pem, key_pem })
    }
    .await;
    for t in &tokens {
        shared.tls.remove_challenge(t);
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
    }

    #[test]
    fn the_file_round_trips_and_a_bad_crc_is_moved_aside() {
        let d = std::env::temp_dir().join(format!("sy-acme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = file_beside(&d.join("state.json"));
        assert_eq!(p, d.join("state.acme.json"));
        assert_eq!(load(&p), AcmeState::default());
        let mut s = AcmeState::default();
        s.certificates.insert(
            "a.test".into(),
            StoredCert {
                cert_pem: "C".into(),
                key_pem: "K".into(),
            },
        );
        save(&p, &s).unwrap();
        assert_eq!(load(&p), s);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"C\"", "\"X\"");
        std::fs::write(&p, text).unwrap();
        assert_eq!(load(&p), AcmeState::default());
        assert!(!p.exists());
        assert!(std::fs::read_dir(&d).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
