//! `switchyard route`: which rule a request would take, why, and in which order its addresses
//! would be tried, from the table alone, without sending anything.
use super::table::{RuleKind, Table};
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
    let segs = Segments::new(path_bytes);
    let mut matched: Vec<&super::Rule> = table
        .routes
        .iter()
        .filter(|r| {
            r.pattern
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
            "  pattern {} ({}, {methods}) matches the path",
            r.label, r.origin
        );
    }
    let Some(rule) = table.find(method.as_bytes(), Some(path_bytes)) else {
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
