//! TLS termination (SPEC §9): the certificates being served, the rustls server config, the
//! handshake on the HTTPS listener, and what the plain listener answers itself (the redirect
//! to https, ACME challenges). Certificates and config sit behind `ArcSwap`s: a reload or a
//! new ACME certificate is one swap, and a connection keeps the config it was accepted with.
pub mod acme;
pub mod certs;
pub mod client;
pub mod store;

use crate::config::tls::{MinVersion, Tls};
use crate::state::DataPlane;
use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use store::{CertStore, Entry, Resolver};

/// ALPN protocols offered to clients, in order of preference (SPEC §10).
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The path prefix of ACME http-01 challenges (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Handshakes on the HTTPS listener by result.
#[derive(Debug, Default)]
pub struct Handshakes {
    pub ok: AtomicU64,
    /// The client sent nothing (or not all) within `request_header_timeout`.
    pub timeout: AtomicU64,
    /// A protocol error, an alert, no certificate for the name, a version below min_version.
    pub error: AtomicU64,
}

/// TLS state shared by the listeners, the admin endpoints and the control plane.
#[derive(Debug, Default)]
pub struct TlsRuntime {
    pub resolver: Arc<Resolver>,
    /// None without `[tls]`.
    pub server_config: ArcSwapOption<ServerConfig>,
    pub handshakes: Handshakes,
    /// `[tls] redirect_http`, and the port https:// URLs name.
    redirect: AtomicBool,
    https_port: AtomicU16,
    /// The config's certificates and the ACME ones; the store is rebuilt from both whenever
    /// either changes. Control plane only.
    parts: Mutex<(Vec<Entry>, Vec<Entry>)>,
    /// Pending ACME http-01 challenges: token → key authorization.
    pub challenges: ArcSwap<Vec<(String, String)>>,
}

/// A rustls server config for `min_version`, serving what `resolver` picks.
pub fn server_config(min: MinVersion, resolver: Arc<Resolver>) -> ServerConfig {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut c = ServerConfig::builder_with_provider(certs::provider())
        .with_protocol_versions(versions)
        // The provider supports both versions; a failure here is a programming error.
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    c.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    c
}

impl TlsRuntime {
    /// Applies `[tls]` from a (re)loaded config: new file certificates, min_version and
    /// redirect. Connections already open keep the config they were accepted with.
    pub fn apply(&self, tls: Option<&Tls>) {
        let Some(tls) = tls else {
            self.redirect.store(false, Relaxed);
            self.set_parts(|p| p.0.clear());
            self.server_config.store(None);
            return;
        };
        self.set_parts(|p| p.0 = tls.entries());
        // The https port is the bound one (set once at start): a changed listen address
        // only takes effect at a restart.
        self.redirect.store(tls.redirect_http, Relaxed);
        self.server_config.store(Some(Arc::new(server_config(
            tls.min_version,
            self.resolver.clone(),
        ))));
    }

    /// Replaces the ACME certificates.
    pub fn set_acme(&self, entries: Vec<Entry>) {
        self.set_parts(|p| p.1 = entries);
    }

    /// The port the https listener actually has (it may have been configured as 0).
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Relaxed);
    }

    fn set_parts(&self, f: impl FnOnce(&mut (Vec<Entry>, Vec<Entry>))) {
        let mut p = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        let all: Vec<Entry> = p.0.iter().chain(p.1.iter()).cloned().collect();
        self.resolver.store.store(Arc::new(CertStore::new(all)));
    }

    /// Publishes an http-01 challenge answer until `remove_challenge`.
    pub fn add_challenge(&self, token: String, key_authorization: String) {
        self.challenges.rcu(|c| {
            let mut v = Vec::clone(c);
            v.retain(|(t, _)| *t != token);
            v.push((token.clone(), key_authorization.clone()));
            v
        });
    }

    pub fn remove_challenge(&self, token: &str) {
        self.challenges.rcu(|c| {
            let mut v = Vec::clone(c);
            v.retain(|(t, _)| t != token);
            v
        });
    }

    pub fn store(&self) -> arc_swap::Guard<Arc<CertStore>> {
        self.resolver.store.load()
    }

    /// What the plain listener answers itself, before any routing: an ACME challenge, or the
    /// redirect to https for a host a certificate names. None: route the request as usual.
    /// Costs two compares per request unless ACME or the redirect is in use.
    pub fn plain_answer(&self, target: &[u8], host_header: Option<&[u8]>) -> Option<PlainAnswer> {
        let tail = crate::http::head::origin_tail(target)?;
        if let Some(token) = tail.strip_prefix(ACME_CHALLENGE_PREFIX.as_bytes()) {
            let token = std::str::from_utf8(token).ok()?;
            let ch = self.challenges.load();
            return ch
                .iter()
                .find(|(t, _)| t == token)
                .map(|(_, auth)| PlainAnswer::Challenge(auth.clone()));
        }
        if !self.redirect.load(Relaxed) {
            return None;
        }
        let host = request_host(target, host_header)?;
        let host = host.as_str();
        if !is_dns_host(host) || self.store().named(host).is_none() {
            return None;
        }
        let port = self.https_port.load(Relaxed);
        let mut loc = format!("https://{host}");
        if port != 443 {
            loc.push_str(&format!(":{port}"));
        }
        if tail.first() != Some(&b'/') {
            loc.push('/');
        }
        // The target passed head parsing: visible ASCII, no CR/LF.
        loc.push_str(&String::from_utf8_lossy(tail));
        Some(PlainAnswer::Redirect(loc))
    }
}

