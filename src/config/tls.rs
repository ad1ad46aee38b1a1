//! `[tls]`, `[[tls.certificates]]` and `[tls.acme]` as written and as validated (SPEC §9).
//! Certificate files are read here, once, so that `switchyard check` and a reload refuse a bad
//! file with its key and line, and what is served is exactly what was checked.
use super::address::Address;
use super::check::Checker;
use super::value::{List, Secs, Val};
use crate::tls::certs::{self, Loaded, Part};
use crate::tls::store::{self, Entry, Source};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<Val<String>>,
    pub min_version: Option<Val<String>>,
    pub redirect_http: Option<Val<bool>>,
    #[serde(default)]
    pub certificates: Vec<RawCert>,
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: Val<String>,
    pub key: Val<String>,
    pub hosts: Option<List>,
    pub default: Option<Val<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: Val<String>,
    pub email: Option<Val<String>>,
    pub domains: List,
    pub ca: Option<Val<String>>,
    pub renew_before: Option<Val<Secs>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    V1_2,
    V1_3,
}

/// One `[[tls.certificates]]`, loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The hosts it is served for: `hosts` if given, else its DNS SANs (less any host another
    /// certificate's `hosts` settles).
    pub hosts: Vec<String>,
    pub default: bool,
    pub loaded: Arc<Loaded>,
}

/// `[tls.acme]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Acme {
    pub directory: String,
    pub email: Option<String>,
    pub domains: Vec<String>,
    /// PEM of a CA to trust for the directory (a private ACME server).
    pub ca: Option<PathBuf>,
    pub renew_before: Duration,
}

/// A validated `[tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub listen: Address,
    pub min_version: MinVersion,
    pub redirect_http: bool,
    pub certificates: Vec<CertFile>,
    pub acme: Option<Acme>,
}

impl Tls {
    /// The file certificates as store entries (ACME ones are added by the ACME task).
    pub fn entries(&self) -> Vec<Entry> {
        self.certificates
            .iter()
            .map(|c| Entry {
                loaded: c.loaded.clone(),
                hosts: c.hosts.clone(),
                source: Source::File,
                default: c.default,
                file: Some(c.cert.clone()),
            })
            .collect()
    }
}

/// `[tls] listen` when not given.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// Default ACME renewal margin: 30 days.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

