//! Finds every unknown key in a config file at once, with its full name and line, before
//! serde (which stops at the first) reads it: a typo must never silently do nothing.
use super::check::{line_of, Problem};
use toml::de::{DeTable, DeValue};

/// The keys each section accepts. `schema.rs` is the authority; the test below keeps the two
/// in step by deserializing a file that uses every key listed here.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "listen",
            "server",
            "admin",
            "targets",
            "path_routes",
            "backends",
            "routes",
            "shards",
            "gateway",
            "api_keys",
            "tcp",
            "store",
            "outlier",
            "retry",
            "tls",
        ],
    ),
    (
        "server",
        &[
            "listen",
            "workers",
            "connect_timeout",
            "request_header_timeout",
            "upstream_timeout",
            "idle_timeout",
            "max_header_bytes",
            "max_connections",
            "drain_timeout",
            "access_log",
            "access_log_format",
            "access_log_path",
            "access_log_query",
            "gateway_header",
            "hold_timeout",
            "hold_max",
            "h2c",
            "h2_max_concurrent_streams",
            "underscore_headers",
            "via_name",
            "auth_failure_limit",
        ],
    ),
    ("admin", &["listen"]),
    ("targets", &["address", "health_check_endpoint"]),
    (
        "path_routes",
        &[
            "path",
            "address",
            "health_check_endpoint",
            "hosts",
            "strip_prefix",
            "set_request_headers",
            "remove_request_headers",
            "set_response_headers",
            "remove_response_headers",
        ],
    ),
    (
        "backends",
        &[
            "name",
            "addresses",
            "health_check_endpoint",
            "hold_timeout",
            "hold_max",
            "tls",
            "tls_ca",
            "tls_server_name",
            "protocol",
        ],
    ),
    (
        "routes",
        &[
            "path",
            "methods",
            "backend",
            "permission",
            "hosts",
            "strip_prefix",
            "set_request_headers",
            "remove_request_headers",
            "set_response_headers",
            "remove_response_headers",
        ],
    ),
    (
        "shards",
        &[
            "name",
            "path",
            "key",
            "pods",
            "address",
            "addresses",
            "hash",
            "health_check_endpoint",
            "on_unavailable",
            "hosts",
            "strip_prefix",
            "set_request_headers",
            "remove_request_headers",
            "set_response_headers",
            "remove_response_headers",
            "hold_timeout",
            "hold_max",
            "protocol",
        ],
    ),
    (
        "gateway",
        &[
            "enabled",
            "health_check_interval",
            "health_check_timeout",
            "max_consecutive_failures",
            "down_check_interval",
            "stop_ping_after_failures",
            "allow_registration_from",
            "registration_rate_limit",
            "registration_permission",
        ],
    ),
    ("api_keys", &["name", "key_sha256", "key", "permissions"]),
    (
        "outlier",
        &[
            "consecutive_failures",
            "consecutive_5xx",
            "base_ejection_time",
            "max_ejection_percent",
        ],
    ),
    (
        "retry",
        &[
            "attempts",
            "on",
            "budget_percent",
            "min_retries_per_second",
            "max_retry_body",
        ],
    ),
    (
        "tcp",
        &[
            "listen",
            "targets",
            "balance",
            "health_check",
            "idle_timeout",
            "send_proxy",
        ],
    ),
    (
        "store",
        &[
            "kind",
            "path",
            "endpoints",
            "prefix",
            "full_refresh_interval",
        ],
    ),
    (
        "tls",
        &[
            "listen",
            "min_version",
            "redirect_http",
            "certificates",
            "acme",
        ],
    ),
    ("tls.certificates", &["cert", "key", "hosts", "default"]),
    (
        "tls.acme",
        &["directory", "email", "domains", "ca", "renew_before"],
    ),
];

fn allowed(section: &str) -> &'static [&'static str] {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map_or(&[], |(_, k)| *k)
}

/// An unknown key and the bytes (key through value) that hold it.
pub struct Unknown {
    pub problem: Problem,
    pub span: std::ops::Range<usize>,
    /// A plain `key = value` that can be blanked out so the rest of the file can still be
    /// checked; a whole unknown table cannot.
    pub strippable: bool,
}

