//! The routing table: an immutable snapshot that answers "which rule, which candidates" for a
//! request (SPEC §3). Built by `build`, swapped whole behind an ArcSwap, read without locks.
use super::fxhash::FxHashMap;
use super::pattern::{Pattern, PatternTrie};
use super::prefix::PrefixTrie;
use super::select::{Candidates, Pool};
use super::shard::{self, HashKind, KeySource};
use super::Segments;
use crate::config::{Gateway, Server};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A `[[routes]]` pattern route.
    Route,
    /// A `[[path_routes]]` prefix.
    PathRoute,
    /// Round robin over `[[targets]]`.
    CatchAll,
    /// A `[[shards]]` rule: the pod the request's key hashes to.
    Shard,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Route => "route",
            RuleKind::PathRoute => "path_route",
            RuleKind::CatchAll => "catch_all",
            RuleKind::Shard => "shard",
        }
    }
}

#[derive(Debug)]
pub struct Rule {
    pub kind: RuleKind,
    /// How the rule is named in logs, metrics and `switchyard route`: its path or pattern.
    pub label: String,
    /// Where it came from, e.g. `routes[2]` or `path_routes[0]`.
    pub origin: String,
    pub pool: Arc<Pool>,
    pub permission: Option<String>,
    /// Upper-case methods; empty = any.
    pub methods: Vec<Box<[u8]>>,
    pub pattern: Option<Pattern>,
    /// Higher wins among matching pattern routes (SPEC §3 step 1).
    pub rank: u64,
    /// For shard rules: how the key is read and hashed.
    pub shard: Option<ShardRule>,
    /// Requests by backend address and status code, for `/metrics`.
    pub stats: crate::metrics::RuleStats,
    /// Normalized `hosts` entries; empty = every host (SPEC §3 Hosts).
    pub hosts: Vec<String>,
    /// Rewrites applied to what this rule forwards, in wire form (SPEC §3 Rewrites).
    pub edits: crate::http::edits::Edits,
}

#[derive(Debug)]
pub struct ServiceEntry {
    pub name: String,
    pub url: String,
    pub upstream: Arc<crate::upstream::Upstream>,
}

#[derive(Debug, Clone)]
pub struct ShardRule {
    pub key: KeySource,
    pub hash: HashKind,
    pub reject: bool,
}

impl Rule {
    fn allows(&self, method: &[u8]) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| **m == *method)
    }
}

/// Ranks pattern routes: more literal segments, then having `methods`, then static over
/// registered, then without a trailing wildcard, then earlier in the file.
pub fn rank(p: &Pattern, has_methods: bool, is_static: bool, order: usize) -> u64 {
    let lit = (p.literal_count().min(0xffff) as u64) << 40;
    let m = u64::from(has_methods) << 39;
    let s = u64::from(is_static) << 38;
    let t = u64::from(!p.trailing) << 37;
    lit | m | s | t | (0xff_ffff - (order as u64).min(0xff_ffff))
}

/// What the table says about a request.
#[derive(Debug)]
pub enum Decision<'t> {
    Forward {
        rule: &'t Rule,
        candidates: Candidates<'t>,
    },
    /// Nothing matched, or only rules for other methods did.
    NotFound,
    /// A shard rule matched but the key is missing or malformed (400).
    BadKey {
        rule: &'t Rule,
        reason: &'static str,
    },
}

/// What a request offers to shard keys: its query string and a header lookup.
pub struct KeyInput<'r> {
    pub query: Option<&'r [u8]>,
    pub header: &'r (dyn Fn(&str) -> Option<&'r [u8]> + Sync),
}

/// The tries of steps 1–3 for one host group; ids index the table's rule vectors.
#[derive(Debug, Default)]
pub(super) struct RuleSet {
    pub(super) route_trie: PatternTrie,
    pub(super) shard_trie: PatternTrie,
    pub(super) prefix_trie: PrefixTrie,
}

