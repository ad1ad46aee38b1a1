//! TLS to backends (`tls = true` on a `[[backends]]` or a registration): the client config
//! (its roots: `tls_ca`, else the system's), the name the backend's certificate is verified
//! against (`tls_server_name`, else the address's host), and the handshake over a connected
//! socket. A verification failure is an error like a refused connect: the next candidate.
use super::certs;
use crate::config::address::Address;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// ALPN towards backends of `protocol = "http1"`; those of `protocol = "h2"` offer `h2` only
/// (`h2_config`), so a backend that cannot speak it fails the connect instead of answering
/// in the wrong protocol.
const BACKEND_ALPN: &[&[u8]] = &[b"http/1.1"];
const BACKEND_ALPN_H2: &[&[u8]] = &[b"h2"];

/// How one backend is reached over TLS.
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// The same with ALPN `h2`, for HTTP/2 backends.
    pub h2_config: Arc<ClientConfig>,
    /// `tls_server_name`; None: the address's host.
    pub server_name: Option<String>,
    /// `tls_ca` as given (a path, or `inline PEM` for a registration), for logs and `/health`.
    pub ca: Option<String>,
    /// Digest of what decides verification (CA bytes, server name): upstreams whose settings
    /// did not change keep their health cell across a reload.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .field("ca", &self.ca)
            .finish()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

#[derive(Debug)]
pub enum TlsSetupError {
    Ca(String),
    ServerName(String),
}

/// The system's trust roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("system trust roots: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                log::warn!("no system trust roots found: backends with tls = true and no tls_ca will fail verification");
            } else {
                log::debug!("{added} system trust roots ({ignored} unusable)");
            }
            Arc::new(roots)
        })
        .clone()
}

impl BackendTls {
    /// `ca`: (label, PEM) of the CA(s) to trust instead of the system's roots.
    pub fn new(
        ca: Option<(&str, &[u8])>,
        server_name: Option<&str>,
    ) -> Result<Self, TlsSetupError> {
        let mut digest = Sha256::new();
        let roots = match ca {
            Some((label, pem)) => {
                let chain = certs::chain_from_pem(pem)
                    .map_err(|m| TlsSetupError::Ca(format!("{label}: {m}")))?;
                let mut roots = RootCertStore::empty();
                for c in chain {
                    digest.update(c.as_ref());
                    roots.add(c).map_err(|e| {
                        TlsSetupError::Ca(format!("{label}: unusable CA certificate: {e}"))
                    })?;
                }
                Arc::new(roots)
            }
            None => {
                digest.update(b"system roots");
                system_roots()
            }
        };
        if let Some(n) = server_name {
            ServerName::try_from(n.to_string()).map_err(|_| {
                TlsSetupError::ServerName(format!("{n:?} is not a DNS name or IP address"))
            })?;
            digest.update(b"\0name\0");
            digest.update(n.as_bytes());
        }
        let mut config = ClientConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut h2_config = config.clone();
        config.alpn_protocols = BACKEND_ALPN.iter().map(|p| p.to_vec()).collect();
        h2_config.alpn_protocols = BACKEND_ALPN_H2.iter().map(|p| p.to_vec()).collect();
        Ok(BackendTls {
            config: Arc::new(config),
            h2_config: Arc::new(h2_config),
            server_name: server_name.map(str::to_string),
            ca: ca.map(|(l, _)| l.to_string()),
            fingerprint: digest.finalize().into(),
        })
    }

    /// The name the certificate must carry when connecting to `addr`.
    pub fn name_for(&self, addr: &Address) -> std::io::Result<ServerName<'static>> {
        let n = self.server_name.as_deref().unwrap_or(&addr.host);
        let n = n.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(n.to_string())
            .map_err(|_| std::io::Error::other(format!("{n:?} is not a valid TLS server name")))
    }

    /// The TLS handshake over a connected socket; a certificate that fails verification is
    /// an error naming the reason.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &Address,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.handshake_with(&self.config, tcp, addr).await
    }

    /// The handshake for an HTTP/2 backend: ALPN `h2` offered, and required of the answer
    /// (a server that ignores ALPN would take our HTTP/2 preface for garbage).
    pub async fn handshake_h2(
        &self,
        tcp: TcpStream,
        addr: &Address,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let s = self.handshake_with(&self.h2_config, tcp, addr).await?;
        if s.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other(
                "TLS handshake: the backend did not select ALPN h2 (protocol = \"h2\")",
            ));
        }
        Ok(s)
    }

    async fn handshake_with(
        &self,
        config: &Arc<ClientConfig>,
        tcp: TcpStream,
        addr: &Address,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self.name_for(addr)?;
        let shown = self
            .server_name
            .as_deref()
            .unwrap_or(&addr.host)
            .to_string();
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| std::io::Error::other(format!("TLS handshake (as {shown}): {e}")))
    }
}
