//! The one builder of routing tables: config (and, later, registrations) plus the upstream
//! set in, a complete immutable table out. Reload, registration and store events all use it.
use super::fxhash::FxHashMap;
use super::host::HostSpec;
use super::select::Pool;
use super::table::{rank, Rule, RuleKind, RuleSet, ServiceEntry, ShardRule, Table};
use crate::config::Config;
use crate::metrics::keep::StatsKeep;
use crate::metrics::RuleStats;
use crate::registry::Registration;
use crate::upstream::set::UpstreamSet;
use crate::upstream::Upstream;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The tries of every host group while a table is built.
#[derive(Default)]
struct Groups {
    any: RuleSet,
    exact: FxHashMap<Box<[u8]>, RuleSet>,
    wild: FxHashMap<Box<[u8]>, RuleSet>,
}

impl Groups {
    /// Calls `f` with the rule set of every group a rule with these `hosts` belongs to.
    fn each(&mut self, hosts: &[String], mut f: impl FnMut(&mut RuleSet)) {
        if hosts.is_empty() {
            return f(&mut self.any);
        }
        for h in hosts {
            match HostSpec::of(h) {
                HostSpec::Exact(e) => f(self.exact.entry(e.as_bytes().into()).or_default()),
                HostSpec::Wildcard(w) => f(self.wild.entry(w.as_bytes().into()).or_default()),
            }
        }
    }
}

/// Hands out each rule's counters by a stable id: what the rule is (kind, its shard name or
/// registered service, label, hosts, methods), not where it sits in the file, so a
/// rule keeps counting when others are added or removed around it. Two rules with the same id
/// in one table get `#1`, `#2`... in order.
struct Ids<'k> {
    keep: &'k StatsKeep,
    seen: HashMap<String, usize>,
}

impl Ids<'_> {
    fn stats(&mut self, parts: &[&str], hosts: &[String], pool: &Pool) -> RuleStats {
        let mut id = parts.join(" ");
        if !hosts.is_empty() {
            id.push_str(" hosts=");
            id.push_str(&hosts.join(","));
        }
        let n = self.seen.entry(id.clone()).or_default();
        if *n > 0 {
            id.push_str(&format!(" #{n}"));
        }
        *n += 1;
        self.keep
            .stats(&id, pool.upstreams.iter().map(|u| &*u.label))
    }
}

fn methods_of<'a>(m: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&str> = m.into_iter().map(String::as_str).collect();
    if v.is_empty() {
        "*".into()
    } else {
        v.join(",")
    }
}

