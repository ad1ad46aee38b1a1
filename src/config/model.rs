//! The validated config model: what `validate` produces and the rest of switchyard reads.
//! Values are parsed types (addresses, patterns, methods, durations), never strings to parse
//! again.
use super::address::Address;
use super::{tcp, tls};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: Address,
    pub workers: usize,
    pub connect_timeout: Duration,
    pub request_header_timeout: Duration,
    pub upstream_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub access_log: bool,
    pub access_log_format: crate::observe::access_log::Format,
    /// `-` = stdout.
    pub access_log_path: String,
    pub access_log_query: bool,
    pub gateway_header: String,
    /// Holding through a cold start, for pools that do not set their own (SPEC §11).
    pub hold: crate::resilience::hold::Hold,
    /// Cleartext HTTP/2 with prior knowledge on the plain listener (SPEC §10).
    pub h2c: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS offered to HTTP/2 clients.
    pub h2_max_concurrent_streams: u32,
    /// `underscore_headers`: request header names with `_` (SPEC §4).
    pub underscore_headers: crate::http::admit::Underscore,
    /// The fleet's hop marker, sent as `Via: 1.1 <via_name>` (loop detection, SPEC §4). When
    /// not configured, derived from the store's identity (see `validate::fleet_identity`).
    pub via_name: String,
    /// Failed API-key checks per source address per minute before 429 (0: no limit).
    pub auth_failure_limit: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: Address {
                host: "0.0.0.0".into(),
                port: 8080,
            },
            workers: 0,
            connect_timeout: Duration::from_secs(2),
            request_header_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 65536,
            max_connections: 10000,
            drain_timeout: Duration::from_secs(30),
            access_log: true,
            access_log_format: Default::default(),
            access_log_path: "-".into(),
            access_log_query: false,
            gateway_header: "switchyard".into(),
            hold: Default::default(),
            h2c: true,
            h2_max_concurrent_streams: 100,
            underscore_headers: crate::http::admit::Underscore::Drop,
            via_name: String::new(),
            auth_failure_limit: 20,
        }
    }
}

/// `[gateway]`: registration settings and the active health-check timings shared by every
/// checked address.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// The registration endpoints are on (false: they answer 404).
    pub enabled: bool,
    pub allow_registration_from: Vec<ipnet::IpNet>,
    /// Registrations per source address per minute.
    pub registration_rate_limit: u32,
    /// When set, every registration and deregistration needs a key holding it.
    pub registration_permission: Option<String>,
    pub health_check_interval: Duration,
    pub health_check_timeout: Duration,
    pub max_consecutive_failures: u32,
    pub down_check_interval: Duration,
    pub stop_ping_after_failures: u32,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            enabled: true,
            allow_registration_from: vec![
                "127.0.0.1/32".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            registration_rate_limit: 30,
            registration_permission: None,
            health_check_interval: Duration::from_secs(30),
            health_check_timeout: Duration::from_secs(5),
            max_consecutive_failures: 3,
            down_check_interval: Duration::from_secs(120),
            stop_ping_after_failures: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub address: Address,
    pub health_check_endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PathRoute {
    pub path: String,
    pub address: Address,
    pub health_check_endpoint: Option<String>,
    /// Normalized `hosts` entries (`api.example.com`, `*.example.com`); empty = every host.
    pub hosts: Vec<String>,
    pub rewrites: Rewrites,
}

/// A rule's rewrites (SPEC §3 Rewrites), validated: names are tokens that may be edited,
/// values are sendable, `strip_prefix` is a segment prefix of the rule's path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrites {
    /// Without a trailing `/`: `/files`.
    pub strip_prefix: Option<String>,
    pub set_request_headers: Vec<(String, String)>,
    pub remove_request_headers: Vec<String>,
    pub set_response_headers: Vec<(String, String)>,
    pub remove_response_headers: Vec<String>,
}