fn valid_dns_name(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks `[tls]`; `others` are the listen addresses already taken (HTTP, admin, `[[tcp]]`).
pub(super) fn validate(
    c: &mut Checker<'_>,
    raw: Option<&RawTls>,
    others: &[&Address],
) -> Option<Tls> {
    let raw = raw?;
    let listen = match &raw.listen {
        Some(v) => c.address(v, "tls.listen", true),
        None => super::address::parse(DEFAULT_LISTEN, true).ok(),
    };
    let listen = listen?;
    if listen.port != 0 && others.contains(&&listen) {
        c.problem(
            raw.listen.as_ref().map(|v| &v.span),
            "tls.listen",
            format!("{listen} is already used by another listener"),
        );
    }
    let min_version = match &raw.min_version {
        None => MinVersion::V1_2,
        Some(v) => match v.value.trim() {
            "1.2" => MinVersion::V1_2,
            "1.3" => MinVersion::V1_3,
            other => {
                c.problem(
                    Some(&v.span),
                    "tls.min_version",
                    format!("{other:?}: expected \"1.2\" or \"1.3\""),
                );
                MinVersion::V1_2
            }
        },
    };
    let now = (crate::clock::unix_ms() / 1000) as i64;
    // (index in raw, loaded, explicit hosts)
    let mut loaded: Vec<(usize, Arc<Loaded>, Option<Vec<String>>)> = Vec::new();
    let mut defaults = 0;
    for (i, rc) in raw.certificates.iter().enumerate() {
        let key = format!("tls.certificates[{i}]");
        if rc.default.as_ref().is_some_and(|d| d.value) {
            defaults += 1;
            if defaults == 2 {
                c.problem(
                    rc.default.as_ref().map(|d| &d.span),
                    &format!("{key}.default"),
                    "only one certificate can be the default".into(),
                );
            }
        }
        let hosts = rc.hosts.as_ref().map(|List(items)| {
            let mut hs = Vec::new();
            for (j, v) in items.iter().enumerate() {
                let h = store::normalize(v.value.trim());
                if !valid_dns_name(&h) {
                    c.problem(
                        Some(&v.span),
                        &format!("{key}.hosts[{j}]"),
                        format!("{:?} is not a DNS name (or *.name)", v.value),
                    );
                } else if !hs.contains(&h) {
                    hs.push(h);
                }
            }
            hs
        });
        match certs::load_files(rc.cert.value.as_ref(), rc.key.value.as_ref()) {
            Err(e) => {
                let (k, span) = match e.part {
                    Part::Cert => ("cert", &rc.cert.span),
                    Part::Key => ("key", &rc.key.span),
                };
                c.problem(Some(span), &format!("{key}.{k}"), e.message);
            }
            Ok(l) => {
                if l.not_after <= now {
                    c.problem(
                        Some(&rc.cert.span),
                        &format!("{key}.cert"),
                        format!(
                            "the certificate expired on {}",
                            crate::clock::rfc3339(l.not_after.max(0) as u64 * 1000)
                        ),
                    );
                    continue;
                }
                if hosts.is_none() && l.dns_names.is_empty() {
                    c.problem(
                        Some(&rc.cert.span),
                        &format!("{key}.cert"),
                        "the certificate names no DNS host (no DNS subject alternative name): give hosts".into(),
                    );
                }
                loaded.push((i, Arc::new(l), hosts));
            }
        }
    }
    let claims: Vec<(Vec<String>, bool)> = loaded
        .iter()
        .map(|(_, l, h)| match h {
            Some(h) => (h.clone(), true),
            None => (l.dns_names.clone(), false),
        })
        .collect();
    for conflict in store::conflicts(&claims) {
        let (i, j) = (loaded[conflict.first].0, loaded[conflict.second].0);
        let rc = &raw.certificates[j];
        c.problem(
            Some(&rc.cert.span),
            &format!("tls.certificates[{j}].cert"),
            format!(
                "{} is also claimed by tls.certificates[{i}]; settle it with hosts on one of them",
                conflict.host
            ),
        );
    }
    let explicit: Vec<String> = claims
        .iter()
        .filter(|(_, e)| *e)
        .flat_map(|(h, _)| h.iter().cloned())
        .collect();
    let certificates = loaded
        .into_iter()
        .zip(claims)
        .map(|((i, l, _), (hosts, is_explicit))| {
            let rc = &raw.certificates[i];
            CertFile {
                cert: PathBuf::from(&rc.cert.value),
                key: PathBuf::from(&rc.key.value),
                hosts: if is_explicit {
                    hosts
                } else {
                    hosts
                        .into_iter()
                        .filter(|h| !explicit.contains(h))
                        .collect()
                },
                default: rc.default.as_ref().is_some_and(|d| d.value),
                loaded: l,
            }
        })
        .collect();
    let acme = raw.acme.as_ref().map(|a| acme(c, a));
    if raw.certificates.is_empty() && acme.is_none() {
        c.problem(
            raw.listen.as_ref().map(|v| &v.span),
            "tls.certificates",
            "[tls] needs at least one [[tls.certificates]] or a [tls.acme] section".into(),
        );
    }
    Some(Tls {
        listen,
        min_version,
        redirect_http: raw.redirect_http.as_ref().is_some_and(|v| v.value),
        certificates,
        acme,
    })
}

fn acme(c: &mut Checker<'_>, a: &RawAcme) -> Acme {
    let dir = a.directory.value.trim();
    if !dir.starts_with("https://") && !dir.starts_with("http://") {
        c.problem(
            Some(&a.directory.span),
            "tls.acme.directory",
            format!("{dir:?}: expected the directory URL (https://...)"),
        );
    }
    let mut domains = Vec::new();
    for (j, v) in a.domains.0.iter().enumerate() {
        let d = store::normalize(v.value.trim());
        if d.starts_with("*.") || !valid_dns_name(&d) {
            c.problem(
                Some(&v.span),
                &format!("tls.acme.domains[{j}]"),
                format!(
                    "{:?}: expected a DNS name (http-01 cannot validate wildcards)",
                    v.value
                ),
            );
        } else if !domains.contains(&d) {
            domains.push(d);
        }
    }
    if a.domains.0.is_empty() {
        c.problem(
            Some(&a.directory.span),
            "tls.acme.domains",
            "needs at least one domain".into(),
        );
    }
    if let Some(e) = &a.email {
        if !e.value.contains('@') || e.value.contains([' ', '\r', '\n']) {
            c.problem(
                Some(&e.span),
                "tls.acme.email",
                format!("{:?} is not an email address", e.value),
            );
        }
    }
    if let Some(ca) = &a.ca {
        if let Err(m) = std::fs::read(&ca.value)
            .map_err(|e| format!("cannot read {}: {e}", ca.value))
            .and_then(|pem| certs::chain_from_pem(&pem))
        {
            c.problem(Some(&ca.span), "tls.acme.ca", m);
        }
    }
    let renew_before = c.positive(
        &a.renew_before,
        "tls.acme.renew_before",
        DEFAULT_RENEW_BEFORE,
    );
    Acme {
        directory: dir.to_string(),
        email: a.email.as_ref().map(|e| e.value.trim().to_string()),
        domains,
        ca: a.ca.as_ref().map(|v| PathBuf::from(&v.value)),
        renew_before,
    }
}
