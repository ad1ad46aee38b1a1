//! `switchyard route`: which rule a request would take, why, and in which order its addresses
//! would be tried, from the table alone, without sending anything.
use super::table::{Group, RuleKind, Table};
use super::Segments;
use crate::http::head;
use std::fmt::Write;

pub fn explain(table: &Table, method: &str, target: &str, headers: &[(String, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request: {method} {target}");
    let path = head::route_path(target.as_bytes());
    let Some(sent) = path else {
        let _ = writeln!(out, "result: 400 bad_request (target has no path)");
        return out;
    };
    let canon = crate::http::canonical::check_target(target.as_bytes())
        .and_then(|()| crate::http::canonical::canonical(sent));
    let canon = match canon {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "result: 400 bad_request ({})", e.message());
            return out;
        }
    };
    if canon != sent {
        let _ = writeln!(
            out,
            "canonical path: {} (routed and forwarded as this)",
            String::from_utf8_lossy(&canon)
        );
    }
    let path_bytes = &canon[..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    };
    let mut host_buf = super::host::HostBuf::default();
    let from_target = !crate::http::rewrite::target_authority(target.as_bytes()).is_empty();
    let host = super::host::of_request(target.as_bytes(), header("host"), &mut host_buf);
    let host_str = host.map(|h| String::from_utf8_lossy(h).into_owned());
    // Without any host rule the host changes nothing: no lines about it.
    let hosts_matter = table.uses_hosts();
    match (&host_str, from_target) {
        _ if !hosts_matter => {}
        (Some(h), true) => {
            let _ = writeln!(out, "host: {h} (from the request target's authority)");
        }
        (Some(h), false) => {
            let _ = writeln!(out, "host: {h} (from the Host header)");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "host: none (give -H 'Host: name'); only rules without hosts apply"
            );
        }
    }
    let for_host = |r: &super::Rule| {
        r.hosts.is_empty()
            || host_str.as_deref().is_some_and(|h| {
                r.hosts
                    .iter()
                    .any(|e| super::host::HostSpec::of(e).matches(h))
            })
    };
    let segs = Segments::new(path_bytes);
    let mut matched: Vec<&super::Rule> = table
        .routes
        .iter()
        .filter(|r| {
            for_host(r)
                && r.pattern
                    .as_ref()
                    .is_some_and(|p| p.matches(segs.as_slice()))
        })
        .collect();
    matched.sort_by_key(|r| std::cmp::Reverse(r.rank));
    for r in &matched {
        let methods = if r.methods.is_empty() {
            "any method".to_string()
        } else {
            r.methods
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            out,
            "  pattern {} ({}, {methods}{}) matches the path",
            r.label,
            r.origin,
            hosts_note(r)
        );
    }
    let Some((rule, group)) = table.find_with_group(method.as_bytes(), host, Some(path_bytes))
    else {
        if matched.is_empty() {
            let _ = writeln!(
                out,
                "result: 404 no_route (no route, path route or catch-all target matches)"
            );
        } else {
            let _ = writeln!(
                out,
                "result: 404 no_route (only routes for other methods match; no fall-through)"
            );
        }
        return out;
    };
    let why = match rule.kind {
        RuleKind::Route => {
            "step 1: the most specific matching pattern route (more literal segments, then methods)"
        }
        RuleKind::PathRoute => "step 3: the longest path prefix on a segment boundary",
        RuleKind::CatchAll => "step 4: nothing more specific matched; round robin over [[targets]]",
        RuleKind::Shard => "step 2: a shard rule whose path matches (no pattern route did)",
    };
    let _ = writeln!(
        out,
        "rule: {} {} ({})",
        rule.kind.as_str(),
        rule.label,
        rule.origin
    );
    let _ = writeln!(out, "why: {why}");
    let group = match group {
        Group::Exact(h) => format!(
            "rules naming the host {} exactly (tried first)",
            String::from_utf8_lossy(h)
        ),
        Group::Wildcard(s) => format!(
            "rules for *.{} (after exact hosts, longest suffix first)",
            String::from_utf8_lossy(s)
        ),
        Group::Any if rule.kind == RuleKind::CatchAll => {
            "the catch-all serves every host".to_string()
        }
        Group::Any => "rules without hosts (after exact and wildcard hosts)".to_string(),
    };
    if hosts_matter {
        let _ = writeln!(out, "host group: {group}");
    }
    if !rule.hosts.is_empty() {
        let _ = writeln!(out, "hosts: {}", rule.hosts.join(", "));
    }
    explain_edits(&mut out, rule, target);
    if let Some(p) = &rule.permission {
        let _ = writeln!(out, "permission: {p} (an X-API-Key holding it is required)");
    }
    if let Some(sh) = &rule.shard {
        return explain_shard(out, rule, sh, path_bytes, target, headers);
    }
    let _ = writeln!(
        out,
        "pool: {} ({} address(es))",
        rule.pool.name,
        rule.pool.upstreams.len()
    );
    let _ = writeln!(
        out,
        "candidates, in the order they would be tried (health is not checked offline):"
    );
    let n = rule.pool.upstreams.len();
    for (i, u) in rule.pool.upstreams.iter().enumerate() {
        let check = u
            .health_endpoint
            .as_deref()
            .map_or("not checked".to_string(), |e| format!("checked at {e}"));
        let _ = writeln!(out, "  {}. {} ({check})", i + 1, u.label);
    }
    if n > 1 {
        let _ = writeln!(out, "  (round robin: each request starts at the next address; a connect failure moves to the next)");
    }
    out
}

