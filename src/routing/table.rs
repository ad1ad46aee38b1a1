//! The routing table: an immutable snapshot that answers "which rule, which candidates" for a
//! request (SPEC §3). Built by `build`, swapped whole behind an ArcSwap, read without locks.
use super::pattern::{Pattern, PatternTrie};
use super::prefix::PrefixTrie;
use super::select::{Candidates, Pool};
use super::shard::{self, HashKind, KeySource};
use super::Segments;
use crate::config::{Gateway, Server};
use std::sync::atomic::AtomicU64;
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
    pub requests: AtomicU64,
    /// For shard rules: how the key is read and hashed.
    pub shard: Option<ShardRule>,
    /// Requests by backend address and status code, for `/metrics`.
    pub stats: crate::metrics::RuleStats,
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

#[derive(Debug)]
pub struct Table {
    pub server: Arc<Server>,
    pub outlier: crate::resilience::outlier::OutlierConfig,
    pub retry: crate::resilience::policy::RetryConfig,
    pub gateway: Gateway,
    pub routes: Vec<Rule>,
    pub(super) route_trie: PatternTrie,
    pub path_routes: Vec<Rule>,
    pub(super) prefix_trie: PrefixTrie,
    pub catch_all: Option<Rule>,
    pub shards: Vec<Rule>,
    pub(super) shard_trie: PatternTrie,
    /// Registered services and the upstream each one is served by.
    pub services: Vec<ServiceEntry>,
    pub api_keys: Vec<crate::config::ApiKey>,
    /// When the table was built from the config (false while a store has not loaded yet).
    pub ready: bool,
}

impl Table {
    /// The rule a request takes. Does not advance round robin: see [`Table::route`].
    pub fn find(&self, method: &[u8], path: Option<&[u8]>) -> Option<&Rule> {
        let segs = path.map(Segments::new);
        let segs = segs.as_ref().map_or(&[][..], |s| s.as_slice());
        if path.is_some() {
            let mut best: Option<&Rule> = None;
            let mut any = false;
            self.route_trie.lookup(segs, &mut |id| {
                let r = &self.routes[id as usize];
                any = true;
                if r.allows(method) && best.is_none_or(|b| r.rank > b.rank) {
                    best = Some(r);
                }
            });
            if best.is_some() || any {
                return best;
            }
            let mut shard: Option<&Rule> = None;
            self.shard_trie.lookup(segs, &mut |id| {
                let r = &self.shards[id as usize];
                if shard.is_none_or(|b| r.rank > b.rank) {
                    shard = Some(r);
                }
            });
            if shard.is_some() {
                return shard;
            }
            if let Some(id) = self.prefix_trie.lookup(segs) {
                return Some(&self.path_routes[id as usize]);
            }
        }
        self.catch_all.as_ref()
    }

    /// Routes a request: the rule and the ordered candidates (advancing round robin).
    pub fn route<'t, 'r>(
        &'t self,
        method: &[u8],
        path: Option<&'r [u8]>,
        keys: &KeyInput<'r>,
    ) -> Decision<'t> {
        let Some(rule) = self.find(method, path) else {
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
