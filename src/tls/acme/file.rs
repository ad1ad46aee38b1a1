//! The file keeper of ACME state: the account credentials and the certificates in one JSON
//! file beside the registry (`state.json` → `state.acme.json`), written like the registry
//! itself (temp file, fsync, rename, directory fsync) with a CRC-32 of its content, mode 0600.
//! A file that fails its check is moved aside and logged, never used.
use super::{Obtained, StoredCert};
use crate::config::tls::Acme;
use crate::state::Shared;
use instant_acme::Account;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
        use std::os::unix::fs::OpenOptionsExt;
        // Private keys: the file is readable by its owner only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
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

/// The ACME state of a single switchyard: the file, and what it holds in memory.
pub struct FileKeep {
    path: PathBuf,
    state: AcmeState,
}

impl FileKeep {
    pub async fn open(path: PathBuf) -> FileKeep {
        let p = path.clone();
        let state = tokio::task::spawn_blocking(move || load(&p))
            .await
            .unwrap_or_default();
        FileKeep { path, state }
    }

    pub fn certificates(&self) -> &BTreeMap<String, StoredCert> {
        &self.state.certificates
    }

    /// Orders a certificate for `domain` and writes it to the file.
    pub async fn obtain(
        &mut self,
        shared: &Shared,
        cfg: &Acme,
        account: &mut Option<Account>,
        domain: &str,
    ) -> Result<Obtained, String> {
        let (acct, created) =
            super::account(cfg, account, self.state.accounts.get(&cfg.directory)).await?;
        if let Some(creds) = created {
            self.state.accounts.insert(cfg.directory.clone(), creds);
        }
        super::log_ordering(cfg, domain);
        let cert = super::order(shared, &acct, domain, None).await?;
        self.state
            .certificates
            .insert(domain.to_string(), cert.clone());
        let (p, s) = (self.path.clone(), self.state.clone());
        match tokio::task::spawn_blocking(move || save(&p, &s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("acme: cannot write {}: {e}", self.path.display()),
            Err(e) => log::error!("acme: cannot write {}: {e}", self.path.display()),
        }
        Ok(Obtained::Ordered(cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
