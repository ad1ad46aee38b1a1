//! What a replica believes is under the etcd prefix, as key → mod revision, and the cheap
//! check of that belief against etcd that lets the periodic refresh skip the full load when
//! nothing changed. Pure: the etcd call that feeds `check` lives in `store/etcd.rs`.
//!
//! Why this check and not a cheaper-looking one:
//! - etcd's header revision is cluster-wide: any write anywhere (a lock key, a lease expiring
//!   its keys, another application's prefix) moves it. So a moved revision says nothing about
//!   our prefix, and comparing it with the last applied one cannot be the whole check; only
//!   an unmoved one proves something (nothing at all was written).
//! - The prefix's count and its highest mod revision (a sorted limit-1 range) catch every
//!   change only while what we hold is a state etcd really had. After a lost watch event
//!   followed by an applied one, it is not: a missed update of key A and a later update of B
//!   leave count and maximum equal to etcd's, and the table would stay wrong for good.
//! - So, in two steps. First a `count_only` Range over the prefix: etcd answers it from its
//!   in-memory index, and its header revision, cluster-wide as it is, can only equal the
//!   verified revision if nothing at all was written since (`quiet`). That settles the usual
//!   case at rest. When something was written somewhere, one Range with `keys_only` and
//!   `min_mod_revision = verified + 1`: etcd answers `count` for the whole range (the filter
//!   only prunes `kvs`; checked against etcd 3.4) and the keys (no values) modified after the
//!   verified revision (`check`). etcd reads every key of the prefix for that one, so it is
//!   the second step only. Either answer is a header and a count at rest: O(1) bytes,
//!   whatever the table size.
//!
//! Why it is exact (`check` returns true only if our map equals etcd's at `at`): let V be
//! `verified`, when the map equalled etcd at V. Since then the map changed only by watch
//! events above V, each a real etcd change. Split both maps at V. The parts above V are
//! compared key for key. Every key etcd still holds at or below V was not touched since V,
//! so no event for it was applied, so the map still holds it with that revision: etcd's old
//! part is a subset of ours, and equal counts make them equal. Values follow from
//! (key, mod revision), which names one write. `quiet` is the case with no write above V at
//! all: no event above V exists to have been applied, so the map is etcd's state at V, which
//! is etcd's state now. The reads must be linearizable (etcd's default):
//! a serializable read from a lagging member could "verify" an older state than we hold.
use std::collections::HashMap;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mirror {
    keys: HashMap<Vec<u8>, i64>,
    /// A revision at which `keys` was exactly etcd's prefix.
    verified: i64,
}

impl Mirror {
    /// The state read by a full load at `revision`.
    pub fn loaded(keys: impl IntoIterator<Item = (Vec<u8>, i64)>, revision: i64) -> Mirror {
        Mirror {
            keys: keys.into_iter().collect(),
            verified: revision,
        }
    }

