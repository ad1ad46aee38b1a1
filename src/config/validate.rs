//! Turns the config as written into the validated model: defaults, address and pattern
//! checks, cross-references. Collects every problem instead of stopping at the first.
use super::address;
use super::check::{line_of, Checker, Problem};
use super::model::{Backend, Config, Gateway, PathRoute, Route, Server, Target};
use super::schema::RawConfig;
use super::value::{List, Val};
use crate::routing::pattern::Pattern;
use std::collections::HashSet;

/// `tls`, `tls_ca`, `tls_server_name` of a `[[backends]]`: the CA file is read here so that a
/// bad one is a config error with its line.
fn backend_tls(
    c: &mut Checker<'_>,
    b: &super::schema::RawBackend,
    key: &str,
    protocol: crate::upstream::protocol::Protocol,
) -> Option<std::sync::Arc<crate::tls::client::BackendTls>> {
    let on = match crate::upstream::protocol::tls_with(protocol, b.tls.as_ref().map(|v| v.value)) {
        Ok(on) => on,
        Err(m) => {
            let span = b.tls.as_ref().map(|v| &v.span);
            c.problem(span, &format!("{key}.protocol"), m.into());
            return None;
        }
    };
    if !on {
        for (v, k) in [
            (&b.tls_ca, "tls_ca"),
            (&b.tls_server_name, "tls_server_name"),
        ] {
            if let Some(v) = v {
                c.problem(
                    Some(&v.span),
                    &format!("{key}.{k}"),
                    "only with tls = true or protocol = \"h2\"".into(),
                );
            }
        }
        return None;
    }
    let ca = match &b.tls_ca {
        None => None,
        Some(v) => match std::fs::read(v.value.trim()) {
            Ok(pem) => Some((v, pem)),
            Err(e) => {
                c.problem(
                    Some(&v.span),
                    &format!("{key}.tls_ca"),
                    format!("cannot read {}: {e}", v.value.trim()),
                );
                return None;
            }
        },
    };
    let name = b.tls_server_name.as_ref();
    match crate::tls::client::BackendTls::new(
        ca.as_ref().map(|(v, pem)| (v.value.trim(), pem.as_slice())),
        name.map(|v| v.value.trim()),
    ) {
        Ok(t) => Some(std::sync::Arc::new(t)),
        Err(crate::tls::client::TlsSetupError::Ca(m)) => {
            c.problem(ca.map(|(v, _)| &v.span), &format!("{key}.tls_ca"), m);
            None
        }
        Err(crate::tls::client::TlsSetupError::ServerName(m)) => {
            c.problem(name.map(|v| &v.span), &format!("{key}.tls_server_name"), m);
            None
        }
    }
}

