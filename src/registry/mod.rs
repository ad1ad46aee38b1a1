//! Self-registered services: the registration document and its validation, the rules a
//! registration must pass (allow list, permissions, conflicts, rate limit) and the store.
pub(crate) mod addr_class;
pub(crate) mod rules;
pub(crate) mod self_target;
pub(crate) mod store;
pub(crate) mod strict_json;

use crate::config::address::{self, Address};
use crate::routing::pattern::Pattern;
use crate::upstream::protocol::Protocol;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One route a service asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegRoute {
    /// Upper-case method; None = any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Parsed and canonical once, when the registration is; stored as its string.
    pub path: crate::routing::pattern::Pattern,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// Normalized host entries (SPEC §3 Hosts); empty = every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A registration as stored and as sent to `POST /internal/register-service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub service: String,
    pub url: String,
    pub health_endpoint: String,
    pub routes: Vec<RegRoute>,
    /// Seconds a request may wait for this service to turn UP (SPEC §11); None: `[server]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_timeout: Option<HoldSecs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_max: Option<u32>,
    /// TLS to the service (`"tls": true`, or an `https://` url).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// PEM text of the CA that signed the service's certificate (default: the system's
    /// roots). Text, not a path: a registrant cannot place files on the gateway, and a path
    /// would let it probe the gateway's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// `"protocol"`: HTTP/1.1 (the default), `"h2c"` or `"h2"` (SPEC §10).
    #[serde(default, skip_serializing_if = "Protocol::is_http1")]
    pub protocol: Protocol,
}

/// A hold time in milliseconds, written as fractional seconds (so `Registration` stays `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSecs(pub u64);

impl Serialize for HoldSecs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for HoldSecs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        crate::config::resilience::registration_hold(Some(secs), None)
            .map(|h| HoldSecs(h.timeout.map_or(0, |t| t.as_millis() as u64)))
            .map_err(serde::de::Error::custom)
    }
}

impl Registration {
    /// This service's own hold settings.
    pub fn hold(&self) -> crate::config::resilience::HoldOverride {
        crate::config::resilience::HoldOverride {
            timeout: self
                .hold_timeout
                .map(|h| std::time::Duration::from_millis(h.0)),
            max: self.hold_max,
        }
    }

    /// The `host:port` of the url (validated when the registration was accepted).
    pub fn address(&self) -> Option<Address> {
        parse_url(&self.url).ok().map(|(a, _)| a)
    }

    /// How the service is reached over TLS; None for plain HTTP (or settings that no longer
    /// parse, which registration refused).
    pub fn backend_tls(&self) -> Option<crate::tls::client::BackendTls> {
        if !self.tls {
            return None;
        }
        let ca = self.tls_ca.as_ref().map(|p| ("inline PEM", p.as_bytes()));
        crate::tls::client::BackendTls::new(ca, self.tls_server_name.as_deref()).ok()
    }
}

/// Registration attempts by result, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    by_result: [std::sync::atomic::AtomicU64; 6],
}

impl Counts {
    pub const RESULTS: [&'static str; 6] = [
        "ok",
        "invalid",
        "forbidden",
        "conflict",
        "rate_limited",
        "store_unavailable",
    ];