fn check_table(src: &str, section: &str, path: &str, t: &DeTable<'_>, out: &mut Vec<Unknown>) {
    let keys = allowed(section);
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let full = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        if !keys.contains(&name) {
            let hint = keys
                .iter()
                .find(|c| close_to(c, name))
                .map_or(String::new(), |c| format!(" (did you mean {c}?)"));
            let is_table = match v.get_ref() {
                DeValue::Table(_) => true,
                DeValue::Array(a) => a.iter().any(|x| matches!(x.get_ref(), DeValue::Table(_))),
                _ => false,
            };
            let span = k.span().start..v.span().end.max(k.span().end);
            out.push(Unknown {
                problem: Problem {
                    line: Some(line_of(src, k.span().start)),
                    key: full,
                    message: format!("unknown key{hint}"),
                },
                strippable: !is_table && span.end <= src.len() && !src[span.clone()].contains('['),
                span,
            });
            continue;
        }
        // Sections nest by name: `tls` holds `tls.certificates` and `tls.acme`.
        let sub = if section.is_empty() {
            name.to_string()
        } else {
            format!("{section}.{name}")
        };
        if SECTIONS.iter().any(|(s, _)| *s == sub) {
            match v.get_ref() {
                DeValue::Table(inner) => check_table(src, &sub, &full, inner, out),
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let DeValue::Table(inner) = item.get_ref() {
                            check_table(src, &sub, &format!("{full}[{i}]"), inner, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A likely typo: same length ±1 and at most two differing characters.
fn close_to(candidate: &str, typed: &str) -> bool {
    let (a, b) = (candidate.as_bytes(), typed.as_bytes());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let common = a.iter().zip(b).filter(|(x, y)| x == y).count();
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    a.len().max(b.len()) - common.max(prefix + suffix).min(a.len().max(b.len())) <= 2
}

/// Every unknown key in `src`; Err with the syntax error when the file is not TOML at all.
pub fn unknown_keys(src: &str) -> Result<Vec<Unknown>, toml::de::Error> {
    let doc = DeTable::parse(src)?;
    let mut out = Vec::new();
    check_table(src, "", "", doc.get_ref(), &mut out);
    out.sort_by_key(|u| u.span.start);
    Ok(out)
}

/// The full name (`server.idle_timeout`, `routes[2].path`) of the key whose value holds byte
/// `offset`, for errors that serde reports with a span only.
pub fn path_at(src: &str, offset: usize) -> Option<String> {
    fn walk(t: &DeTable<'_>, path: &str, offset: usize) -> Option<String> {
        for (k, v) in t.iter() {
            let name = k.get_ref().as_ref();
            let full = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            // Tables from `[header]`s do not span their keys: look inside every one.
            let found = match v.get_ref() {
                DeValue::Table(inner) => walk(inner, &full, offset),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(inner) => walk(inner, &format!("{full}[{i}]"), offset),
                    _ => None,
                }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
            if v.span().contains(&offset) || k.span().contains(&offset) {
                return Some(full);
            }
        }
        None
    }
    let doc = DeTable::parse(src).ok()?;
    walk(doc.get_ref(), "", offset)
}

/// `src` with the unknown keys blanked out (newlines kept, so lines still match), or None if
/// one of them cannot be removed safely.
pub fn without(src: &str, unknown: &[Unknown]) -> Option<String> {
    let mut bytes = src.as_bytes().to_vec();
    for u in unknown {
        if !u.strippable {
            return None;
        }
        for b in &mut bytes[u.span.clone()] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_unknown_key_with_path_and_line() {
        let src = "lisen = 1\n[server]\nlisten = \"127.0.0.1:1\"\nidle_timout = 3\n[[routes]]\npath = \"/a\"\nbackend = \"b\"\ncolour = 1\n";
        let p: Vec<Problem> = unknown_keys(src)
            .unwrap()
            .into_iter()
            .map(|u| u.problem)
            .collect();
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|x| (x.line, x.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(1), "lisen"),
                (Some(4), "server.idle_timout"),
                (Some(8), "routes[0].colour")
            ]
        );
        assert!(
            p[1].message.contains("did you mean idle_timeout?"),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn paths_of_offsets() {
        let src = "[server]\nidle_timeout = \"soon\"\n[[routes]]\npath = \"/a\"\n[[routes]]\npath = \"/b\"\n";
        assert_eq!(
            path_at(src, src.find("soon").unwrap()).as_deref(),
            Some("server.idle_timeout")
        );
        assert_eq!(
            path_at(src, src.find("/b").unwrap()).as_deref(),
            Some("routes[1].path")
        );
    }

    /// Every key listed here is accepted by the serde schema.
    #[test]
    fn the_key_list_matches_the_schema() {
        let mut src = String::new();
        let value = |k: &str| match k {
            "workers"
            | "max_header_bytes"
            | "max_connections"
            | "h2_max_concurrent_streams"
            | "pods"
            | "max_consecutive_failures"
            | "stop_ping_after_failures"
            | "registration_rate_limit"
            | "hold_max"
            | "consecutive_failures"
            | "consecutive_5xx"
            | "max_ejection_percent"
            | "attempts"
            | "budget_percent"
            | "min_retries_per_second"
            | "max_retry_body"
            | "auth_failure_limit" => "4".to_string(),
            "access_log" | "enabled" | "access_log_query" | "h2c" => "true".into(),
            "base_ejection_time" => "1".into(),
            k if k.ends_with("timeout") || k.ends_with("interval") => "1".into(),
            "addresses"
            | "methods"
            | "targets"
            | "permissions"
            | "endpoints"
            | "on"
            | "allow_registration_from"
            | "hosts"
            | "remove_request_headers"
            | "remove_response_headers" => "[\"x\"]".into(),
            "set_request_headers" | "set_response_headers" => "{ X-A = \"1\" }".into(),
            _ => "\"x\"".into(),
        };
        for (section, keys) in SECTIONS.iter().skip(1) {
            let arrays = [
                "targets",
                "path_routes",
                "backends",
                "routes",
                "shards",
                "api_keys",
                "tcp",
                "tls.certificates",
            ];
            if arrays.contains(section) {
                src.push_str(&format!("[[{section}]]\n"));
            } else {
                src.push_str(&format!("[{section}]\n"));
            }
            for k in keys.iter() {
                // Nested sections get their own header below.
                if SECTIONS.iter().any(|(s, _)| *s == format!("{section}.{k}")) {
                    continue;
                }
                src.push_str(&format!("{k} = {}\n", value(k)));
            }
        }
        assert!(unknown_keys(&src).unwrap().is_empty());
        let parsed: Result<super::super::schema::RawConfig, _> = toml::from_str(&src);
        if let Err(e) = parsed {
            assert!(!e.message().contains("unknown field"), "{e}");
        }
    }
}