    pub fn verified(&self) -> i64 {
        self.verified
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records a watch event at `revision`; false when it is already part of the verified
    /// state (a watch started before the last full load replays those), so the caller skips it.
    pub fn apply(&mut self, key: &[u8], revision: i64, deleted: bool) -> bool {
        if revision <= self.verified {
            return false;
        }
        if deleted {
            self.keys.remove(key);
        } else {
            self.keys.insert(key.to_vec(), revision);
        }
        true
    }

    /// The first, index-only step: `count` keys in the prefix at cluster revision `at`. True
    /// when nothing was written anywhere in etcd since the verified revision.
    pub fn quiet(&self, count: i64, at: i64) -> bool {
        at == self.verified && usize::try_from(count).is_ok_and(|c| c == self.keys.len())
    }

    /// Compares with etcd's answer read at `at`: `count` keys in the whole prefix, `changed`
    /// the (key, mod revision) of those modified after `verified`. On a match the belief is
    /// verified at `at` and true is returned; false means load everything.
    pub fn check(&mut self, count: i64, changed: &[(&[u8], i64)], at: i64) -> bool {
        let ours_above = self.keys.values().filter(|&&r| r > self.verified).count();
        // A revision below the verified one is an etcd restored from a backup: its keys can
        // differ below our revision, which the comparison above `verified` cannot see.
        let same = at >= self.verified
            && usize::try_from(count).is_ok_and(|c| c == self.keys.len())
            && changed.len() == ours_above
            && changed
                .iter()
                .all(|(k, r)| *r > self.verified && self.keys.get(*k) == Some(r));
        if same {
            self.verified = self.verified.max(at);
        }
        same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(keys: &[(&str, i64)], rev: i64) -> Mirror {
        Mirror::loaded(keys.iter().map(|(k, r)| (k.as_bytes().to_vec(), *r)), rev)
    }

    #[test]
    fn at_rest_the_check_passes_and_moves_the_verified_revision() {
        let mut x = m(&[("a", 3), ("b", 5)], 7);
        assert!(x.check(2, &[], 9));
        assert_eq!(x.verified(), 9);
    }

    #[test]
    fn applied_events_are_verified_by_the_next_check() {
        let mut x = m(&[("a", 3), ("b", 5)], 7);
        assert!(x.apply(b"c", 8, false));
        assert!(x.apply(b"a", 9, true));
        assert!(x.check(2, &[(b"c", 8)], 10));
        assert_eq!(x.verified(), 10);
    }

    #[test]
    fn events_at_or_below_the_verified_revision_are_skipped() {
        let mut x = m(&[("a", 3)], 7);
        assert!(!x.apply(b"a", 7, true));
        assert!(!x.apply(b"z", 5, false));
        assert_eq!(x, m(&[("a", 3)], 7));
    }

    #[test]
    fn a_missed_creation_is_seen() {
        let mut x = m(&[("a", 3)], 7);
        assert!(!x.check(2, &[(b"n", 8)], 8));
        assert_eq!(x.verified(), 7, "a failed check verifies nothing");
    }

    #[test]
    fn a_missed_deletion_is_seen_by_the_count() {
        let mut x = m(&[("a", 3), ("b", 5)], 7);
        assert!(!x.check(1, &[], 8));
    }

    #[test]
    fn a_missed_update_followed_by_an_applied_one_is_seen() {
        // etcd: a updated at 8 (event lost), b updated at 9 (applied). Count and the highest
        // mod revision both agree with etcd here; the per-key comparison does not.
        let mut x = m(&[("a", 3), ("b", 5)], 7);
        assert!(x.apply(b"b", 9, false));
        assert!(!x.check(2, &[(b"a", 8), (b"b", 9)], 9));
    }

    #[test]
    fn a_missed_deletion_hidden_by_a_missed_creation_is_seen() {
        // Same count, but etcd has n (new) instead of a.
        let mut x = m(&[("a", 3), ("b", 5)], 7);
        assert!(!x.check(2, &[(b"n", 8)], 8));
    }

    #[test]
    fn an_event_we_have_but_etcd_does_not_report_fails_the_check() {
        let mut x = m(&[("a", 3)], 7);
        assert!(x.apply(b"a", 8, false));
        assert!(!x.check(1, &[], 8));
    }

    #[test]
    fn quiet_only_when_no_revision_passed_and_the_count_agrees() {
        let x = m(&[("a", 3)], 7);
        assert!(x.quiet(1, 7));
        assert!(!x.quiet(1, 8), "a write somewhere: the second step decides");
        assert!(!x.quiet(0, 7));
        assert!(!x.quiet(1, 6));
    }

    #[test]
    fn an_etcd_that_went_back_in_revisions_is_a_mismatch() {
        let mut x = m(&[("a", 3)], 7);
        assert!(!x.check(1, &[], 5));
    }

    #[test]
    fn a_negative_or_huge_count_is_a_mismatch_not_a_panic() {
        let mut x = m(&[], 1);
        assert!(!x.check(-1, &[], 2));
        assert!(!x.check(i64::MAX, &[], 2));
        assert!(x.is_empty());
    }
}