/// Builds a table from `cfg` and the registered services. Upstreams come from `set`, so cells
/// are shared with earlier tables; afterwards the set forgets upstreams no longer used.
pub fn build(cfg: &Config, services: &[Registration], set: &UpstreamSet) -> Table {
    let mut used: Vec<Arc<Upstream>> = Vec::new();
    let mut get = |a: &crate::config::address::Address,
                   ep: Option<&str>,
                   tls: Option<&Arc<crate::tls::client::BackendTls>>,
                   protocol: crate::upstream::protocol::Protocol| {
        let u = set.get_proto(a, ep, tls, protocol);
        if !used.iter().any(|x| Arc::ptr_eq(x, &u)) {
            used.push(u.clone());
        }
        u
    };

    let mut pools: HashMap<&str, Arc<Pool>> = HashMap::new();
    for b in &cfg.backends {
        let ups = b
            .addresses
            .iter()
            .map(|a| {
                get(
                    a,
                    b.health_check_endpoint.as_deref(),
                    b.tls.as_ref(),
                    b.protocol,
                )
            })
            .collect();
        let pool = Pool::new(b.name.clone(), ups)
            .with(set.pool_runtime(&b.name), b.hold.over(cfg.server.hold));
        pools.insert(&b.name, Arc::new(pool));
    }

    let mut ids = Ids {
        keep: &set.rule_stats,
        seen: HashMap::new(),
    };
    let mut groups = Groups::default();
    let mut routes = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let pattern = r.path.clone();
        let pool = pools.entry(r.backend.as_str()).or_insert_with(|| {
            // validate() refuses an unknown backend; a Config built otherwise still keeps the
            // route, as a pool without addresses (503), rather than letting it fall through.
            log::error!(
                "routes[{i}]: unknown backend {:?}; answering 503",
                r.backend
            );
            Arc::new(Pool::new(r.backend.clone(), vec![]))
        });
        let path = pattern.to_string();
        let id = routes.len() as u32;
        groups.each(&r.hosts, |g| g.route_trie.insert(&pattern, id));
        routes.push(Rule {
            kind: RuleKind::Route,
            label: path.clone(),
            origin: format!("routes[{i}]"),
            hosts: r.hosts.clone(),
            edits: r.rewrites.edits(),
            stats: ids.stats(&["route", &path, &methods_of(&r.methods)], &r.hosts, pool),
            pool: pool.clone(),
            permission: r.permission.clone(),
            methods: r.methods.iter().map(|m| m.as_bytes().into()).collect(),
            rank: rank(&pattern, !r.methods.is_empty(), true, i),
            pattern: Some(pattern),
            shard: None,
        });
    }

    // Registered services join step 1 with the same pattern rules; ties go to static routes.
    let mut registered = Vec::new();
    for (si, reg) in services.iter().enumerate() {
        let Some(addr) = reg.address() else {
            // parse_registration refuses such a url, here and when a store is read.
            log::error!(
                "service {}: url {:?} is not http(s)://host:port; left out",
                reg.service,
                reg.url
            );
            continue;
        };
        let tls = reg.backend_tls().map(Arc::new);
        let u = get(
            &addr,
            Some(&reg.health_endpoint),
            tls.as_ref(),
            reg.protocol,
        );
        let pool = Arc::new(Pool::new(reg.service.clone(), vec![u.clone()]).with(
            set.pool_runtime(&reg.service),
            reg.hold().over(cfg.server.hold),
        ));
        registered.push(ServiceEntry {
            name: reg.service.clone(),
            url: reg.url.clone(),
            upstream: u,
        });
        for (ri, r) in reg.routes.iter().enumerate() {
            let pattern = r.path.clone();
            let path = pattern.to_string();
            let id = routes.len() as u32;
            groups.each(&r.hosts, |g| g.route_trie.insert(&pattern, id));
            routes.push(Rule {
                kind: RuleKind::Route,
                label: path.clone(),
                origin: format!("service {}", reg.service),
                hosts: r.hosts.clone(),
                edits: Default::default(),
                pool: pool.clone(),
                permission: r.permission.clone(),
                methods: r.method.iter().map(|m| m.as_bytes().into()).collect(),
                rank: rank(
                    &pattern,
                    r.method.is_some(),
                    false,
                    cfg.routes.len() + si * 256 + ri,
                ),
                pattern: Some(pattern),
                shard: None,
                stats: ids.stats(
                    &["service", &reg.service, &path, &methods_of(&r.method)],
                    &r.hosts,
                    &pool,
                ),
            });
        }
    }

    let mut shards = Vec::new();
    for (i, sh) in cfg.shards.iter().enumerate() {
        let pattern = sh.path.clone();
        let path = pattern.to_string();
        let pods = sh
            .addresses
            .iter()
            .map(|a| get(a, sh.health_check_endpoint.as_deref(), None, sh.protocol))
            .collect();
        let id = shards.len() as u32;
        groups.each(&sh.hosts, |g| g.shard_trie.insert(&pattern, id));
        let pool = Arc::new(
            Pool::new(sh.name.clone(), pods)
                .with(set.pool_runtime(&sh.name), sh.hold.over(cfg.server.hold)),
        );
        shards.push(Rule {
            kind: RuleKind::Shard,
            label: path.clone(),
            origin: format!("shards[{i}] {}", sh.name),
            hosts: sh.hosts.clone(),
            edits: sh.rewrites.edits(),
            stats: ids.stats(&["shard", &sh.name, &path], &sh.hosts, &pool),
            pool,
            permission: None,
            methods: vec![],
            rank: rank(&pattern, false, true, i),
            pattern: Some(pattern),
            shard: Some(ShardRule {
                key: sh.key.clone(),
                hash: sh.hash,
                reject: sh.reject,
            }),
        });
    }

    let mut path_routes = Vec::new();
    let mut path_routed = HashSet::new();
    for (i, p) in cfg.path_routes.iter().enumerate() {
        // validate() refused duplicates, so every insert lands.
        let id = path_routes.len() as u32;
        groups.each(&p.hosts, |g| {
            g.prefix_trie.insert(&p.path, id);
        });
        path_routed.insert(&p.address);
        let u = get(
            &p.address,
            p.health_check_endpoint.as_deref(),
            None,
            Default::default(),
        );
        let pool = Arc::new(
            Pool::new(p.address.to_string(), vec![u])
                .with(set.pool_runtime(&p.address.to_string()), cfg.server.hold),
        );
        path_routes.push(Rule {
            kind: RuleKind::PathRoute,
            label: p.path.clone(),
            origin: format!("path_routes[{i}]"),
            hosts: p.hosts.clone(),
            edits: p.rewrites.edits(),
            stats: ids.stats(&["path_route", &p.path], &p.hosts, &pool),
            pool,
            permission: None,
            methods: vec![],
            pattern: None,
            rank: 0,
            shard: None,
        });
    }

    // SPEC §3 step 4: an address that a path route uses is not part of the catch-all pool.
    let catch: Vec<_> = cfg
        .targets
        .iter()
        .filter(|t| !path_routed.contains(&t.address))
        .map(|t| {
            get(
                &t.address,
                t.health_check_endpoint.as_deref(),
                None,
                Default::default(),
            )
        })
        .collect();
    let catch_all = (!catch.is_empty()).then(|| {
        let pool = Arc::new(
            Pool::new("targets".into(), catch).with(set.pool_runtime("targets"), cfg.server.hold),
        );
        Rule {
            kind: RuleKind::CatchAll,
            stats: ids.stats(&["catch_all"], &[], &pool),
            label: "catch-all".into(),
            origin: "targets".into(),
            hosts: vec![],
            edits: Default::default(),
            pool,
            permission: None,
            methods: vec![],
            pattern: None,
            rank: 0,
            shard: None,
        }
    });

    set.retain(&used);
    let names: HashSet<&str> = routes
        .iter()
        .chain(&path_routes)
        .chain(&shards)
        .chain(&catch_all)
        .map(|r| r.pool.name.as_str())
        .collect();
    set.retain_pools(&names);
    let table = Table {
        outlier: cfg.outlier.clone(),
        retry: cfg.retry.clone(),
        server: Arc::new(cfg.server.clone()),
        gateway: cfg.gateway.clone(),
        routes,
        path_routes,
        catch_all,
        shards,
        any_host: groups.any,
        by_host: groups.exact,
        by_suffix: groups.wild,
        services: registered,
        api_keys: cfg.api_keys.clone(),
        ready: true,
    };
    set.rule_stats.retain(table.rules().map(|r| &r.stats));
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::routing::Decision;

    fn table(src: &str) -> Table {
        let cfg = parse(src, "t", Box::new(|_| None)).unwrap();
        build(&cfg, &[], &UpstreamSet::default())
    }

    fn pick(t: &Table, method: &str, path: &str) -> String {
        let none = |_: &str| None;
        let keys = crate::routing::table::KeyInput {
            query: None,
            header: &none,
        };
        match t.route(method.as_bytes(), None, Some(path.as_bytes()), &keys) {
            Decision::Forward {
                rule,
                mut candidates,
            } => format!(
                "{} {}",
                rule.label,
                candidates
                    .next()
                    .map_or("-".into(), |u| u.label.to_string())
            ),
            Decision::NotFound => "404".into(),
            Decision::BadKey { .. } => "400".into(),
        }
    }

    const CFG: &str = r#"