fn explain_shard(
    mut out: String,
    rule: &super::Rule,
    sh: &super::table::ShardRule,
    path: &[u8],
    target: &str,
    headers: &[(String, String)],
) -> String {
    let pods = rule.pool.upstreams.len() as u32;
    let query = target.split_once('?').map(|(_, q)| q.as_bytes());
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    };
    let keys = super::table::KeyInput {
        query,
        header: &header,
    };
    let key = super::shard::read_key(&sh.key, path, query, &header);
    let _ = writeln!(
        out,
        "shard: {} pods, hash {}, key from {}, on_unavailable {}",
        pods,
        sh.hash.as_str(),
        sh.key,
        if sh.reject { "reject" } else { "failover" }
    );
    match &key {
        Some(k) => {
            let _ = writeln!(out, "key: {:?}", String::from_utf8_lossy(k));
        }
        None => {
            let _ = writeln!(out, "key: missing or empty");
        }
    }
    match super::table::shard_pick(sh, pods, path, &keys) {
        Err(reason) => {
            let _ = writeln!(out, "result: 400 bad_request ({reason})");
        }
        Ok(pick) => {
            let _ = writeln!(
                out,
                "ordinal: {} -> {} (forwarded with X-Shard: {})",
                pick.first, rule.pool.upstreams[pick.first as usize].label, pick.first
            );
            let _ = writeln!(
                out,
                "failover order (a DOWN pod or a failed connect moves to the next):"
            );
            let mut prev = pick.first;
            let mut step = 0;
            let mut i = 1;
            let _ = writeln!(
                out,
                "  {i}. pod {prev} {}",
                rule.pool.upstreams[prev as usize].label
            );
            if sh.reject {
                let _ = writeln!(
                    out,
                    "  (reject: no failover; 503 when this pod is unavailable)"
                );
                return out;
            }
            while let Some(n) = super::shard::next_in_order(sh.hash, &pick, prev, step, pods) {
                i += 1;
                let _ = writeln!(
                    out,
                    "  {i}. pod {n} {}",
                    rule.pool.upstreams[n as usize].label
                );
                prev = n;
                step += 1;
            }
        }
    }
    out
}

fn hosts_note(r: &super::Rule) -> String {
    if r.hosts.is_empty() {
        String::new()
    } else {
        format!(", hosts {}", r.hosts.join(" "))
    }
}

/// The rule's rewrites and what they make of this request.
fn explain_edits(out: &mut String, rule: &super::Rule, target: &str) {
    let e = &rule.edits;
    if let Some(p) = &e.strip_prefix {
        let tail = head::origin_tail(target.as_bytes()).unwrap_or(target.as_bytes());
        let rest = crate::http::edits::strip(tail, p).unwrap_or(tail);
        let slash = if rest.first() == Some(&b'/') { "" } else { "/" };
        let _ = writeln!(
            out,
            "strip_prefix: {} (forwarded as {slash}{})",
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(rest)
        );
    }
    for (what, edits) in [("request", &e.request), ("response", &e.response)] {
        let lines = String::from_utf8_lossy(edits.lines());
        for l in lines.split("\r\n").filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "set {what} header: {l}");
        }
        if !edits.is_empty() {
            let _ = writeln!(
                out,
                "incoming {what} headers dropped: {}",
                edits.dropped().join(", ")
            );
        }
    }
}