/// Which host group a rule was found in, for `switchyard route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group<'t> {
    /// Rules naming the request's host.
    Exact(&'t [u8]),
    /// Rules for `*.<suffix>`.
    Wildcard(&'t [u8]),
    /// Rules without `hosts`.
    Any,
}

/// A lookup in one group: a rule, a path that only routes for other methods match (404, no
/// fall-through), or nothing.
enum Found<'t> {
    Rule(&'t Rule),
    OtherMethods,
    Miss,
}

#[derive(Debug)]
pub struct Table {
    pub server: Arc<Server>,
    pub outlier: crate::resilience::outlier::OutlierConfig,
    pub retry: crate::resilience::policy::RetryConfig,
    pub gateway: Gateway,
    pub routes: Vec<Rule>,
    pub path_routes: Vec<Rule>,
    pub catch_all: Option<Rule>,
    pub shards: Vec<Rule>,
    /// Rules without `hosts`.
    pub(super) any_host: RuleSet,
    /// Rules by exact host entry.
    pub(super) by_host: FxHashMap<Box<[u8]>, RuleSet>,
    /// Rules by wildcard entry, keyed by the suffix after `*.`.
    pub(super) by_suffix: FxHashMap<Box<[u8]>, RuleSet>,
    /// Registered services and the upstream each one is served by.
    pub services: Vec<ServiceEntry>,
    pub api_keys: Vec<crate::config::ApiKey>,
    /// When the table was built from the config (false while a store has not loaded yet).
    pub ready: bool,
}

impl Table {
    /// Whether any rule names hosts; without, a request's host is never looked at.
    pub fn uses_hosts(&self) -> bool {
        !self.by_host.is_empty() || !self.by_suffix.is_empty()
    }

    /// Steps 1–3 within one host group.
    fn find_in<'t>(&'t self, set: &RuleSet, method: &[u8], segs: &[&[u8]]) -> Found<'t> {
        let mut best: Option<&Rule> = None;
        let mut any = false;
        set.route_trie.lookup(segs, &mut |id| {
            let r = &self.routes[id as usize];
            any = true;
            if r.allows(method) && best.is_none_or(|b| r.rank > b.rank) {
                best = Some(r);
            }
        });
        if let Some(r) = best {
            return Found::Rule(r);
        }
        if any {
            return Found::OtherMethods;
        }
        let mut shard: Option<&Rule> = None;
        set.shard_trie.lookup(segs, &mut |id| {
            let r = &self.shards[id as usize];
            if shard.is_none_or(|b| r.rank > b.rank) {
                shard = Some(r);
            }
        });
        if let Some(r) = shard {
            return Found::Rule(r);
        }
        match set.prefix_trie.lookup(segs) {
            Some(id) => Found::Rule(&self.path_routes[id as usize]),
            None => Found::Miss,
        }
    }

    /// The rule a request takes, and the host group it came from. `host` is normalized
    /// (see [`super::host::HostBuf`]). Does not advance round robin: see [`Table::route`].
    pub fn find_with_group<'t, 'h>(
        &'t self,
        method: &[u8],
        host: Option<&'h [u8]>,
        path: Option<&[u8]>,
    ) -> Option<(&'t Rule, Group<'h>)> {
        // Without a rule that names a path there is nothing to look up (every trie is
        // empty): the catch-all, without splitting the path.
        let nothing_but_catch_all =
            self.routes.is_empty() && self.shards.is_empty() && self.path_routes.is_empty();
        let Some(path) = path.filter(|_| !nothing_but_catch_all) else {
            return self.catch_all.as_ref().map(|r| (r, Group::Any));
        };
        let segs = Segments::new(path);
        let segs = segs.as_slice();
        // The first group with a rule for the path decides, also when that rule is for other
        // methods only (404, as within one group).
        let decide = |found: Found<'t>, g: Group<'h>| match found {
            Found::Rule(r) => Some(Some((r, g))),
            Found::OtherMethods => Some(None),
            Found::Miss => None,
        };
        if let Some(h) = host {
            if let Some(set) = self.by_host.get(h) {
                if let Some(d) = decide(self.find_in(set, method, segs), Group::Exact(h)) {
                    return d;
                }
            }
            if !self.by_suffix.is_empty() {
                for suffix in super::host::wildcard_suffixes(h) {
                    if let Some(set) = self.by_suffix.get(suffix) {
                        let found = self.find_in(set, method, segs);
                        if let Some(d) = decide(found, Group::Wildcard(suffix)) {
                            return d;
                        }
                    }
                }
            }
        }
        if let Some(d) = decide(self.find_in(&self.any_host, method, segs), Group::Any) {
            return d;
        }
        self.catch_all.as_ref().map(|r| (r, Group::Any))
    }

    /// The rule a request takes. Does not advance round robin: see [`Table::route`].
    pub fn find(&self, method: &[u8], host: Option<&[u8]>, path: Option<&[u8]>) -> Option<&Rule> {
        self.find_with_group(method, host, path).map(|(r, _)| r)
    }

    /// Routes a request: the rule and the ordered candidates (advancing round robin). `host`
    /// is the request's normalized host, if it has one.
    pub fn route<'t, 'r>(
        &'t self,
        method: &[u8],
        host: Option<&[u8]>,
        path: Option<&'r [u8]>,
        keys: &KeyInput<'r>,
    ) -> Decision<'t> {
        let Some(rule) = self.find(method, host, path) else {
            return Decision::NotFound;
        };
        let Some(sh) = &rule.shard else {
            return Decision::Forward {
                rule,
                candidates: rule.pool.candidates(),
            };
        };
        match shard_pick(
            sh,
            rule.pool.upstreams.len() as u32,
            path.unwrap_or(b"/"),
            keys,
        ) {
            Ok(pick) => Decision::Forward {
                rule,
                candidates: rule.pool.shard_candidates(sh.hash, pick, sh.reject),
            },
            Err(reason) => Decision::BadKey { rule, reason },
        }
    }

    /// Every rule, in routing order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.routes
            .iter()
            .chain(&self.shards)
            .chain(&self.path_routes)
            .chain(self.catch_all.as_ref())
    }

    /// Every pool in the table, rules first (for the admin listener).
    pub fn pools(&self) -> Vec<&Arc<Pool>> {
        let mut v: Vec<&Arc<Pool>> = Vec::new();
        for r in self.rules() {
            if !v.iter().any(|p| Arc::ptr_eq(p, &r.pool)) {
                v.push(&r.pool);
            }
        }
        v
    }
}

/// Reads and hashes a request's shard key.
pub fn shard_pick<'r>(
    sh: &ShardRule,
    pods: u32,
    path: &'r [u8],
    keys: &KeyInput<'r>,
) -> Result<shard::Pick, &'static str> {
    let key = shard::read_key(&sh.key, path, keys.query, keys.header).ok_or(match sh.key {
        KeySource::Header(_) => "shard key header missing or empty",
        KeySource::Query(_) => "shard key query parameter missing or empty",
        KeySource::Path(_) => "shard key path segment missing",
    })?;
    shard::pick(sh.hash, &key, pods)
}