[[targets]]
address = "127.0.0.1:8001"
[[targets]]
address = "127.0.0.1:8002"
[[targets]]
address = "127.0.0.1:8007"
[[path_routes]]
path = "/files"
address = "127.0.0.1:8007"
[[backends]]
name = "comments"
addresses = ["127.0.0.1:7812"]
[[backends]]
name = "replies"
addresses = ["127.0.0.1:7900"]
[[routes]]
path = "/api/comments/*"
backend = "comments"
[[routes]]
path = "/api/comments/*/reply"
methods = ["POST"]
backend = "replies"
[[routes]]
path = "/only-get"
methods = ["GET"]
backend = "comments"
"#;

    #[test]
    fn spec_order_of_rules() {
        let t = table(CFG);
        assert_eq!(
            pick(&t, "GET", "/api/comments/x"),
            "/api/comments/* 127.0.0.1:7812"
        );
        assert_eq!(
            pick(&t, "POST", "/api/comments/x/reply"),
            "/api/comments/*/reply 127.0.0.1:7900"
        );
        assert_eq!(
            pick(&t, "GET", "/api/comments/x/reply"),
            "/api/comments/* 127.0.0.1:7812"
        );
        assert_eq!(pick(&t, "GET", "/files/a.txt"), "/files 127.0.0.1:8007");
        assert!(pick(&t, "GET", "/filesystem").starts_with("catch-all"));
        assert_eq!(pick(&t, "POST", "/only-get"), "404");
    }

    #[test]
    fn catch_all_leaves_out_path_routed_addresses_and_rotates() {
        let t = table(CFG);
        let mut seen = HashSet::new();
        for _ in 0..6 {
            seen.insert(pick(&t, "GET", "/x"));
        }
        let expect: HashSet<String> = ["catch-all 127.0.0.1:8001", "catch-all 127.0.0.1:8002"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn nothing_matches_is_404() {
        let t = table("[[path_routes]]\npath = \"/a\"\naddress = \"127.0.0.1:1\"\n");
        assert_eq!(pick(&t, "GET", "/b"), "404");
        let none = |_: &str| None;
        let keys = crate::routing::table::KeyInput {
            query: None,
            header: &none,
        };
        assert!(matches!(
            t.route(b"CONNECT", None, None, &keys),
            Decision::NotFound
        ));
    }

    fn pick_host(t: &Table, method: &str, host: &str, path: &str) -> String {
        let mut hb = crate::routing::host::HostBuf::default();
        let h = hb.set(host.as_bytes());
        t.find(method.as_bytes(), h, Some(path.as_bytes()))
            .map_or("404".into(), |r| r.origin.clone())
    }

    const HOSTS: &str = r#"
[[targets]]
address = "127.0.0.1:8001"
[[backends]]
name = "b"
addresses = ["127.0.0.1:7000"]
[[routes]]
path = "/api/*"
backend = "b"
[[routes]]
path = "/api/special/*"
backend = "b"
[[routes]]
path = "/*"
backend = "b"
hosts = ["api.example.com"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["*.example.com"]
[[routes]]
path = "/api/*"
backend = "b"
hosts = ["*.eu.example.com"]
[[routes]]
path = "/get-only"
methods = ["GET"]
backend = "b"
hosts = ["api.example.com"]
[[path_routes]]
path = "/files"
address = "127.0.0.1:8007"
hosts = ["files.example.com"]
[[path_routes]]
path = "/files"
address = "127.0.0.1:8008"
"#;

    #[test]
    fn host_groups_come_before_specificity() {
        let t = table(HOSTS);
        // Exact host first, even with a less specific pattern.
        assert_eq!(
            pick_host(&t, "GET", "api.example.com", "/api/special/x"),
            "routes[2]"
        );
        assert_eq!(
            pick_host(&t, "GET", "API.Example.com.:443", "/x"),
            "routes[2]"
        );
        // Wildcards, longest suffix first; never the bare domain.
        assert_eq!(
            pick_host(&t, "GET", "www.example.com", "/api/x"),
            "routes[3]"
        );
        assert_eq!(
            pick_host(&t, "GET", "a.b.example.com", "/api/x"),
            "routes[3]"
        );
        assert_eq!(
            pick_host(&t, "GET", "x.eu.example.com", "/api/x"),
            "routes[4]"
        );
        assert_eq!(pick_host(&t, "GET", "example.com", "/api/x"), "routes[0]");
        // A wildcard group without a rule for the path falls through to host-less rules.
        assert_eq!(pick_host(&t, "GET", "www.example.com", "/api2"), "targets");
        assert_eq!(
            pick_host(&t, "GET", "other.org", "/api/special/x"),
            "routes[1]"
        );
        // Path routes by host, then the host-less one; the catch-all serves every host.
        assert_eq!(
            pick_host(&t, "GET", "files.example.com", "/files/a"),
            "path_routes[0]"
        );
        assert_eq!(
            pick_host(&t, "GET", "other.org", "/files/a"),
            "path_routes[1]"
        );
        assert_eq!(pick_host(&t, "GET", "api.example.com", "/zzz"), "routes[2]");
        assert_eq!(pick_host(&t, "GET", "files.example.com", "/zzz"), "targets");
        // No host at all: host-less rules only.
        assert_eq!(
            t.find(b"GET", None, Some(b"/api/x"))
                .map(|r| r.origin.clone()),
            Some("routes[0]".into())
        );
    }

    #[test]
    fn other_methods_in_a_host_group_are_404() {
        let t = table(HOSTS);
        assert_eq!(
            pick_host(&t, "GET", "api.example.com", "/get-only"),
            "routes[5]"
        );
        // routes[2] (/*) also matches in the same group and takes it.
        assert_eq!(
            pick_host(&t, "POST", "api.example.com", "/get-only"),
            "routes[2]"
        );
        let t = table(
            "[[backends]]\nname = \"b\"\naddresses = [\"127.0.0.1:7000\"]\n[[routes]]\npath = \"/x\"\nmethods = [\"GET\"]\nbackend = \"b\"\nhosts = [\"a.com\"]\n[[routes]]\npath = \"/x\"\nbackend = \"b\"\n",
        );
        assert_eq!(pick_host(&t, "POST", "a.com", "/x"), "404");
        assert_eq!(pick_host(&t, "POST", "b.com", "/x"), "routes[1]");
    }

    #[test]
    fn registered_routes_with_hosts() {
        let cfg = parse(HOSTS, "t", Box::new(|_| None)).unwrap();
        let reg = crate::registry::parse_registration(
            br#"{"service": "s", "url": "http://127.0.0.1:7100", "routes": [{"path": "/api/*", "hosts": ["Reg.Example.com"]}]}"#,
        )
        .unwrap();
        let t = build(&cfg, &[reg], &UpstreamSet::default());
        assert_eq!(
            pick_host(&t, "GET", "reg.example.com", "/api/x"),
            "service s"
        );
        assert_eq!(
            pick_host(&t, "GET", "www.example.com", "/api/x"),
            "routes[3]"
        );
        assert!(t.uses_hosts());
        assert!(!table(CFG).uses_hosts());
    }

    #[test]
    fn health_survives_rebuild() {
        let set = UpstreamSet::default();
        let cfg = parse(CFG, "t", Box::new(|_| None)).unwrap();
        let t1 = build(&cfg, &[], &set);
        t1.catch_all.as_ref().unwrap().pool.upstreams[0]
            .health
            .set_status(crate::health::Status::Down);
        let t2 = build(&cfg, &[], &set);
        let u = &t2.catch_all.as_ref().unwrap().pool.upstreams[0];
        assert_eq!(u.status(), crate::health::Status::Down);
        assert_eq!(set.take_fresh().len(), 5);
    }

    #[test]
    fn rule_counters_survive_rebuild_and_identical_rules_count_apart() {
        let set = UpstreamSet::default();
        let cfg = parse(CFG, "t", Box::new(|_| None)).unwrap();
        let t1 = build(&cfg, &[], &set);
        for r in t1.rules() {
            r.stats.slot(None).count(503);
        }
        let n = t1.rules().count();
        assert_eq!(set.rule_stats.rules(), n, "one id per rule, none shared");
        let t2 = build(&cfg, &[], &set);
        for r in t2.rules() {
            assert_eq!(r.stats.slot(None).total(), 1, "{} lost its count", r.origin);
        }
        let empty = parse("", "t", Box::new(|_| None)).unwrap();
        let _t3 = build(&empty, &[], &set);
        assert_eq!(
            set.rule_stats.rules(),
            0,
            "removed rules' cells are dropped"
        );
    }

    /// A Config that names a backend it lacks (validate() refuses the file; a hand-built
    /// model can still) keeps the route, without addresses: 503, never a fall-through to a
    /// less specific rule.
    #[test]
    fn a_route_to_an_unknown_backend_is_kept_not_skipped() {
        let src = "[[targets]]\naddress = \"127.0.0.1:7001\"\n[[backends]]\nname = \"b\"\naddresses = [\"127.0.0.1:7000\"]\n[[routes]]\npath = \"/x/*\"\nbackend = \"b\"\n";
        let mut cfg = parse(src, "t", Box::new(|_| None)).unwrap();
        cfg.routes[0].backend = "gone".into();
        let t = build(&cfg, &[], &UpstreamSet::default());
        let r = t
            .rules()
            .find(|r| r.label == "/x/*")
            .expect("the route is in the table");
        assert_eq!(r.pool.name, "gone");
        assert!(r.pool.upstreams.is_empty());
    }
}
