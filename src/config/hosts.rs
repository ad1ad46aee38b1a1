//! The per-rule `hosts` list and rewrite keys of `[[routes]]`, `[[path_routes]]` and
//! `[[shards]]` (SPEC §3 Hosts, Rewrites), checked with key and line like every other key.
use super::check::Checker;
use super::model::Rewrites;
use super::schema::HeaderTable;
use super::value::{List, Val};
use crate::http::edits::{refuse_name, refuse_value, Side};

/// Most headers one rule may set or remove per side: every one is compared against each
/// header of every head the rule forwards.
const MAX_EDITS: usize = 64;

/// The normalized `hosts` entries of one rule (`key` is e.g. `routes[2]`).
pub(super) fn hosts(c: &mut Checker<'_>, list: &Option<List>, key: &str) -> Vec<String> {
    let Some(List(items)) = list else {
        return Vec::new();
    };
    let k = format!("{key}.hosts");
    if items.is_empty() {
        c.problem(
            None,
            &k,
            "empty list: leave hosts out to match every host".into(),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for v in items {
        match crate::routing::host::parse(&v.value) {
            Ok(h) if out.contains(&h) => {
                c.problem(Some(&v.span), &k, format!("{h} is listed twice"));
            }
            Ok(h) => out.push(h),
            Err(e) => c.problem(Some(&v.span), &k, e),
        }
    }
    out
}

/// The rewrite keys of one rule, as written.
pub(super) struct RawRewrites<'a> {
    pub strip_prefix: &'a Option<Val<String>>,
    pub set_request_headers: &'a Option<HeaderTable>,
    pub remove_request_headers: &'a Option<List>,
    pub set_response_headers: &'a Option<HeaderTable>,
    pub remove_response_headers: &'a Option<List>,
}

/// Checks a rule's rewrites. `literal_prefix` is the rule's own path up to its first `*`, as
/// segments: `strip_prefix` must be made of its leading segments.
pub(super) fn rewrites(
    c: &mut Checker<'_>,
    raw: RawRewrites<'_>,
    key: &str,
    literal_prefix: &[&str],
) -> Rewrites {
    let mut r = Rewrites::default();
    if let Some(v) = raw.strip_prefix {
        let k = format!("{key}.strip_prefix");
        let p = v.value.trim();
        let segs: Vec<&str> = p
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        if !p.starts_with('/') || p.contains(['*', '?', '#', ' ', '%', '\\']) || p.contains("//") {
            c.problem(
                Some(&v.span),
                &k,
                format!("{p:?} must be a plain path prefix starting with /"),
            );
        } else if segs.is_empty() {
            c.problem(
                Some(&v.span),
                &k,
                "\"/\" strips nothing: leave it out".into(),
            );
        } else if segs.len() > literal_prefix.len()
            || segs.iter().zip(literal_prefix).any(|(a, b)| a != b)
        {
            c.problem(
                Some(&v.span),
                &k,
                format!(
                    "{p:?} must end on a segment boundary of the rule's own path (/{})",
                    literal_prefix.join("/")
                ),
            );
        } else {
            r.strip_prefix = Some(format!("/{}", segs.join("/")));
        }
    }
    r.set_request_headers = set(
        c,
        raw.set_request_headers,
        key,
        "set_request_headers",
        Side::Request,
    );
    r.remove_request_headers = remove(
        c,
        raw.remove_request_headers,
        key,
        "remove_request_headers",
        Side::Request,
        &r.set_request_headers,
    );
    r.set_response_headers = set(
        c,
        raw.set_response_headers,
        key,
        "set_response_headers",
        Side::Response,
    );
    r.remove_response_headers = remove(
        c,
        raw.remove_response_headers,
        key,
        "remove_response_headers",
        Side::Response,
        &r.set_response_headers,
    );
    r
}

fn set(
    c: &mut Checker<'_>,
    table: &Option<HeaderTable>,
    key: &str,
    name: &str,
    side: Side,
) -> Vec<(String, String)> {
    let Some(HeaderTable(entries)) = table else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, v) in entries {
        let k = format!("{key}.{name}.{n}");
        if let Some(why) = refuse_name(n, side, false) {
            c.problem(Some(&v.span), &k, why);
        } else if let Some(why) = refuse_value(&v.value) {
            c.problem(Some(&v.span), &k, why);
        } else if out.iter().any(|(o, _)| o.eq_ignore_ascii_case(n)) {
            c.problem(Some(&v.span), &k, format!("{n} is set twice"));
        } else if n.eq_ignore_ascii_case("host") && v.value.is_empty() {
            c.problem(Some(&v.span), &k, "Host may not be empty".into());
        } else {
            out.push((n.clone(), v.value.clone()));
        }
    }
    if out.len() > MAX_EDITS {
        let span = entries.first().map(|(_, v)| v.span.clone());
        c.problem(
            span.as_ref(),
            &format!("{key}.{name}"),
            format!("at most {MAX_EDITS} headers"),
        );
    }
    out
}

fn remove(
    c: &mut Checker<'_>,
    list: &Option<List>,
    key: &str,
    name: &str,
    side: Side,
    set: &[(String, String)],
) -> Vec<String> {
    let Some(List(items)) = list else {
        return Vec::new();
    };
    let k = format!("{key}.{name}");
    let mut out: Vec<String> = Vec::new();
    for v in items {
        let n = v.value.trim();
        if let Some(why) = refuse_name(n, side, true) {
            c.problem(Some(&v.span), &k, why);
        } else if out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
            c.problem(Some(&v.span), &k, format!("{n} is listed twice"));
        } else if set.iter().any(|(s, _)| s.eq_ignore_ascii_case(n)) {
            c.problem(
                Some(&v.span),
                &k,
                format!(
                    "{n} is also set by this rule: a set header replaces the incoming one already"
                ),
            );
        } else {
            out.push(n.to_string());
        }
    }
    if out.len() > MAX_EDITS {
        c.problem(
            items.first().map(|v| &v.span),
            &k,
            format!("at most {MAX_EDITS} headers"),
        );
    }
    out
}
