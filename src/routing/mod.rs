//! The routing table and everything it is made of: patterns, prefixes, pools and candidate
//! selection. Pure data and lookups; the only I/O types here are the upstreams it points to.
pub mod build;
pub(crate) mod explain;
pub(crate) mod fxhash;
pub mod host;
pub mod pattern;
pub(crate) mod prefix;
pub(crate) mod reuse;
pub(crate) mod select;
pub mod shard;
pub mod table;

pub use table::{Decision, Rule, RuleKind, Table};

/// Splits a request path into segments without allocating for the common case: `/` gives no
/// segments, `/a/b/` gives `a`, `b`, ``.
pub struct Segments<'p> {
    small: [&'p [u8]; 24],
    len: usize,
    big: Vec<&'p [u8]>,
}

impl<'p> Segments<'p> {
    // Inlined: built in the caller's frame, not returned by a copy of its 400 bytes.
    #[inline(always)]
    pub fn new(path: &'p [u8]) -> Self {
        let mut s = Segments {
            small: [&[]; 24],
            len: 0,
            big: Vec::new(),
        };
        let trimmed = path.strip_prefix(b"/").unwrap_or(path);
        if trimmed.is_empty() {
            return s;
        }
        for seg in trimmed.split(|b| *b == b'/') {
            if s.len < s.small.len() {
                s.small[s.len] = seg;
                s.len += 1;
            } else {
                if s.big.is_empty() {
                    s.big.extend_from_slice(&s.small);
                }
                s.big.push(seg);
            }
        }
        s
    }

    pub fn as_slice(&self) -> &[&'p [u8]] {
        if self.big.is_empty() {
            &self.small[..self.len]
        } else {
            &self.big
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Segments;

    #[test]
    fn splits_paths() {
        assert!(Segments::new(b"/").as_slice().is_empty());
        assert_eq!(Segments::new(b"/a/b/").as_slice(), &[&b"a"[..], b"b", b""]);
        let long = "/x".repeat(40);
        assert_eq!(Segments::new(long.as_bytes()).as_slice().len(), 40);
    }
}
