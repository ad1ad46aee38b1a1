//! Path prefix routes (SPEC §3 step 3): `/files` matches `/files` and `/files/...` but not
//! `/filesystem`; the longest prefix wins. A segment trie makes that one walk down the path.
use super::fxhash::FxHashMap;

#[derive(Debug, Default)]
struct Node {
    children: FxHashMap<Box<[u8]>, Node>,
    rule: Option<u32>,
}

#[derive(Debug, Default)]
pub struct PrefixTrie {
    root: Node,
}

/// Splits a configured prefix into segments; `/` is the empty prefix that matches everything.
pub fn prefix_segments(prefix: &str) -> Vec<&[u8]> {
    prefix
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::as_bytes)
        .collect()
}

impl PrefixTrie {
    /// Inserts a prefix; returns false if the same prefix is already present.
    pub fn insert(&mut self, prefix: &str, id: u32) -> bool {
        let mut node = &mut self.root;
        for seg in prefix_segments(prefix) {
            node = node.children.entry(seg.into()).or_default();
        }
        if node.rule.is_some() {
            return false;
        }
        node.rule = Some(id);
        true
    }

    /// The rule of the longest prefix of `segments`.
    pub fn lookup(&self, segments: &[&[u8]]) -> Option<u32> {
        let mut node = &self.root;
        let mut best = node.rule;
        for seg in segments {
            match node.children.get(*seg) {
                Some(child) => {
                    node = child;
                    best = node.rule.or(best);
                }
                None => break,
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Segments;

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let mut t = PrefixTrie::default();
        assert!(t.insert("/files", 1));
        assert!(t.insert("/files/big", 2));
        assert!(!t.insert("/files/", 3));
        fn look_in(t: &PrefixTrie, p: &str) -> Option<u32> {
            t.lookup(Segments::new(p.as_bytes()).as_slice())
        }
        let look = |p: &str| look_in(&t, p);
        assert_eq!(look("/files"), Some(1));
        assert_eq!(look("/files/"), Some(1));
        assert_eq!(look("/files/a"), Some(1));
        assert_eq!(look("/files/big/x"), Some(2));
        assert_eq!(look("/filesystem"), None);
        assert_eq!(look("/"), None);
        t.insert("/", 9);
        assert_eq!(look_in(&t, "/filesystem"), Some(9));
    }
}