pub fn validate(raw: RawConfig, src: &str) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        src,
        problems: Vec::new(),
    };
    let mut cfg = Config::default();

    let default_server = Default::default();
    let rs = raw.server.as_ref().unwrap_or(&default_server);
    if let (Some(top), Some(inner)) = (&raw.listen, &rs.listen) {
        c.problem(
            Some(&top.span),
            "listen",
            format!(
                "given both here and as [server] listen (line {})",
                line_of(src, inner.span.start)
            ),
        );
    }
    let d = Server::default();
    let listen = rs.listen.as_ref().or(raw.listen.as_ref());
    cfg.server = Server {
        listen: listen
            .and_then(|l| c.address(l, "server.listen", true))
            .unwrap_or(d.listen),
        workers: rs.workers.as_ref().map_or(0, |v| v.value),
        connect_timeout: c.positive(
            &rs.connect_timeout,
            "server.connect_timeout",
            d.connect_timeout,
        ),
        request_header_timeout: c.positive(
            &rs.request_header_timeout,
            "server.request_header_timeout",
            d.request_header_timeout,
        ),
        upstream_timeout: c.positive(
            &rs.upstream_timeout,
            "server.upstream_timeout",
            d.upstream_timeout,
        ),
        idle_timeout: c.positive(&rs.idle_timeout, "server.idle_timeout", d.idle_timeout),
        max_header_bytes: rs
            .max_header_bytes
            .as_ref()
            .map_or(d.max_header_bytes, |v| v.value),
        max_connections: rs
            .max_connections
            .as_ref()
            .map_or(d.max_connections, |v| v.value),
        drain_timeout: rs
            .drain_timeout
            .as_ref()
            .map_or(d.drain_timeout, |v| v.value.0),
        access_log: rs.access_log.as_ref().map_or(d.access_log, |v| v.value),
        gateway_header: rs
            .gateway_header
            .as_ref()
            .map_or(d.gateway_header.clone(), |v| v.value.clone()),
        h2c: rs.h2c.as_ref().map_or(d.h2c, |v| v.value),
        h2_max_concurrent_streams: rs
            .h2_max_concurrent_streams
            .as_ref()
            .map_or(d.h2_max_concurrent_streams, |v| v.value),
        underscore_headers: match &rs.underscore_headers {
            None => d.underscore_headers,
            Some(v) => crate::http::admit::Underscore::parse(v.value.trim()).unwrap_or_else(|| {
                c.problem(
                    Some(&v.span),
                    "server.underscore_headers",
                    format!("{:?}: expected drop, reject or allow", v.value),
                );
                d.underscore_headers
            }),
        },
        via_name: match &rs.via_name {
            None => String::new(),
            Some(v) if crate::http::via::valid_token(v.value.trim()) => v.value.trim().to_string(),
            Some(v) => {
                c.problem(
                    Some(&v.span),
                    "server.via_name",
                    format!(
                        "{:?}: use 1-{} letters, digits and ! # $ % & ' * + - . ^ _ ` | ~",
                        v.value,
                        crate::http::via::MAX_TOKEN
                    ),
                );
                String::new()
            }
        },
        auth_failure_limit: rs
            .auth_failure_limit
            .as_ref()
            .map_or(d.auth_failure_limit, |v| v.value),
        ..Server::default()
    };
    super::resilience::validate(&mut c, &raw, &mut cfg);
    if let Some(v) = &rs.h2_max_concurrent_streams {
        if !(1..=10_000).contains(&v.value) {
            c.problem(
                Some(&v.span),
                "server.h2_max_concurrent_streams",
                "must be between 1 and 10000".into(),
            );
        }
    }
    if let Some(v) = &rs.max_header_bytes {
        if !(1024..=1 << 20).contains(&v.value) {
            c.problem(
                Some(&v.span),
                "server.max_header_bytes",
                "must be between 1024 and 1048576".into(),
            );
        }
    }
    if let Some(v) = &rs.max_connections {
        if v.value == 0 {
            c.problem(
                Some(&v.span),
                "server.max_connections",
                "must be at least 1".into(),
            );
        }
    }
    if let Some(v) = &rs.workers {
        if v.value > 1024 {
            c.problem(Some(&v.span), "server.workers", "at most 1024".into());
        }
    }
    if let Some(v) = &rs.gateway_header {
        if v.value.is_empty() || !v.value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            c.problem(
                Some(&v.span),
                "server.gateway_header",
                "must be non-empty printable ASCII".into(),
            );
        }
    }
    if let Some(a) = raw.admin.as_ref().and_then(|a| a.listen.as_ref()) {
        if let Some(addr) = c.address(a, "admin.listen", true) {
            cfg.admin_listen = addr;
        }
    }
    if cfg.admin_listen == cfg.server.listen && cfg.server.listen.port != 0 {
        c.problem(
            None,
            "admin.listen",
            "must differ from server.listen: the admin API never shares the data port".into(),
        );
    }

    if let Some(g) = &raw.gateway {
        let d = Gateway::default();
        cfg.gateway = Gateway {
            enabled: g.enabled.as_ref().map_or(d.enabled, |v| v.value),
            allow_registration_from: match &g.allow_registration_from {
                None => d.allow_registration_from.clone(),
                Some(List(items)) => items
                    .iter()
                    .filter_map(|v| {
                        parse_net(v.value.trim())
                            .map_err(|e| {
                                c.problem(Some(&v.span), "gateway.allow_registration_from", e)
                            })
                            .ok()
                    })
                    .collect(),
            },
            registration_rate_limit: g
                .registration_rate_limit
                .as_ref()
                .map_or(d.registration_rate_limit, |v| v.value),
            registration_permission: g
                .registration_permission
                .as_ref()
                .map(|v| v.value.trim().to_string()),
            health_check_interval: c.positive(
                &g.health_check_interval,
                "gateway.health_check_interval",
                d.health_check_interval,
            ),
            health_check_timeout: c.positive(
                &g.health_check_timeout,
                "gateway.health_check_timeout",
                d.health_check_timeout,
            ),
            max_consecutive_failures: g
                .max_consecutive_failures
                .as_ref()
                .map_or(d.max_consecutive_failures, |v| v.value),
            down_check_interval: c.positive(
                &g.down_check_interval,
                "gateway.down_check_interval",
                d.down_check_interval,
            ),
            stop_ping_after_failures: g
                .stop_ping_after_failures
                .as_ref()
                .map_or(d.stop_ping_after_failures, |v| v.value),
        };
        if let Some(v) = &g.max_consecutive_failures {
            if v.value == 0 {
                c.problem(
                    Some(&v.span),
                    "gateway.max_consecutive_failures",
                    "must be at least 1".into(),
                );
            }
        }
        if let Some(v) = &g.stop_ping_after_failures {
            if v.value < cfg.gateway.max_consecutive_failures {
                c.problem(
                    Some(&v.span),
                    "gateway.stop_ping_after_failures",
                    "must be at least max_consecutive_failures".into(),
                );
            }
        }
        if let Some(v) = &g.registration_permission {
            if !valid_permission(v.value.trim()) {
                c.problem(
                    Some(&v.span),
                    "gateway.registration_permission",
                    format!("{:?}: use letters, digits and - _ . : /", v.value),
                );
            }
        }
        if let Some(v) = &g.registration_rate_limit {
            if v.value == 0 {
                c.problem(
                    Some(&v.span),
                    "gateway.registration_rate_limit",
                    "must be at least 1".into(),
                );
            }
        }
    }
    cfg.tcp = super::tcp::validate(&mut c, &raw.tcp, [&cfg.server.listen, &cfg.admin_listen]);
    let mut taken = vec![&cfg.server.listen, &cfg.admin_listen];
    taken.extend(cfg.tcp.iter().map(|t| &t.listen));
    cfg.tls = super::tls::validate(&mut c, raw.tls.as_ref(), &taken);
    super::listeners::check(&mut c, &raw, &cfg.server.listen, &cfg.admin_listen);
    api_keys(&mut c, &raw, &mut cfg);
    store(&mut c, &raw, &mut cfg);
    if cfg.server.via_name.is_empty() {
        cfg.server.via_name = crate::http::via::default_token(&fleet_identity(&cfg.store));
    }

    let mut seen_targets = HashSet::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let key = format!("targets[{i}].address");
        if let Some(a) = c.address(&t.address, &key, false) {
            if !seen_targets.insert(a.clone()) {
                c.problem(Some(&t.address.span), &key, format!("duplicate target {a}"));
            }
            let hc = c.endpoint(
                &t.health_check_endpoint,
                &format!("targets[{i}].health_check_endpoint"),
            );
            cfg.targets.push(Target {
                address: a,
                health_check_endpoint: hc,
            });
        }
    }

    let mut seen_prefix: Vec<(String, Vec<String>, usize)> = Vec::new();
    for (i, p) in raw.path_routes.iter().enumerate() {
        let key = format!("path_routes[{i}].path");
        let path = p.path.value.trim();
        let norm = format!("/{}", path.trim_matches('/'));
        let hosts = super::hosts::hosts(&mut c, &p.hosts, &format!("path_routes[{i}]"));
        if !path.starts_with('/') || path.contains(['*', '?', '#', ' ']) {
            c.problem(Some(&p.path.span), &key, format!("{path:?} must be a path prefix starting with / (patterns belong in [[routes]])"));
        } else if path.contains("//") {
            c.problem(
                Some(&p.path.span),
                &key,
                format!("{path:?} has an empty segment: runs of / are merged before matching, so it can never match"),
            );
        } else if let Err(e) = crate::routing::pattern::check_canonical(path) {
            c.problem(Some(&p.path.span), &key, e);
        } else if let Some((_, _, prev)) = seen_prefix
            .iter()
            .find(|(q, hs, _)| *q == norm && crate::routing::host::share_entry(hs, &hosts))
        {
            c.problem(
                Some(&p.path.span),
                &key,
                format!("duplicate path route {norm} (also path_routes[{prev}])"),
            );
        }
        seen_prefix.push((norm.clone(), hosts.clone(), i));
        let segments: Vec<&str> = norm.split('/').filter(|s| !s.is_empty()).collect();
        let rewrites = super::hosts::rewrites(
            &mut c,
            super::hosts::RawRewrites {
                strip_prefix: &p.strip_prefix,
                set_request_headers: &p.set_request_headers,
                remove_request_headers: &p.remove_request_headers,
                set_response_headers: &p.set_response_headers,
                remove_response_headers: &p.remove_response_headers,
            },
            &format!("path_routes[{i}]"),
            &segments,
        );
        let addr = c.address(&p.address, &format!("path_routes[{i}].address"), false);
        let hc = c.endpoint(
            &p.health_check_endpoint,
            &format!("path_routes[{i}].health_check_endpoint"),
        );
        if let Some(address) = addr {
            cfg.path_routes.push(PathRoute {
                path: norm,
                address,
                health_check_endpoint: hc,
                hosts,
                rewrites,
            });
        }
    }

    let mut backend_names = HashSet::new();
    for (i, b) in raw.backends.iter().enumerate() {
        let name = b.name.value.trim().to_string();
        if name.is_empty()
            || !name
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || b"-_.".contains(&x))
        {
            c.problem(
                Some(&b.name.span),
                &format!("backends[{i}].name"),
                format!("{name:?}: use letters, digits, - _ ."),
            );
        } else if !backend_names.insert(name.clone()) {
            c.problem(
                Some(&b.name.span),
                &format!("backends[{i}].name"),
                format!("duplicate backend {name:?}"),
            );
        }
        let mut addresses = Vec::new();
        for (j, a) in b.addresses.0.iter().enumerate() {
            if let Some(a) = c.address(a, &format!("backends[{i}].addresses[{j}]"), false) {
                addresses.push(a);
            }
        }
        if b.addresses.0.is_empty() {
            c.problem(
                Some(&b.name.span),
                &format!("backends[{i}].addresses"),
                "needs at least one address".into(),
            );
        }
        let protocol = c.protocol(&b.protocol, &format!("backends[{i}].protocol"));
        let hc = c.endpoint_for(
            &b.health_check_endpoint,
            &format!("backends[{i}].health_check_endpoint"),
            protocol,
        );
        let hold = super::resilience::hold(
            &mut c,
            &b.hold_timeout,
            &b.hold_max,
            &format!("backends[{i}]"),
        );
        let tls = backend_tls(&mut c, b, &format!("backends[{i}]"), protocol);
        cfg.backends.push(Backend {
            name,
            addresses,
            health_check_endpoint: hc,
            hold,
            tls,
            protocol,
        });
    }

    let mut seen_routes: Vec<(Pattern, Vec<String>, Vec<String>, usize)> = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let hosts = super::hosts::hosts(&mut c, &r.hosts, &key);
        let pattern = match Pattern::parse(r.path.value.trim()) {
            Ok(p) => Some(p),
            Err(e) => {
                c.problem(Some(&r.path.span), &format!("{key}.path"), e);
                None
            }
        };
        let mut methods = Vec::new();
        for m in r.methods.iter().flat_map(|l| l.0.iter()) {
            match crate::http::token::method(&m.value) {
                None => c.problem(
                    Some(&m.span),
                    &format!("{key}.methods"),
                    format!("{:?} is not a method", m.value),
                ),
                Some(up) if !methods.contains(&up) => methods.push(up),
                Some(_) => {}
            }
        }
        if let Some(l) = &r.methods {
            if l.0.is_empty() {
                c.problem(
                    Some(&r.path.span),
                    &format!("{key}.methods"),
                    "empty list: leave it out to allow any method".into(),
                );
            }
        }
        let backend = r.backend.value.trim().to_string();
        if !backend_names.contains(&backend) {
            c.problem(
                Some(&r.backend.span),
                &format!("{key}.backend"),
                format!("unknown backend {backend:?}"),
            );
        }
        let permission = r.permission.as_ref().map(|p| p.value.trim().to_string());
        if let Some(p) = &r.permission {
            if !valid_permission(p.value.trim()) {
                c.problem(
                    Some(&p.span),
                    &format!("{key}.permission"),
                    format!("{:?}: use letters, digits and - _ . : /", p.value),
                );
            }
        }
        if let Some(p) = pattern {
            let overlaps = |other: &Vec<String>| {
                methods.is_empty() && other.is_empty() || methods.iter().any(|m| other.contains(m))
            };
            if let Some((_, _, _, j)) = seen_routes.iter().find(|(q, ms, hs, _)| {
                *q == p && overlaps(ms) && crate::routing::host::share_entry(hs, &hosts)
            }) {
                c.problem(
                    Some(&r.path.span),
                    &format!("{key}.path"),
                    format!("duplicate route {p} (also routes[{j}])"),
                );
            }
            seen_routes.push((p.clone(), methods.clone(), hosts.clone(), i));
            let rewrites = super::hosts::rewrites(
                &mut c,
                super::hosts::RawRewrites {
                    strip_prefix: &r.strip_prefix,
                    set_request_headers: &r.set_request_headers,
                    remove_request_headers: &r.remove_request_headers,
                    set_response_headers: &r.set_response_headers,
                    remove_response_headers: &r.remove_response_headers,
                },
                &key,
                &p.literal_prefix(),
            );
            cfg.routes.push(Route {
                path: p,
                methods,
                backend,
                permission,
                hosts,
                rewrites,
            });
        }
    }

    shards(&mut c, &raw, &mut cfg);

    if c.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(c.problems)
    }
}