/// An answer the plain listener gives without routing.
#[derive(Debug, PartialEq, Eq)]
pub enum PlainAnswer {
    /// 200 with the key authorization.
    Challenge(String),
    /// 308 to this location.
    Redirect(String),
}

/// Only names safe to echo into a Location header.
fn is_dns_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The request's host (SPEC §3): the absolute-form target's authority, else `Host`;
/// lowercased, without port or trailing dot.
pub fn request_host(target: &[u8], host_header: Option<&[u8]>) -> Option<String> {
    let starts =
        |p: &str| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let authority = if starts("http://") || starts("https://") {
        let rest = &target[target.iter().position(|b| *b == b':')? + 3..];
        let end = rest
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        &rest[..end]
    } else {
        host_header?
    };
    let a = std::str::from_utf8(authority).ok()?.trim();
    let host = if a.starts_with('[') {
        &a[..a.find(']')? + 1]
    } else {
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    };
    let h = store::normalize(host);
    (!h.is_empty()).then_some(h)
}

/// Serves one connection on the HTTPS listener: the handshake within
/// `request_header_timeout` (a client that opens TLS and sends nothing is cut off), then the
/// usual request loop over the TLS stream.
pub async fn serve(shared: Arc<DataPlane>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let Some(config) = shared.tls.server_config.load_full() else {
        return;
    };
    let timeout = shared.table.load().server.request_header_timeout;
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let hs = &shared.tls.handshakes;
    let stream = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Scanners and clients that do not trust us fail here all day: counted, and
            // logged only at debug.
            hs.error.fetch_add(1, Relaxed);
            log::debug!("TLS handshake from {peer} failed: {e}");
            return;
        }
        Err(_) => {
            hs.timeout.fetch_add(1, Relaxed);
            log::debug!("TLS handshake from {peer} timed out");
            return;
        }
    };
    hs.ok.fetch_add(1, Relaxed);
    let conn = stream.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    if conn.alpn_protocol() == Some(b"h2") {
        return crate::proxy::h2::serve(shared, stream, peer, Some(version)).await;
    }
    let info = crate::proxy::session::ConnInfo {
        tls: Some(crate::proxy::session::TlsInfo {
            version,
            sni: conn.server_name().map(str::to_string),
        }),
    };
    crate::proxy::session::serve(shared, stream, peer, info).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_rules() {
        assert_eq!(
            request_host(b"/x", Some(b"Example.COM:8080")).as_deref(),
            Some("example.com")
        );
        assert_eq!(
            request_host(b"/x", Some(b"example.com.")).as_deref(),
            Some("example.com")
        );
        assert_eq!(
            request_host(b"http://A.test:1/p", Some(b"other")).as_deref(),
            Some("a.test")
        );
        assert_eq!(
            request_host(b"/x", Some(b"[::1]:80")).as_deref(),
            Some("[::1]")
        );
        assert_eq!(request_host(b"/x", None), None);
    }

    fn runtime_with(names: &[&str], redirect: bool) -> TlsRuntime {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let l = certs::from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let rt = TlsRuntime::default();
        rt.set_parts(|p| {
            p.0 = vec![Entry {
                hosts: l.dns_names.clone(),
                loaded: Arc::new(l),
                source: store::Source::File,
                default: false,
                file: None,
            }]
        });
        rt.redirect.store(redirect, Relaxed);
        rt.https_port.store(8443, Relaxed);
        rt
    }

    #[test]
    fn redirects_only_named_hosts_and_never_challenges() {
        let rt = runtime_with(&["a.test", "*.w.test"], true);
        assert_eq!(
            rt.plain_answer(b"/p?q=1", Some(b"a.test".as_slice())),
            Some(PlainAnswer::Redirect("https://a.test:8443/p?q=1".into()))
        );
        assert_eq!(
            rt.plain_answer(b"http://x.w.test", Some(b"x.w.test".as_slice())),
            Some(PlainAnswer::Redirect("https://x.w.test:8443/".into()))
        );
        // The default certificate alone does not count: b.test is not named.
        assert_eq!(rt.plain_answer(b"/p", Some(b"b.test".as_slice())), None);
        assert_eq!(rt.plain_answer(b"/p", None), None);
        // Nothing unsafe is echoed into Location.
        assert_eq!(
            rt.plain_answer(b"/p", Some(b"a\"b.w.test".as_slice())),
            None
        );
        assert_eq!(
            rt.plain_answer(
                b"/.well-known/acme-challenge/tok",
                Some(b"a.test".as_slice())
            ),
            None
        );
        rt.challenges
            .store(Arc::new(vec![("tok".into(), "tok.thumb".into())]));
        assert_eq!(
            rt.plain_answer(
                b"/.well-known/acme-challenge/tok",
                Some(b"a.test".as_slice())
            ),
            Some(PlainAnswer::Challenge("tok.thumb".into()))
        );
        let off = runtime_with(&["a.test"], false);
        assert_eq!(off.plain_answer(b"/p", Some(b"a.test".as_slice())), None);
    }
}
