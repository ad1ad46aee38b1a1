//! Registered services compiled into their table parts (upstream, pool, each route's pattern,
//! label and counters), kept across rebuilds by service name. A fleet replica rebuilds its
//! table for every etcd event; with this, a service whose registration did not change costs a
//! comparison and a few reference counts instead of its URL parsed again, its upstream and
//! pool looked up, its stable rule ids formatted and its counters found by string keys.
//!
//! An entry is used only when the registration is equal to the one it was made from and the
//! `[server]` hold it was made under is the same; everything in it is what `build` would make
//! from scratch, so routing and counters are the same either way (`build` tests).
use super::pattern::Pattern;
use super::select::Pool;
use crate::config::resilience::Hold;
use crate::metrics::RuleStats;
use crate::registry::Registration;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::Arc;

/// One registered service as the table uses it.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// What it was made from: a hit needs an equal registration.
    pub(crate) reg: Registration,
    pub(crate) hold: Hold,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) pool: Arc<Pool>,
    /// `service <name>`, every route's origin.
    pub(crate) origin: String,
    /// One per route of `reg`, in order.
    pub(crate) routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) pattern: Pattern,
    pub(crate) label: String,
    pub(crate) methods: Vec<Box<[u8]>>,
    pub(crate) stats: RuleStats,
}

/// The compiled services of the newest table, by name.
#[derive(Debug, Default)]
pub(crate) struct Services {
    by_name: HashMap<String, Arc<Compiled>>,
}

impl Services {
    /// The entry for `reg` if it was made from an equal registration under the same hold.
    pub(crate) fn hit(&self, reg: &Registration, hold: Hold) -> Option<Arc<Compiled>> {
        self.by_name
            .get(reg.service.as_str())
            .filter(|c| c.hold == hold && c.reg == *reg)
            .cloned()
    }

    /// Replaces every entry with the ones the newest table was built from: services that
    /// are gone (or were left out) are forgotten, so their cells can go.
    pub(crate) fn replace(&mut self, entries: Vec<Arc<Compiled>>) {
        let mut old = std::mem::take(&mut self.by_name);
        self.by_name.reserve(entries.len());
        for c in entries {
            // The old key is reused: no allocation for a service that stays.
            let name = match old.remove_entry(c.reg.service.as_str()) {
                Some((name, _)) => name,
                None => c.reg.service.clone(),
            };
            self.by_name.insert(name, c);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}
