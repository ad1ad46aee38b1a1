//! Which certificate a handshake gets: the exact host, then a wildcard (`*.example.com`, one
//! label as TLS clients accept it), then the default. Pure lookups over an immutable store; the
//! resolver rustls calls holds the current store behind an `ArcSwap`, so a reload or a new
//! ACME certificate is one swap and a handshake in progress keeps the store it loaded.
use super::certs::Loaded;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a certificate came from, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Acme,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Acme => "acme",
        }
    }
}

/// One served certificate and the hosts it is served for.
#[derive(Debug, Clone)]
pub struct Entry {
    pub loaded: Arc<Loaded>,
    /// Lowercased; `*.example.com` for a wildcard.
    pub hosts: Vec<String>,
    pub source: Source,
    pub default: bool,
    /// The certificate file, for files.
    pub file: Option<PathBuf>,
}

/// The certificates being served, indexed by host.
#[derive(Debug, Default)]
pub struct CertStore {
    pub entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    /// Keyed by the suffix after `*.` (`example.com`).
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

/// `host` lowercased, without a trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl CertStore {
    /// Indexes `entries`; the first one claiming a host keeps it (conflicts between files are
    /// refused at config load, and file certificates are listed before ACME ones, so a file
    /// wins over an ordered certificate for the same host). The default is the one marked so,
    /// else the first.
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut s = CertStore {
            default: entries
                .iter()
                .position(|e| e.default)
                .or((!entries.is_empty()).then_some(0)),
            entries,
            ..Default::default()
        };
        for (i, e) in s.entries.iter().enumerate() {
            for h in &e.hosts {
                match h.strip_prefix("*.") {
                    Some(suffix) => s.wildcard.entry(suffix.to_string()).or_insert(i),
                    None => s.exact.entry(h.clone()).or_insert(i),
                };
            }
        }
        s
    }

    /// The entry that names `host` exactly or by wildcard; the default does not count.
    pub fn named(&self, host: &str) -> Option<&Entry> {
        let host = normalize(host);
        if let Some(i) = self.exact.get(&host) {
            return Some(&self.entries[*i]);
        }
        let (_, suffix) = host.split_once('.')?;
        self.wildcard.get(suffix).map(|i| &self.entries[*i])
    }

    /// What a handshake with this SNI gets.
    pub fn select(&self, sni: Option<&str>) -> Option<&Entry> {
        sni.and_then(|h| self.named(h))
            .or_else(|| self.default.map(|i| &self.entries[i]))
    }

    /// Every host a certificate names (exactly or by wildcard), for `/metrics`.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .flat_map(|e| e.hosts.iter().map(move |h| (h.as_str(), e)))
    }
}

/// The `ResolvesServerCert` rustls calls for each handshake.
#[derive(Debug, Default)]
pub struct Resolver {
    pub store: ArcSwap<CertStore>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        store
            .select(hello.server_name())
            .map(|e| e.loaded.certified.clone())
    }
}

/// Two certificates that claim the same host: `(host, first, second)` by index.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflict {
    pub host: String,
    pub first: usize,
    pub second: usize,
}

/// Hosts claimed twice. `claims[i]` is certificate i's hosts and whether they were given as
/// `hosts` (explicit) or taken from its SANs. An explicit claim settles a host against SAN
/// claims; two claims of the same kind conflict.
pub fn conflicts(claims: &[(Vec<String>, bool)]) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, (usize, bool)> = HashMap::new();
    for (i, (hosts, explicit)) in claims.iter().enumerate() {
        for h in hosts {
            match seen.get(h.as_str()) {
                Some(&(j, ex)) if ex == *explicit => out.push(Conflict {
                    host: h.clone(),
                    first: j,
                    second: i,
                }),
                Some(&(_, true)) => {}
                _ => {
                    seen.insert(h, (i, *explicit));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str], default: bool) -> Entry {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let loaded = super::super::certs::from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        Entry {
            hosts: loaded.dns_names.clone(),
            loaded: Arc::new(loaded),
            source: Source::File,
            default,
            file: None,
        }
    }

    fn pick<'a>(s: &'a CertStore, sni: Option<&str>) -> Option<&'a str> {
        s.select(sni).map(|e| e.hosts[0].as_str())
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let s = CertStore::new(vec![
            entry(&["a.example.com"], false),
            entry(&["*.example.com"], false),
            entry(&["fallback.test"], true),
        ]);
        assert_eq!(pick(&s, Some("a.example.com")), Some("a.example.com"));
        assert_eq!(pick(&s, Some("A.Example.COM.")), Some("a.example.com"));
        assert_eq!(pick(&s, Some("b.example.com")), Some("*.example.com"));
        // One label only, as a TLS client checks the name.
        assert_eq!(pick(&s, Some("x.b.example.com")), Some("fallback.test"));
        assert_eq!(pick(&s, Some("example.com")), Some("fallback.test"));
        assert_eq!(pick(&s, None), Some("fallback.test"));
        assert!(s.named("example.com").is_none());
        assert!(s.named("fallback.test").is_some());
        assert!(s.named("other.test").is_none());
    }

    #[test]
    fn the_first_is_the_default_unless_one_is_marked() {
        let s = CertStore::new(vec![
            entry(&["one.test"], false),
            entry(&["two.test"], false),
        ]);
        assert_eq!(pick(&s, Some("nope.test")), Some("one.test"));
        assert!(CertStore::new(vec![]).select(None).is_none());
    }

    #[test]
    fn explicit_hosts_settle_san_overlaps() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            conflicts(&[(h(&["a.test", "b.test"]), false), (h(&["b.test"]), false)]),
            vec![Conflict {
                host: "b.test".into(),
                first: 0,
                second: 1
            }]
        );
        assert!(conflicts(&[(h(&["a.test"]), false), (h(&["a.test"]), true)]).is_empty());
        assert!(conflicts(&[(h(&["a.test"]), true), (h(&["a.test"]), false)]).is_empty());
        assert_eq!(
            conflicts(&[(h(&["a.test"]), true), (h(&["a.test"]), true)]).len(),
            1
        );
    }
}