impl Rewrites {
    /// The wire form the table keeps.
    pub fn edits(&self) -> crate::http::edits::Edits {
        use crate::http::edits::{Edits, HeaderEdits};
        Edits {
            strip_prefix: self
                .strip_prefix
                .as_ref()
                .map(|p| p.as_bytes().to_vec().into_boxed_slice()),
            request: HeaderEdits::new(&self.set_request_headers, &self.remove_request_headers),
            response: HeaderEdits::new(&self.set_response_headers, &self.remove_response_headers),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub addresses: Vec<Address>,
    pub health_check_endpoint: Option<String>,
    pub hold: crate::resilience::hold::HoldOverride,
    /// `tls = true`: connections to the addresses are TLS, verified as configured here.
    pub tls: Option<Arc<crate::tls::client::BackendTls>>,
    /// `protocol`: HTTP/1.1, h2c or h2 (SPEC §10).
    pub protocol: crate::upstream::protocol::Protocol,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Parsed and canonical; displays as written in canonical form.
    pub path: crate::routing::pattern::Pattern,
    /// Upper-case method names; empty means any method.
    pub methods: Vec<String>,
    pub backend: String,
    pub permission: Option<String>,
    /// Normalized `hosts` entries; empty = every host.
    pub hosts: Vec<String>,
    pub rewrites: Rewrites,
}

/// `[[shards]]`: requests matching `path` go to the pod their key hashes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub name: String,
    pub path: crate::routing::pattern::Pattern,
    pub key: crate::routing::shard::KeySource,
    pub hash: crate::routing::shard::HashKind,
    /// One address per pod, by ordinal.
    pub addresses: Vec<Address>,
    pub health_check_endpoint: Option<String>,
    /// `on_unavailable = "reject"`: 503 instead of failing over to the next pod.
    pub reject: bool,
    /// Normalized `hosts` entries; empty = every host.
    pub hosts: Vec<String>,
    pub rewrites: Rewrites,
    pub hold: crate::resilience::hold::HoldOverride,
    /// `protocol`: HTTP/1.1, h2c or h2 (h2: TLS verified against the system's roots).
    pub protocol: crate::upstream::protocol::Protocol,
}

/// `[[api_keys]]`: a named key, stored as its SHA-256, and the permissions it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    pub permissions: Vec<String>,
}

/// `[store]`: where registrations live.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    File {
        path: std::path::PathBuf,
    },
    Etcd {
        /// `http://host:port` of each etcd member.
        endpoints: Vec<String>,
        /// Key prefix; registrations live at `<prefix>services/<name>`.
        prefix: String,
        full_refresh_interval: Duration,
    },
}

impl Default for Store {
    fn default() -> Self {
        Store::File {
            path: "switchyard-state.json".into(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub admin_listen: Address,
    pub gateway: Gateway,
    pub targets: Vec<Target>,
    pub path_routes: Vec<PathRoute>,
    pub backends: Vec<Backend>,
    pub routes: Vec<Route>,
    pub shards: Vec<Shard>,
    pub api_keys: Vec<ApiKey>,
    pub store: Store,
    /// `[[tcp]]` L4 listeners.
    pub tcp: Vec<tcp::Tcp>,
    pub outlier: crate::resilience::outlier::OutlierConfig,
    pub retry: crate::resilience::policy::RetryConfig,
    /// `[tls]`: the HTTPS listener and its certificates.
    pub tls: Option<tls::Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: Server::default(),
            admin_listen: Address {
                host: "127.0.0.1".into(),
                port: 9901,
            },
            gateway: Gateway::default(),
            targets: vec![],
            path_routes: vec![],
            backends: vec![],
            routes: vec![],
            shards: vec![],
            api_keys: vec![],
            store: Store::default(),
            tcp: vec![],
            outlier: Default::default(),
            retry: Default::default(),
            tls: None,
        }
    }
}

impl Config {
    /// The short summary `switchyard check` prints.
    pub fn summary(&self) -> String {
        format!(
            "listeners: http {}, admin {}, tcp {}{}\nroutes: {} pattern routes, {} path routes\npools: {} backends, catch-all of {} targets\nshards: {}",
            self.server.listen,
            self.admin_listen,
            self.tcp.len(),
            self.tls.as_ref().map_or(String::new(), |t| format!(
                ", https {} ({} certificate files{})",
                t.listen,
                t.certificates.len(),
                if t.acme.is_some() { ", acme" } else { "" }
            )),
            self.routes.len(),
            self.path_routes.len(),
            self.backends.len(),
            self.targets.len(),
            if self.shards.is_empty() {
                "0".to_string()
            } else {
                self.shards
                    .iter()
                    .map(|s| format!("{} ({} pods, {}, key {})", s.name, s.addresses.len(), s.hash.as_str(), s.key))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}
