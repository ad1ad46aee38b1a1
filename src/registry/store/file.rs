//! The embedded store: the registry as one JSON file with a CRC-32 of its content, replaced
//! atomically (temp file, fsync, rename, directory fsync) so a crash leaves the old or the new.
use super::{BoxFuture, Store, StoreError};
use crate::registry::Registration;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// CRC-32 (IEEE) of the compact JSON serialization of `services`.
    crc32: u32,
    services: Vec<Registration>,
}

pub struct FileStore {
    path: PathBuf,
}

fn crc_of(services: &[Registration]) -> u32 {
    crc32fast::hash(&serde_json::to_vec(services).unwrap_or_default())
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        FileStore { path }
    }

    /// Reads the file. A missing file is an empty registry; a file that does not parse or
    /// fails its checksum is moved aside (never silently used) and the registry starts empty.
    pub fn load_sync(&self) -> Vec<Registration> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
            Err(e) => {
                log::error!(
                    "store {}: cannot read: {e}; starting with an empty registry",
                    self.path.display()
                );
                return vec![];
            }
        };
        let problem = match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(d) if d.version == 1 && d.crc32 == crc_of(&d.services) => return d.services,
            Ok(d) if d.version != 1 => format!("unknown version {}", d.version),
            Ok(_) => "checksum mismatch".to_string(),
            Err(e) => format!("does not parse: {e}"),
        };
        let aside = self
            .path
            .with_extension(format!("corrupt-{}", crate::clock::unix_ms()));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => log::error!(
                "store {}: {problem}; moved aside to {} and starting with an empty registry",
                self.path.display(),
                aside.display()
            ),
            Err(e) => log::error!(
                "store {}: {problem}; could not move it aside ({e}); starting with an empty registry",
                self.path.display()
            ),
        }
        vec![]
    }

    /// Writes the whole registry durably.
    pub fn save_sync(&self, all: &[Registration]) -> std::io::Result<()> {
        let doc = OnDisk {
            version: 1,
            crc32: crc_of(all),
            services: all.to_vec(),
        };
        let mut data = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
        data.push(b'\n');
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)
    }
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(async move { Ok(self.load_sync()) })
    }

    fn put<'a>(
        &'a self,
        _reg: &'a Registration,
        all: &'a [Registration],
        _check: super::ConflictCheck<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // One process owns the file and checked conflicts under the control lock already.
        self.put_all(all)
    }

    fn health(&self) -> serde_json::Value {
        serde_json::json!({"kind": "file", "path": self.path.display().to_string()})
    }

    fn delete<'a>(
        &'a self,
        _service: &'a str,
        all: &'a [Registration],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.put_all(all)
    }
}

impl FileStore {
    fn put_all<'a>(&'a self, all: &'a [Registration]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let all = all.to_vec();
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || FileStore::new(path).save_sync(&all))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display()))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegRoute;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sy-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("state.json")
    }

    fn reg() -> Registration {
        Registration {
            service: "sagjan".into(),
            url: "http://127.0.0.1:7812".into(),
            health_endpoint: "/health".into(),
            tls: false,
            tls_ca: None,
            tls_server_name: None,
            protocol: Default::default(),
            routes: vec![RegRoute {
                method: Some("GET".into()),
                path: crate::routing::pattern::Pattern::parse("/api/comments/*").unwrap(),
                permission: None,
                hosts: vec![],
            }],
            hold_timeout: None,
            hold_max: None,
        }
    }

    #[test]
    fn round_trip() {
        let p = tmp("rt");
        let s = FileStore::new(p.clone());
        assert!(s.load_sync().is_empty());
        s.save_sync(&[reg()]).unwrap();
        assert_eq!(s.load_sync(), vec![reg()]);
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let p = tmp("bad");
        let s = FileStore::new(p.clone());
        s.save_sync(&[reg()]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap().replace("7812", "7813");
        std::fs::write(&p, text).unwrap();
        assert!(
            s.load_sync().is_empty(),
            "checksum mismatch must not be used"
        );
        assert!(!p.exists());
        let aside: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(s.load_sync().is_empty());
    }
}