/// A permission name such as `comments:read`.
pub fn valid_permission(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/*".contains(&b))
}

/// An address or CIDR block: `127.0.0.1` is `127.0.0.1/32`.
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        if n.trunc() != n {
            return Err(format!(
                "{s:?}: host bits set (did you mean {}?)",
                n.trunc()
            ));
        }
        return Ok(n);
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block"))
}

fn api_keys(c: &mut Checker<'_>, raw: &RawConfig, cfg: &mut Config) {
    use sha2::{Digest, Sha256};
    let mut names = HashSet::new();
    for (i, k) in raw.api_keys.iter().enumerate() {
        let key = format!("api_keys[{i}]");
        let name = k.name.value.trim().to_string();
        if name.is_empty()
            || !name.bytes().all(|b| (0x21..=0x7e).contains(&b))
            || !names.insert(name.clone())
        {
            c.problem(
                Some(&k.name.span),
                &format!("{key}.name"),
                format!("{name:?} is empty, not printable ASCII, or used twice"),
            );
        }
        let sha = match (&k.key_sha256, &k.key) {
            (Some(h), None) => {
                let hex = h.value.trim();
                let bytes: Option<Vec<u8>> = (hex.len() == 64)
                    .then(|| {
                        (0..32)
                            .map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).ok())
                            .collect()
                    })
                    .flatten();
                match bytes {
                    Some(b) => {
                        let mut out = [0u8; 32];
                        out.copy_from_slice(&b);
                        Some(out)
                    }
                    None => {
                        c.problem(
                            Some(&h.span),
                            &format!("{key}.key_sha256"),
                            "must be 64 hex digits".into(),
                        );
                        None
                    }
                }
            }
            (None, Some(k2)) => {
                if k2.value.is_empty() {
                    c.problem(
                        Some(&k2.span),
                        &format!("{key}.key"),
                        "must not be empty".into(),
                    );
                }
                Some(Sha256::digest(k2.value.as_bytes()).into())
            }
            (Some(h), Some(_)) => {
                c.problem(
                    Some(&h.span),
                    &format!("{key}.key_sha256"),
                    "give key_sha256 or key, not both".into(),
                );
                None
            }
            (None, None) => {
                c.problem(
                    Some(&k.name.span),
                    &format!("{key}.key_sha256"),
                    "needs key_sha256 (or key)".into(),
                );
                None
            }
        };
        let mut permissions = Vec::new();
        for p in k.permissions.iter().flat_map(|l| l.0.iter()) {
            if valid_permission(p.value.trim()) {
                permissions.push(p.value.trim().to_string());
            } else {
                c.problem(
                    Some(&p.span),
                    &format!("{key}.permissions"),
                    format!("{:?} is not a permission name", p.value),
                );
            }
        }
        if let Some(sha256) = sha {
            cfg.api_keys.push(super::model::ApiKey {
                name,
                sha256,
                permissions,
            });
        }
    }
}

fn store(c: &mut Checker<'_>, raw: &RawConfig, cfg: &mut Config) {
    let Some(s) = &raw.store else { return };
    let kind = s.kind.as_ref().map_or("file", |k| k.value.trim());
    match kind {
        "file" => {
            for (name, present) in [
                (
                    "endpoints",
                    s.endpoints
                        .as_ref()
                        .and_then(|l| l.0.first())
                        .map(|v| v.span.clone()),
                ),
                ("prefix", s.prefix.as_ref().map(|v| v.span.clone())),
                (
                    "full_refresh_interval",
                    s.full_refresh_interval.as_ref().map(|v| v.span.clone()),
                ),
            ] {
                if let Some(span) = present {
                    c.problem(
                        Some(&span),
                        &format!("store.{name}"),
                        "only for kind = \"etcd\"".into(),
                    );
                }
            }
            if let Some(p) = &s.path {
                if p.value.trim().is_empty() {
                    c.problem(Some(&p.span), "store.path", "must not be empty".into());
                } else {
                    cfg.store = super::model::Store::File {
                        path: p.value.trim().into(),
                    };
                }
            }
        }
        "etcd" => {
            if let Some(p) = &s.path {
                c.problem(
                    Some(&p.span),
                    "store.path",
                    "only for kind = \"file\"".into(),
                );
            }
            let mut endpoints = Vec::new();
            for e in s.endpoints.iter().flat_map(|l| l.0.iter()) {
                let v = e.value.trim();
                match v
                    .strip_prefix("http://")
                    .map(|a| address::parse(a.trim_end_matches('/'), false))
                {
                    Some(Ok(_)) => endpoints.push(v.trim_end_matches('/').to_string()),
                    Some(Err(err)) => c.problem(Some(&e.span), "store.endpoints", err),
                    None => c.problem(
                        Some(&e.span),
                        "store.endpoints",
                        format!("{v:?}: expected http://host:port"),
                    ),
                }
            }
            if endpoints.is_empty() && s.endpoints.as_ref().is_none_or(|l| l.0.is_empty()) {
                endpoints.push("http://127.0.0.1:2379".into());
            }
            let prefix = s
                .prefix
                .as_ref()
                .map_or("/switchyard/".to_string(), |p| p.value.trim().to_string());
            if prefix.is_empty() {
                let span = s.prefix.as_ref().map(|p| p.span.clone());
                c.problem(span.as_ref(), "store.prefix", "must not be empty".into());
            }
            let full_refresh_interval = c.positive(
                &s.full_refresh_interval,
                "store.full_refresh_interval",
                std::time::Duration::from_secs(1),
            );
            cfg.store = super::model::Store::Etcd {
                endpoints,
                prefix,
                full_refresh_interval,
            };
        }
        other => {
            let span = s.kind.as_ref().map_or(0..0, |k| k.span.clone());
            c.problem(
                Some(&span),
                "store.kind",
                format!("{other:?}: expected file or etcd"),
            );
        }
    }
}

/// What every replica of one fleet shares and no other fleet does: the store registrations
/// live in. etcd: endpoints (sorted) and prefix; a file store is one host's: host name and
/// absolute path. The default `via_name` is a digest of it.
pub fn fleet_identity(store: &super::model::Store) -> String {
    match store {
        super::model::Store::Etcd {
            endpoints, prefix, ..
        } => {
            let mut e = endpoints.clone();
            e.sort();
            format!("etcd|{}|{prefix}", e.join(","))
        }
        super::model::Store::File { path } => {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_default();
            format!("file|{}|{}", host.trim(), abs.display())
        }
    }
}

/// Most pods a shard may have.
const MAX_PODS: u32 = 4096;

fn shards(c: &mut Checker<'_>, raw: &RawConfig, cfg: &mut Config) {
    use crate::routing::shard::{HashKind, KeySource};
    let mut names = HashSet::new();
    let mut paths: Vec<(Pattern, Vec<String>, usize)> = Vec::new();
    for (i, s) in raw.shards.iter().enumerate() {
        let key = format!("shards[{i}]");
        let hosts = super::hosts::hosts(c, &s.hosts, &key);
        let name = s.name.value.trim().to_string();
        if name.is_empty() || !names.insert(name.clone()) {
            c.problem(
                Some(&s.name.span),
                &format!("{key}.name"),
                format!("{name:?} is empty or used twice"),
            );
        }
        let pattern = match Pattern::parse(s.path.value.trim()) {
            Ok(p) => {
                if let Some((_, _, j)) = paths
                    .iter()
                    .find(|(q, hs, _)| *q == p && crate::routing::host::share_entry(hs, &hosts))
                {
                    c.problem(
                        Some(&s.path.span),
                        &format!("{key}.path"),
                        format!("{p} is also the path of shards[{j}]"),
                    );
                }
                paths.push((p.clone(), hosts.clone(), i));
                Some(p)
            }
            Err(e) => {
                c.problem(Some(&s.path.span), &format!("{key}.path"), e);
                None
            }
        };
        let source = KeySource::parse(s.key.value.trim())
            .map_err(|e| c.problem(Some(&s.key.span), &format!("{key}.key"), e))
            .ok();
        let hash = match &s.hash {
            None => Some(HashKind::Md5),
            Some(h) => HashKind::parse(h.value.trim()).or_else(|| {
                c.problem(
                    Some(&h.span),
                    &format!("{key}.hash"),
                    format!("{:?}: expected md5, discord, jump or rendezvous", h.value),
                );
                None
            }),
        };
        let reject = match &s.on_unavailable {
            None => false,
            Some(v) => match v.value.trim() {
                "failover" => false,
                "reject" => true,
                other => {
                    c.problem(
                        Some(&v.span),
                        &format!("{key}.on_unavailable"),
                        format!("{other:?}: expected failover or reject"),
                    );
                    false
                }
            },
        };
        let mut addresses = Vec::new();
        match (&s.address, &s.addresses) {
            (Some(t), None) => {
                let pods = match &s.pods {
                    Some(p) if (1..=MAX_PODS).contains(&p.value) => p.value,
                    Some(p) => {
                        c.problem(
                            Some(&p.span),
                            &format!("{key}.pods"),
                            format!("must be between 1 and {MAX_PODS}"),
                        );
                        0
                    }
                    None => {
                        c.problem(
                            Some(&t.span),
                            &format!("{key}.pods"),
                            "needed with an address template".into(),
                        );
                        0
                    }
                };
                if !t.value.contains("{n}") {
                    c.problem(
                        Some(&t.span),
                        &format!("{key}.address"),
                        "a template needs {n} for the pod ordinal (or use addresses = [...])"
                            .into(),
                    );
                } else {
                    for n in 0..pods {
                        let v = Val {
                            value: t.value.replace("{n}", &n.to_string()),
                            span: t.span.clone(),
                        };
                        match c.address(&v, &format!("{key}.address"), false) {
                            Some(a) => addresses.push(a),
                            None => break,
                        }
                    }
                }
            }
            (None, Some(List(list))) => {
                for (j, a) in list.iter().enumerate() {
                    if let Some(a) = c.address(a, &format!("{key}.addresses[{j}]"), false) {
                        addresses.push(a);
                    }
                }
                if list.is_empty() || list.len() > MAX_PODS as usize {
                    c.problem(
                        Some(&s.name.span),
                        &format!("{key}.addresses"),
                        format!("needs 1 to {MAX_PODS} addresses"),
                    );
                }
                if let Some(p) = &s.pods {
                    if p.value as usize != list.len() {
                        c.problem(
                            Some(&p.span),
                            &format!("{key}.pods"),
                            format!("{} but {} addresses are listed", p.value, list.len()),
                        );
                    }
                }
            }
            (Some(t), Some(_)) => c.problem(
                Some(&t.span),
                &format!("{key}.address"),
                "give either address (a template) or addresses, not both".into(),
            ),
            (None, None) => c.problem(
                Some(&s.name.span),
                &format!("{key}.address"),
                "needs address = \"host-{n}:port\" and pods, or addresses = [...]".into(),
            ),
        }
        let protocol = c.protocol(&s.protocol, &format!("{key}.protocol"));
        let hc = c.endpoint_for(
            &s.health_check_endpoint,
            &format!("{key}.health_check_endpoint"),
            protocol,
        );
        let literal: Vec<&str> = pattern.as_ref().map_or(Vec::new(), |p| p.literal_prefix());
        let rewrites = super::hosts::rewrites(
            c,
            super::hosts::RawRewrites {
                strip_prefix: &s.strip_prefix,
                set_request_headers: &s.set_request_headers,
                remove_request_headers: &s.remove_request_headers,
                set_response_headers: &s.set_response_headers,
                remove_response_headers: &s.remove_response_headers,
            },
            &key,
            &literal,
        );
        let hold = super::resilience::hold(c, &s.hold_timeout, &s.hold_max, &key);
        if let (Some(p), Some(key_source), Some(hash)) = (pattern, source, hash) {
            cfg.shards.push(super::model::Shard {
                name,
                path: p,
                key: key_source,
                hash,
                addresses,
                health_check_endpoint: hc,
                reject,
                hosts,
                rewrites,
                hold,
                protocol,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config};

    fn env(k: &str) -> Option<String> {
        (k == "API_PORT").then(|| "9001".to_string())
    }

    fn ok(src: &str) -> Config {
        match parse(src, "t.toml", Box::new(env)) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(src: &str) -> String {
        parse(src, "t.toml", Box::new(env)).unwrap_err().to_string()
    }

    #[test]
    fn older_format_runs_unchanged() {
        let c = ok("listen = \"0.0.0.0:8000\"\n[[targets]]\naddress = \"http-api-1:8001\"\nhealth_check_endpoint = \"/healthz\"\n[[path_routes]]\npath = \"/files\"\naddress = \"object-storage:8007\"\n");
        assert_eq!(c.server.listen.port, 8000);
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.path_routes[0].path, "/files");
    }

    #[test]
    fn env_numbers_and_fractions() {
        let c = ok("[server]\nlisten = \"127.0.0.1:${API_PORT}\"\nconnect_timeout = 0.2\nmax_connections = \"${CONN:-50}\"\n");
        assert_eq!(c.server.listen.port, 9001);
        assert_eq!(c.server.connect_timeout.as_millis(), 200);
        assert_eq!(c.server.max_connections, 50);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert!(e.contains("t.toml:3:"), "{e}");
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let e = err("[[backends]]\nname = \"c\"\naddresses = [\"nope\"]\n\n[[routes]]\npath = \"/a/*\"\nbackend = \"x\"\n\n[[routes]]\npath = \"/a/*\"\nbackend = \"c\"\n[[routes]]\npath = \"/a/*\"\nbackend = \"c\"\n");
        assert!(e.contains("t.toml:3: backends[0].addresses[0]"), "{e}");
        assert!(
            e.contains("t.toml:7: routes[0].backend: unknown backend \"x\""),
            "{e}"
        );
        assert!(
            e.contains("t.toml:13: routes[2].path: duplicate route /a/*"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 4, "{e}");
    }

    #[test]
    fn shard_templates_expand_pods_from_env() {
        let src = "[[shards]]\nname = \"gateway\"\npath = \"/guilds/*\"\nkey = \"path:1\"\npods = \"${API_PORT:-3}\"\naddress = \"gateway-{n}.gateway-internal:3000\"\n";
        let c = parse(
            src,
            "t",
            Box::new(|k| (k == "API_PORT").then(|| "4".to_string())),
        )
        .unwrap();
        assert_eq!(c.shards[0].addresses.len(), 4);
        assert_eq!(
            c.shards[0].addresses[3].to_string(),
            "gateway-3.gateway-internal:3000"
        );
        let c = parse(src, "t", Box::new(|_| None)).unwrap();
        assert_eq!(c.shards[0].addresses.len(), 3);
        assert_eq!(c.shards[0].hash, crate::routing::shard::HashKind::Md5);
    }

    #[test]
    fn shard_problems_are_reported() {
        let e = err("[[shards]]\nname = \"g\"\npath = \"/g/*\"\nkey = \"cookie:x\"\npods = 3\naddress = \"gw:1\"\nhash = \"sha1\"\non_unavailable = \"pray\"\n");
        for want in [
            "shards[0].key",
            "shards[0].address",
            "shards[0].hash",
            "shards[0].on_unavailable",
        ] {
            assert!(e.contains(want), "{want} missing in {e}");
        }
    }

    #[test]
    fn route_methods_split_duplicates() {
        let c = ok("[[backends]]\nname = \"c\"\naddresses = \"127.0.0.1:1, 127.0.0.1:2\"\n[[routes]]\npath = \"/a/*\"\nmethods = [\"get\"]\nbackend = \"c\"\n[[routes]]\npath = \"/a/*\"\nmethods = [\"POST\"]\nbackend = \"c\"\n");
        assert_eq!(c.routes[0].methods, ["GET"]);
        assert_eq!(c.backends[0].addresses.len(), 2);
    }

    #[test]
    fn hosts_and_rewrites_are_checked_with_key_and_line() {
        let e = err(r#"[[backends]]
name = "b"
addresses = ["127.0.0.1:1"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["api.example.com", "a.com:80"]
strip_prefix = "/ap"
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["API.example.com."]
set_request_headers = { "Content-Length" = "1", "X-Ok" = "a\nb" }
remove_request_headers = ["Host"]
[[path_routes]]
path = "/files"
address = "127.0.0.1:2"
strip_prefix = "/files/x"
set_response_headers = { "X-Gateway" = "me" }
remove_response_headers = ["Transfer-Encoding", "Bad Name"]
"#);
        for want in [
            "t.toml:7: routes[0].hosts: \"a.com:80\"",
            "t.toml:8: routes[0].strip_prefix",
            "t.toml:10: routes[1].path: duplicate route /api/* (also routes[0])",
            "t.toml:13: routes[1].set_request_headers.Content-Length",
            "t.toml:13: routes[1].set_request_headers.X-Ok",
            "t.toml:14: routes[1].remove_request_headers: Host cannot be removed",
            "t.toml:18: path_routes[0].strip_prefix",
            "t.toml:19: path_routes[0].set_response_headers.X-Gateway",
            "t.toml:20: path_routes[0].remove_response_headers: Transfer-Encoding",
            "t.toml:20: path_routes[0].remove_response_headers: \"Bad Name\"",
        ] {
            assert!(e.contains(want), "{want:?} missing in\n{e}");
        }
        assert_eq!(e.lines().count(), 10, "{e}");
    }

    #[test]
    fn same_path_on_other_hosts_is_no_duplicate() {
        let c = ok(r#"[[backends]]
name = "b"
addresses = ["127.0.0.1:1"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["a.example.com"]
strip_prefix = "/api/"
set_request_headers = { Host = "internal", "X-Env" = "prod" }
remove_response_headers = ["Server"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["*.example.com"]
[[routes]]
path = "/api/*"
backend = "b"
[[path_routes]]
path = "/files"
address = "127.0.0.1:2"
hosts = ["f.example.com"]
strip_prefix = "/files"
[[path_routes]]
path = "/files/"
address = "127.0.0.1:3"
[[shards]]
name = "g"
path = "/g/*"
key = "path:1"
addresses = ["127.0.0.1:4"]
hosts = ["g.example.com"]
strip_prefix = "/g"
[[shards]]
name = "h"
path = "/g/*"
key = "path:1"
addresses = ["127.0.0.1:5"]
"#);
        assert_eq!(c.routes[0].hosts, ["a.example.com"]);
        assert_eq!(c.routes[0].rewrites.strip_prefix.as_deref(), Some("/api"));
        assert_eq!(
            c.routes[0].rewrites.set_request_headers,
            [
                ("Host".to_string(), "internal".to_string()),
                ("X-Env".into(), "prod".into())
            ]
        );
        assert_eq!(c.path_routes.len(), 2);
        assert_eq!(c.shards[0].rewrites.strip_prefix.as_deref(), Some("/g"));
        let e = err("[[path_routes]]\npath = \"/f\"\naddress = \"127.0.0.1:2\"\nhosts = [\"a.com\", \"b.com\"]\n[[path_routes]]\npath = \"/f\"\naddress = \"127.0.0.1:3\"\nhosts = [\"b.com\"]\n");
        assert!(
            e.contains("t.toml:6: path_routes[1].path: duplicate path route /f"),
            "{e}"
        );
        let e = err("[[shards]]\nname = \"g\"\npath = \"/g/*\"\nkey = \"path:1\"\naddresses = [\"127.0.0.1:4\"]\nstrip_prefix = \"/g/x\"\nhosts = []\n");
        assert!(e.contains("shards[0].strip_prefix"), "{e}");
        assert!(e.contains("shards[0].hosts: empty list"), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = err("[server]\n\nidle_timeout = \"soon\"\n");
        assert!(e.contains("t.toml:3:"), "{e}");
        let e = err("[[targets]]\naddress = \"${MISSING}\"\n");
        assert!(e.contains("MISSING is not set"), "{e}");
    }

    #[test]
    fn protocol_is_checked_with_its_key() {
        use crate::upstream::protocol::Protocol;
        let base = "[[backends]]\nname = \"g\"\naddresses = [\"127.0.0.1:9000\"]\n";
        let c = ok(&format!(
            "{base}protocol = \"h2c\"\nhealth_check_endpoint = \"grpc\"\n"
        ));
        assert_eq!(c.backends[0].protocol, Protocol::H2c);
        assert!(c.backends[0].tls.is_none());
        assert_eq!(c.backends[0].health_check_endpoint.as_deref(), Some("grpc"));
        // h2 is TLS without saying tls = true, and takes the TLS keys.
        let c = ok(&format!(
            "{base}protocol = \"h2\"\ntls_server_name = \"g.test\"\n"
        ));
        assert_eq!(c.backends[0].protocol, Protocol::H2);
        assert!(c.backends[0].tls.is_some());
        assert_eq!(ok(base).backends[0].protocol, Protocol::Http1);
        let e = err(&format!("{base}protocol = \"http2\"\n"));
        assert!(
            e.contains("backends[0].protocol") && e.contains("\"h2c\""),
            "{e}"
        );
        let e = err(&format!("{base}protocol = \"h2c\"\ntls = true\n"));
        assert!(
            e.contains("backends[0].protocol") && e.contains("cleartext"),
            "{e}"
        );
        let e = err(&format!("{base}protocol = \"h2\"\ntls = false\n"));
        assert!(
            e.contains("backends[0].protocol") && e.contains("tls = false"),
            "{e}"
        );
        let e = err(&format!("{base}health_check_endpoint = \"grpc\"\n"));
        assert!(
            e.contains("backends[0].health_check_endpoint") && e.contains("h2c"),
            "{e}"
        );
        let shard = "[[shards]]\nname = \"s\"\npath = \"/s/*\"\nkey = \"path:1\"\naddresses = [\"127.0.0.1:9001\"]\n";
        let c = ok(&format!("{shard}protocol = \"h2c\"\n"));
        assert_eq!(c.shards[0].protocol, Protocol::H2c);
        let e = err(&format!("{shard}protocol = \"h3\"\n"));
        assert!(e.contains("shards[0].protocol"), "{e}");
    }
}
