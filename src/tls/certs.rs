//! Loading one certificate: a PEM chain (leaf first) and its private key (PKCS#8, PKCS#1 or
//! SEC1), checked to belong together, with the leaf's DNS names and validity read out of it.
//! No I/O beyond reading the two files; the parsing works on bytes (ACME certificates come
//! from the store, not from files).
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A certificate ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub certified: Arc<CertifiedKey>,
    /// The leaf's DNS subject alternative names, lowercased (`*.example.com` kept as such).
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl PartialEq for Loaded {
    /// Same chain (the key follows from the chain for the purpose of "did it change").
    fn eq(&self, other: &Self) -> bool {
        self.certified.cert == other.certified.cert
    }
}

/// Which half of a certificate pair a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    pub part: Part,
    pub message: String,
}

fn err(part: Part, message: impl Into<String>) -> CertError {
    CertError {
        part,
        message: message.into(),
    }
}

/// The crypto provider every TLS config in switchyard uses (see Cargo.toml for the choice).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate file and its key file.
pub fn load_files(cert: &Path, key: &Path) -> Result<Loaded, CertError> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| err(Part::Cert, format!("cannot read {}: {e}", cert.display())))?;
    let key_pem = std::fs::read(key)
        .map_err(|e| err(Part::Key, format!("cannot read {}: {e}", key.display())))?;
    from_pem(&cert_pem, &key_pem)
}

/// Every certificate in a PEM text, in order.
pub fn chain_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        chain.push(item.map_err(|e| format!("invalid PEM: {e}"))?);
    }
    if chain.is_empty() {
        return Err("no CERTIFICATE block in the PEM file".into());
    }
    Ok(chain)
}

/// Parses and checks a PEM chain and key.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, CertError> {
    let chain = chain_from_pem(cert_pem).map_err(|m| err(Part::Cert, m))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        err(
            Part::Key,
            match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no private key (PKCS#8, PKCS#1 or SEC1 PEM block) in the file".to_string()
                }
                e => format!("invalid PEM: {e}"),
            },
        )
    })?;
    let (dns_names, not_before, not_after) =
        leaf_facts(&chain[0]).map_err(|m| err(Part::Cert, m))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            err(Part::Key, "the private key does not match the certificate")
        }
        e => err(Part::Key, format!("unusable private key: {e}")),
    })?;
    Ok(Loaded {
        certified: Arc::new(certified),
        dns_names,
        not_before,
        not_after,
    })
}

/// The leaf's DNS SANs (lowercased) and its validity window in Unix seconds.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the first certificate is not valid X.509: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if !d.is_empty() && !names.contains(&d) {
                    names.push(d);
                }
            }
        }
    }
    let v = cert.validity();
    Ok((names, v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn reads_names_and_validity() {
        let (c, k) = pair(&["Example.com", "*.example.com"]);
        let l = from_pem(c.as_bytes(), k.as_bytes()).unwrap();
        assert_eq!(l.dns_names, vec!["example.com", "*.example.com"]);
        assert!(l.not_after > l.not_before);
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (c, _) = pair(&["a.test"]);
        let (_, k) = pair(&["a.test"]);
        let e = from_pem(c.as_bytes(), k.as_bytes()).unwrap_err();
        assert_eq!(e.part, Part::Key);
        assert!(e.message.contains("does not match"), "{}", e.message);
    }

    #[test]
    fn refuses_files_without_blocks() {
        let (c, k) = pair(&["a.test"]);
        let e = from_pem(b"hello", k.as_bytes()).unwrap_err();
        assert_eq!(e.part, Part::Cert);
        let e = from_pem(c.as_bytes(), c.as_bytes()).unwrap_err();
        assert_eq!(e.part, Part::Key);
        assert!(e.message.contains("no private key"), "{}", e.message);
    }
}
