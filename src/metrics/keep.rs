//! The control plane's index of per-rule counters, keyed by a stable rule id, so that a
//! rebuilt table (registration, etcd event, reload) points at the same cells and a rule that
//! stays keeps counting; only the cells of removed rules and addresses are dropped.
//!
//! Like `upstream::set` for health cells: locked only while a table is built, never on the
//! request path (a rule holds `Arc`s to its cells, the data plane only does atomic adds).
use super::{CodeCounters, RuleStats, RuleTotals};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// (rule id, address label and its occurrence in the pool; None = "no backend").
type CodeKey = (String, Option<(Box<str>, usize)>);

#[derive(Debug, Default)]
pub struct StatsKeep {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<String, Arc<RuleTotals>>,
    codes: HashMap<CodeKey, Arc<CodeCounters>>,
}

impl StatsKeep {
    /// The cells of rule `id` whose pool has these addresses (in pool order), the same ones
    /// every table gets for that id and address.
    pub fn stats<'a>(&self, id: &str, addresses: impl IntoIterator<Item = &'a str>) -> RuleStats {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let totals = inner.totals.entry(id.to_string()).or_default().clone();
        // The n-th time an address occurs in one pool is its own cell, so a scrape that sums
        // the pool's members never counts one cell twice.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut per_backend: Vec<Arc<CodeCounters>> = Vec::new();
        for a in addresses {
            let n = seen.entry(a).or_default();
            let key = (id.to_string(), Some((Box::from(a), *n)));
            *n += 1;
            per_backend.push(inner.codes.entry(key).or_default().clone());
        }
        per_backend.push(
            inner
                .codes
                .entry((id.to_string(), None))
                .or_default()
                .clone(),
        );
        RuleStats {
            totals,
            per_backend: per_backend.into(),
        }
    }

    /// Forgets every cell that none of `live` (the newest table's rules) uses.
    pub fn retain<'a>(&self, live: impl IntoIterator<Item = &'a RuleStats>) {
        let mut totals = HashSet::new();
        let mut codes = HashSet::new();
        for s in live {
            totals.insert(Arc::as_ptr(&s.totals));
            codes.extend(s.per_backend.iter().map(Arc::as_ptr));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.totals.retain(|_, t| totals.contains(&Arc::as_ptr(t)));
        inner.codes.retain(|_, c| codes.contains(&Arc::as_ptr(c)));
    }

    /// How many rules have cells (for tests).
    pub fn rules(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.totals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_that_stays_keeps_its_cells_and_a_removed_one_loses_them() {
        let keep = StatsKeep::default();
        let a = keep.stats("route /a", ["10.0.0.1:80", "10.0.0.2:80"]);
        let b = keep.stats("route /b", ["10.0.0.1:80"]);
        a.slot(Some(1)).count(200);
        a.slot(None).count(503);
        b.slot(Some(0)).count(200);
        a.totals()
            .duration
            .observe(std::time::Duration::from_millis(1));
        keep.retain([&a, &b]);

        // Rebuilt: /a's pool gained an address in front, /b is gone.
        let a2 = keep.stats("route /a", ["10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"]);
        keep.retain([&a2]);
        assert_eq!(a2.slot(Some(2)).total(), 1, "10.0.0.2 kept its count");
        assert_eq!(a2.slot(Some(0)).total(), 0, "a new address starts at zero");
        assert_eq!(a2.slot(None).total(), 1);
        assert_eq!(a2.totals().duration.count(), 1);
        assert_eq!(keep.rules(), 1);
        let b2 = keep.stats("route /b", ["10.0.0.1:80"]);
        assert_eq!(
            b2.slot(Some(0)).total(),
            0,
            "a removed rule comes back from zero"
        );
    }

    #[test]
    fn an_address_twice_in_one_pool_gets_two_cells() {
        let keep = StatsKeep::default();
        let s = keep.stats("r", ["a:1", "a:1"]);
        s.slot(Some(0)).count(200);
        assert_eq!(s.slot(Some(1)).total(), 0);
        let again = keep.stats("r", ["a:1", "a:1"]);
        assert_eq!(again.slot(Some(0)).total(), 1);
    }
}
