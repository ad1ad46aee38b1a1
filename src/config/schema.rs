//! The config file as written: serde structs that mirror SPEC §2 key for key. Unknown keys
//! are refused here; meaning and cross-references are checked in `validate`.
use super::value::{List, Secs, Val};
use serde::Deserialize;

/// `set_request_headers = { "X-Env" = "prod" }`: names and values in the order written; each
/// value keeps its span for errors.
#[derive(Debug, Default)]
pub struct HeaderTable(pub Vec<(String, Val<String>)>);

impl<'de> Deserialize<'de> for HeaderTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeaderTable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of header names and string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderTable, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Val<String>>()? {
                    v.push((k, val));
                }
                Ok(HeaderTable(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The older format's top-level listen address, taken as `[server] listen`.
    pub listen: Option<Val<String>>,
    pub server: Option<RawServer>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub path_routes: Vec<RawPathRoute>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub gateway: Option<RawGateway>,
    #[serde(default)]
    pub shards: Vec<RawShard>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    pub store: Option<RawStore>,
    #[serde(default)]
    pub tcp: Vec<super::tcp::RawTcp>,
    pub outlier: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    pub tls: Option<super::tls::RawTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Val<String>>,
    pub workers: Option<Val<usize>>,
    pub connect_timeout: Option<Val<Secs>>,
    pub request_header_timeout: Option<Val<Secs>>,
    pub upstream_timeout: Option<Val<Secs>>,
    pub idle_timeout: Option<Val<Secs>>,
    pub max_header_bytes: Option<Val<usize>>,
    pub max_connections: Option<Val<usize>>,
    pub drain_timeout: Option<Val<Secs>>,
    pub access_log: Option<Val<bool>>,
    pub access_log_format: Option<Val<String>>,
    pub access_log_path: Option<Val<String>>,
    pub access_log_query: Option<Val<bool>>,
    pub gateway_header: Option<Val<String>>,
    pub hold_timeout: Option<Val<Secs>>,
    pub hold_max: Option<Val<u32>>,
    pub h2c: Option<Val<bool>>,
    pub h2_max_concurrent_streams: Option<Val<u32>>,
    pub underscore_headers: Option<Val<String>>,
    pub via_name: Option<Val<String>>,
    pub auth_failure_limit: Option<Val<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Val<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub address: Val<String>,
    pub health_check_endpoint: Option<Val<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRoute {
    pub path: Val<String>,
    pub address: Val<String>,
    pub health_check_endpoint: Option<Val<String>>,
    pub hosts: Option<List>,
    pub strip_prefix: Option<Val<String>>,
    pub set_request_headers: Option<HeaderTable>,
    pub remove_request_headers: Option<List>,
    pub set_response_headers: Option<HeaderTable>,
    pub remove_response_headers: Option<List>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Val<String>,
    pub addresses: List,
    pub health_check_endpoint: Option<Val<String>>,
    pub hold_timeout: Option<Val<Secs>>,
    pub hold_max: Option<Val<u32>>,
    pub tls: Option<Val<bool>>,
    pub tls_ca: Option<Val<String>>,
    pub tls_server_name: Option<Val<String>>,
    pub protocol: Option<Val<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Val<String>,
    pub methods: Option<List>,
    pub backend: Val<String>,
    pub permission: Option<Val<String>>,
    pub hosts: Option<List>,
    pub strip_prefix: Option<Val<String>>,
    pub set_request_headers: Option<HeaderTable>,
    pub remove_request_headers: Option<List>,
    pub set_response_headers: Option<HeaderTable>,
    pub remove_response_headers: Option<List>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub enabled: Option<Val<bool>>,
    pub health_check_interval: Option<Val<Secs>>,
    pub health_check_timeout: Option<Val<Secs>>,
    pub max_consecutive_failures: Option<Val<u32>>,
    pub down_check_interval: Option<Val<Secs>>,
    pub stop_ping_after_failures: Option<Val<u32>>,
    pub allow_registration_from: Option<List>,
    pub registration_rate_limit: Option<Val<u32>>,
    pub registration_permission: Option<Val<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShard {
    pub name: Val<String>,
    pub path: Val<String>,
    pub key: Val<String>,
    pub pods: Option<Val<u32>>,
    pub address: Option<Val<String>>,
    pub addresses: Option<List>,
    pub hash: Option<Val<String>>,
    pub health_check_endpoint: Option<Val<String>>,
    pub on_unavailable: Option<Val<String>>,
    pub hosts: Option<List>,
    pub strip_prefix: Option<Val<String>>,
    pub set_request_headers: Option<HeaderTable>,
    pub remove_request_headers: Option<List>,
    pub set_response_headers: Option<HeaderTable>,
    pub remove_response_headers: Option<List>,
    pub hold_timeout: Option<Val<Secs>>,
    pub hold_max: Option<Val<u32>>,
    pub protocol: Option<Val<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: Val<String>,
    pub key_sha256: Option<Val<String>>,
    pub key: Option<Val<String>>,
    #[serde(default)]
    pub permissions: Option<List>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<Val<String>>,
    pub path: Option<Val<String>>,
    pub endpoints: Option<List>,
    pub prefix: Option<Val<String>>,
    pub full_refresh_interval: Option<Val<Secs>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<Val<u32>>,
    pub consecutive_5xx: Option<Val<u32>>,
    pub base_ejection_time: Option<Val<Secs>>,
    pub max_ejection_percent: Option<Val<u32>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Val<u32>>,
    pub on: Option<List>,
    pub budget_percent: Option<Val<u32>>,
    pub min_retries_per_second: Option<Val<u32>>,
    pub max_retry_body: Option<Val<u64>>,
}
