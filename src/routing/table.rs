//! The routing table: an immutable snapshot that answers "which rule, which candidates" for a
//! request (SPEC §3). Built by `build`, swapped whole behind an ArcSwap, read without locks.
use super::pattern::{Pattern, PatternTrie};
use super::prefix::PrefixTrie;
use super::select::{Candidates, Pool};
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
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Route => "route",
            RuleKind::PathRoute => "path_route",
            RuleKind::CatchAll => "catch_all",
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
    /// Requests by backend address and status code, for `/metrics`.
    pub stats: crate::metrics::RuleStats,
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
}

#[derive(Debug)]
pub struct Table {
    pub server: Arc<Server>,
    pub gateway: Gateway,
    pub routes: Vec<Rule>,
    pub(super) route_trie: PatternTrie,
    pub path_routes: Vec<Rule>,
    pub(super) prefix_trie: PrefixTrie,
    pub catch_all: Option<Rule>,
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
            if let Some(id) = self.prefix_trie.lookup(segs) {
                return Some(&self.path_routes[id as usize]);
            }
        }
        self.catch_all.as_ref()
    }

    /// Routes a request: the rule and the ordered candidates (advancing round robin).
    pub fn route(&self, method: &[u8], path: Option<&[u8]>) -> Decision<'_> {
        match self.find(method, path) {
            Some(rule) => Decision::Forward {
                rule,
                candidates: rule.pool.candidates(),
            },
            None => Decision::NotFound,
        }
    }

    /// Every pool in the table, rules first (for the admin listener).
    pub fn pools(&self) -> Vec<&Arc<Pool>> {
        let mut v: Vec<&Arc<Pool>> = Vec::new();
        for r in self
            .routes
            .iter()
            .chain(&self.path_routes)
            .chain(self.catch_all.as_ref())
        {
            if !v.iter().any(|p| Arc::ptr_eq(p, &r.pool)) {
                v.push(&r.pool);
            }
        }
        v
    }
}