    pub fn count(&self, result: &str) {
        if let Some(i) = Self::RESULTS.iter().position(|r| *r == result) {
            self.by_result[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// (result, count) for every result.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Self::RESULTS
            .iter()
            .zip(&self.by_result)
            .map(|(r, c)| (*r, c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
}

/// Health endpoint used when a registration names none.
pub const DEFAULT_HEALTH_ENDPOINT: &str = "/health";
const MAX_ROUTES: usize = 256;
/// Most `hosts` entries one registered route may carry.
const MAX_HOSTS: usize = 64;

fn field_err(field: &str, msg: &str) -> String {
    format!("{field}: {msg}")
}

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`: never `.` or `..` (the name is a path segment of
/// `DELETE /internal/services/<name>` and a key in the etcd store).
pub fn valid_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// Checks where a registration's url leads: `addrs` are what its host resolves to (the
/// literal itself for an IP). Err names the field, like every registration error.
pub fn check_target(
    addrs: &[std::net::SocketAddr],
    own: &self_target::OwnListeners,
) -> Result<(), String> {
    for a in addrs {
        if let Some(why) = addr_class::forbidden(a.ip(), &own.host) {
            return Err(field_err("url", &format!("{} is {why}", a.ip())));
        }
    }
    if let Some((t, l)) = own.first_own(addrs) {
        return Err(field_err(
            "url",
            &format!(
                "{t} is switchyard's own {} listener ({}): that would be a forwarding loop",
                l.role, l.addr
            ),
        ));
    }
    Ok(())
}

/// `http://host:port` or `https://host:port` (a trailing `/` is tolerated); nothing else.
/// The flag: https.
pub fn parse_url(url: &str) -> Result<(Address, bool), String> {
    let (rest, https) = match url.strip_prefix("http://") {
        Some(r) => (r, false),
        None => (
            url.strip_prefix("https://")
                .ok_or("must start with http:// or https://")?,
            true,
        ),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("must be http://host:port with no path, query or credentials".into());
    }
    address::parse(rest, false).map(|a| (a, https))
}

/// Validates a registration body; errors name the field (`routes[1].path: ...`).
pub fn parse_registration(body: &[u8]) -> Result<Registration, String> {
    let v: Value = strict_json::parse(body).map_err(|e| match e {
        strict_json::StrictError::Duplicate(path) => field_err(&path, "duplicate key"),
        strict_json::StrictError::Syntax(e) => format!("body: invalid JSON: {e}"),
    })?;
    let obj = v.as_object().ok_or("body: expected a JSON object")?;
    for k in obj.keys() {
        if ![
            "service",
            "url",
            "health_endpoint",
            "routes",
            "hold_timeout",
            "hold_max",
            "tls",
            "tls_ca",
            "tls_server_name",
            "protocol",
        ]
        .contains(&k.as_str())
        {
            return Err(field_err(k, "unknown field"));
        }
    }
    let str_field = |name: &str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(field_err(name, "expected a string")),
        }
    };
    let service = str_field("service")?.ok_or_else(|| field_err("service", "missing"))?;
    if !valid_service_name(&service) {
        return Err(field_err(
            "service",
            "use 1-64 letters, digits, - _ . starting with a letter or digit",
        ));
    }
    let url = str_field("url")?.ok_or_else(|| field_err("url", "missing"))?;
    let (addr, https) = parse_url(&url).map_err(|e| field_err("url", &e))?;
    let protocol = match str_field("protocol")? {
        None => Protocol::Http1,
        Some(p) => Protocol::parse(&p).map_err(|m| field_err("protocol", &m))?,
    };
    let tls = match obj.get("tls") {
        None | Some(Value::Null) => https,
        Some(Value::Bool(b)) if *b || !https => *b,
        Some(Value::Bool(_)) => return Err(field_err("tls", "false contradicts an https:// url")),
        Some(_) => return Err(field_err("tls", "expected true or false")),
    };
    let explicit = match obj.get("tls") {
        Some(Value::Bool(_)) => Some(tls),
        _ if https => Some(true),
        _ => None,
    };
    let tls = crate::upstream::protocol::tls_with(protocol, explicit).map_err(|_| {
        field_err(
            "protocol",
            if protocol == Protocol::H2 {
                "\"h2\" is HTTP/2 over TLS, which \"tls\": false contradicts (use \"h2c\" for cleartext HTTP/2)"
            } else {
                "\"h2c\" is cleartext HTTP/2, which TLS (an https:// url or \"tls\": true) contradicts; use \"h2\""
            },
        )
    })?;
    let tls_ca = str_field("tls_ca")?;
    let tls_server_name = str_field("tls_server_name")?;
    if !tls && (tls_ca.is_some() || tls_server_name.is_some()) {
        return Err(field_err(
            if tls_ca.is_some() {
                "tls_ca"
            } else {
                "tls_server_name"
            },
            "only with tls: true",
        ));
    }
    if tls {
        let ca = tls_ca.as_ref().map(|p| ("tls_ca", p.as_bytes()));
        match crate::tls::client::BackendTls::new(ca, tls_server_name.as_deref()) {
            Ok(_) => {}
            Err(crate::tls::client::TlsSetupError::Ca(m)) => {
                return Err(field_err(
                    "tls_ca",
                    &format!("expected PEM text of a CA certificate ({m})"),
                ))
            }
            Err(crate::tls::client::TlsSetupError::ServerName(m)) => {
                return Err(field_err("tls_server_name", &m))
            }
        }
    }
    if let Some(ip) = addr.ip() {
        if let Some(why) = addr_class::forbidden(ip, &self_target::HostAddrs::default()) {
            return Err(field_err("url", &format!("{ip} is {why}")));
        }
    }
    let health_endpoint =
        str_field("health_endpoint")?.unwrap_or_else(|| DEFAULT_HEALTH_ENDPOINT.to_string());
    let grpc_check = health_endpoint == crate::health::grpc::ENDPOINT;
    if grpc_check && !protocol.is_h2() {
        return Err(field_err(
            "health_endpoint",
            "\"grpc\" (the gRPC health protocol) needs \"protocol\": \"h2c\" or \"h2\"",
        ));
    }
    if !grpc_check
        && (!health_endpoint.starts_with('/')
            || health_endpoint.bytes().any(|b| b <= b' ' || b == 0x7f))
    {
        return Err(field_err(
            "health_endpoint",
            "must be a path starting with /",
        ));
    }
    let routes_v = match obj.get("routes") {
        None | Some(Value::Null) => return Err(field_err("routes", "missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(field_err("routes", "expected an array")),
    };
    if routes_v.len() > MAX_ROUTES {
        return Err(field_err("routes", "too many routes"));
    }
    let mut routes = Vec::new();
    for (i, r) in routes_v.iter().enumerate() {
        let f = |name: &str| format!("routes[{i}].{name}");
        let o = r
            .as_object()
            .ok_or_else(|| field_err(&format!("routes[{i}]"), "expected an object"))?;
        for k in o.keys() {
            if !["method", "path", "permission", "hosts"].contains(&k.as_str()) {
                return Err(field_err(&f(k), "unknown field"));
            }
        }
        let get = |name: &str| -> Result<Option<String>, String> {
            match o.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(field_err(&f(name), "expected a string")),
            }
        };
        let path = get("path")?.ok_or_else(|| field_err(&f("path"), "missing"))?;
        let pattern = Pattern::parse(&path).map_err(|e| field_err(&f("path"), &e))?;
        let method = match get("method")? {
            None => None,
            Some(m) if m == "*" || m.eq_ignore_ascii_case("any") => None,
            Some(m) if m.trim() != m => {
                return Err(field_err(&f("method"), "not a valid method token"))
            }
            Some(m) => Some(
                crate::http::token::method(&m)
                    .ok_or_else(|| field_err(&f("method"), "not a valid method token"))?,
            ),
        };
        let permission = get("permission")?;
        if let Some(p) = &permission {
            if !crate::config::validate::valid_permission(p) {
                return Err(field_err(&f("permission"), "not a valid permission name"));
            }
        }
        let hosts = match o.get("hosts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(field_err(
                    &f("hosts"),
                    "empty list: leave hosts out to match every host",
                ))
            }
            Some(Value::Array(a)) if a.len() > MAX_HOSTS => {
                return Err(field_err(&f("hosts"), "too many hosts"))
            }
            Some(Value::Array(a)) => {
                let mut hs: Vec<String> = Vec::new();
                for (j, h) in a.iter().enumerate() {
                    let fj = format!("routes[{i}].hosts[{j}]");
                    let Value::String(h) = h else {
                        return Err(field_err(&fj, "expected a string"));
                    };
                    let h = crate::routing::host::parse(h).map_err(|e| field_err(&fj, &e))?;
                    if hs.contains(&h) {
                        return Err(field_err(&fj, "listed twice"));
                    }
                    hs.push(h);
                }
                hs
            }
            Some(_) => return Err(field_err(&f("hosts"), "expected an array of strings")),
        };
        let route = RegRoute {
            method,
            path: pattern,
            permission,
            hosts,
        };
        let dup = routes.iter().any(|r: &RegRoute| {
            r.path == route.path
                && (r.method.is_none() || route.method.is_none() || r.method == route.method)
                && crate::routing::host::share_entry(&r.hosts, &route.hosts)
        });
        if dup {
            return Err(field_err(&f("path"), "listed twice"));
        }
        routes.push(route);
    }
    let num = |name: &str| -> Result<Option<&serde_json::Number>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n)),
            Some(_) => Err(field_err(name, "expected a number")),
        }
    };
    let hold_timeout = num("hold_timeout")?.map(|n| n.as_f64().unwrap_or(-1.0));
    let hold_max = match num("hold_max")? {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| field_err("hold_max", "expected a whole number"))?,
        ),
    };
    let hold =
        crate::config::resilience::registration_hold(hold_timeout, hold_max).map_err(|e| {
            let field = if e.starts_with("hold_max") {
                "hold_max"
            } else {
                "hold_timeout"
            };
            field_err(field, &e)
        })?;
    Ok(Registration {
        service,
        url,
        health_endpoint,
        routes,
        hold_timeout: hold.timeout.map(|t| HoldSecs(t.as_millis() as u64)),
        hold_max: hold.max,
        tls,
        tls_ca,
        tls_server_name,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_example() {
        let r = parse_registration(
            br#"{"service": "sagjan", "url": "http://127.0.0.1:7812", "health_endpoint": "/health",
 "routes": [{"method": "GET", "path": "/api/comments/*", "permission": "comments:read"}]}"#,
        )
        .unwrap();
        assert_eq!(r.service, "sagjan");
        assert_eq!(r.routes[0].method.as_deref(), Some("GET"));
        assert_eq!(r.address().unwrap().port, 7812);
    }

    #[test]
    fn service_names() {
        for ok in ["a", "sagjan", "A.b-c_d", "0", &"x".repeat(64)] {
            assert!(valid_service_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".a",
            "_a",
            "-a",
            "a b",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(!valid_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn targets_that_loop_or_leak_are_refused() {
        use self_target::{HostAddrs, Listener, OwnListeners};
        let own = OwnListeners::new(
            vec![Listener {
                role: "admin",
                addr: "127.0.0.1:9901".parse().unwrap(),
            }],
            HostAddrs::default(),
        );
        let e = check_target(&["127.0.0.1:9901".parse().unwrap()], &own).unwrap_err();
        assert!(e.starts_with("url:") && e.contains("admin"), "{e}");
        let e = check_target(
            &[
                "10.0.0.1:80".parse().unwrap(),
                "169.254.169.254:80".parse().unwrap(),
            ],
            &own,
        )
        .unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        assert!(check_target(&["127.0.0.1:9902".parse().unwrap()], &own).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 17] = [
            (br#"{"service": ".", "url": "http://a:1", "routes": []}"#, "service:"),
            (br#"{"service": "..", "url": "http://a:1", "routes": []}"#, "service:"),
            (br#"{"service": "-a", "url": "http://a:1", "routes": []}"#, "service:"),
            (br#"{"service": "a", "url": "http://169.254.169.254:80", "routes": []}"#, "url:"),
            (br#"{"service": "a", "url": "http://[fe80::1]:80", "routes": []}"#, "url:"),
            (br#"{"service": "a", "url": "http://0.0.0.0:80", "routes": []}"#, "url:"),
            (br#"{"service": "a", "url": "http://a:1", "url": "http://b:1", "routes": []}"#, "url: duplicate"),
            (b"{", "body"),
            (b"[]", "body"),
            (br#"{"url": "http://a:1", "routes": []}"#, "service:"),
            (br#"{"service": "a b", "url": "http://a:1", "routes": []}"#, "service:"),
            (br#"{"service": "a", "url": "ftp://a:1", "routes": []}"#, "url:"),
            (br#"{"service": "a", "url": "http://a:1/x", "routes": []}"#, "url:"),
            (br#"{"service": "a", "url": "http://a:1", "routes": [{"path": "x"}]}"#, "routes[0].path"),
            (br#"{"service": "a", "url": "http://a:1", "routes": [{"path": "/x", "method": "G T"}]}"#, "routes[0].method"),
            (br#"{"service": "a", "url": "http://a:1", "routes": [{"path": "/x", "colour": 1}]}"#, "routes[0].colour"),
            (br#"{"service": "a", "url": "http://a:1", "health_endpoint": 5, "routes": []}"#, "health_endpoint"),
        ];
        for (body, field) in cases {
            let e = parse_registration(body).unwrap_err();
            assert!(e.starts_with(field), "{e} should name {field}");
        }
    }

    /// A stored route keeps its pattern as the string it was registered with and reads it back
    /// through Pattern::parse: a file edited to hold a pattern registration would refuse does
    /// not load one.
    #[test]
    fn stored_patterns_round_trip_and_are_parsed_again() {
        let r: RegRoute = serde_json::from_str(r#"{"path": "/api/*/x/*"}"#).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap()["path"], "/api/*/x/*");
        for bad in [
            r#"{"path": "/a/../b"}"#,
            r#"{"path": "api"}"#,
            r#"{"path": "/%2f"}"#,
        ] {
            assert!(serde_json::from_str::<RegRoute>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_field() {
        let r = parse_registration(
            br#"{"service": "g", "url": "http://127.0.0.1:7000", "protocol": "h2c", "health_endpoint": "grpc", "routes": [{"path": "/g.S/*"}]}"#,
        )
        .unwrap();
        assert_eq!(r.protocol, Protocol::H2c);
        assert!(!r.tls);
        // Written to the store and read back the same; http1 is not written at all.
        let back: Registration = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let r = parse_registration(
            br#"{"service": "g", "url": "http://127.0.0.1:7000", "protocol": "h2", "routes": []}"#,
        )
        .unwrap();
        assert!(r.tls && r.protocol == Protocol::H2);
        let r = parse_registration(
            br#"{"service": "g", "url": "http://127.0.0.1:7000", "routes": []}"#,
        )
        .unwrap();
        assert!(!serde_json::to_string(&r).unwrap().contains("protocol"));
        for (body, field) in [
            (&br#"{"service": "g", "url": "http://a:1", "protocol": "h3", "routes": []}"#[..], "protocol:"),
            (br#"{"service": "g", "url": "http://a:1", "protocol": 2, "routes": []}"#, "protocol:"),
            (br#"{"service": "g", "url": "https://a:1", "protocol": "h2c", "routes": []}"#, "protocol:"),
            (br#"{"service": "g", "url": "http://a:1", "tls": false, "protocol": "h2", "routes": []}"#, "protocol:"),
            (br#"{"service": "g", "url": "http://a:1", "health_endpoint": "grpc", "routes": []}"#, "health_endpoint:"),
        ] {
            let e = parse_registration(body).unwrap_err();
            assert!(e.starts_with(field), "{e} should name {field}");
        }
    }
}
