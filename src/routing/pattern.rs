//! Route patterns (SPEC §3): literal segments, `*` for exactly one non-empty segment, and a
//! trailing `/*` for one or more. A segment trie finds every pattern that matches a path.
use super::fxhash::FxHashMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Lit(Box<[u8]>),
    Star,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    pub segs: Vec<Seg>,
    /// Ends in `/*`: matches one or more further segments.
    pub trailing: bool,
}

/// Requests are matched by their canonical path (`http::canonical`), so a pattern or prefix
/// that is not canonical itself (`.`, `..`, `%61`, `%2f`, lowercase hex, `\`) would never
/// match anything: a config error (400 for a registration), not a silent dead route.
pub fn check_canonical(s: &str) -> Result<(), String> {
    match crate::http::canonical::canonical(s.as_bytes()) {
        Err(e) => Err(format!("{s:?} can never match a request: {}", e.message())),
        Ok(c) if c != s.as_bytes() => Err(format!(
            "{s:?} can never match a request: paths are matched in canonical form, write {:?}",
            String::from_utf8_lossy(&c)
        )),
        Ok(_) => Ok(()),
    }
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| format!("{s:?} must start with /"))?;
        if s.contains(['?', '#', ' ']) {
            return Err(format!("{s:?} may not contain ?, # or spaces"));
        }
        if s.contains("//") {
            return Err(format!(
                "{s:?} has an empty segment: runs of / are merged before matching, so it can never match"
            ));
        }
        check_canonical(s)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segs = Vec::new();
        let mut trailing = false;
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() {
                    return Err(format!("{s:?} has an empty segment"));
                }
                if *p == "*" {
                    if i + 1 == parts.len() {
                        trailing = true;
                    } else {
                        segs.push(Seg::Star);
                    }
                } else if p.contains('*') {
                    return Err(format!("{s:?}: `*` must be a whole segment"));
                } else {
                    segs.push(Seg::Lit(p.as_bytes().into()));
                }
            }
        }
        Ok(Pattern { segs, trailing })
    }

    pub fn literal_count(&self) -> usize {
        self.segs
            .iter()
            .filter(|s| matches!(s, Seg::Lit(_)))
            .count()
    }

    /// The literal segments before the first `*`: what `strip_prefix` may remove.
    pub fn literal_prefix(&self) -> Vec<&str> {
        self.segs
            .iter()
            .map_while(|s| match s {
                Seg::Lit(l) => std::str::from_utf8(l).ok(),
                Seg::Star => None,
            })
            .collect()
    }

    /// Direct match, used by `switchyard route` and tests; the table uses the trie.
    pub fn matches(&self, segments: &[&[u8]]) -> bool {
        if segments.len() < self.segs.len() {
            return false;
        }
        let fixed = self.segs.iter().zip(segments).all(|(p, s)| match p {
            Seg::Lit(l) => **l == **s,
            Seg::Star => !s.is_empty(),
        });
        let rest = &segments[self.segs.len()..];
        fixed
            && if self.trailing {
                rest.first().is_some_and(|s| !s.is_empty())
            } else {
                rest.is_empty()
            }
    }
}

/// Stored registrations keep a pattern as the string it displays as, and read it back through
/// `parse`, so that a tampered or stale file cannot smuggle in a pattern `parse` would refuse.
impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.segs {
            match s {
                Seg::Lit(l) => write!(f, "/{}", String::from_utf8_lossy(l))?,
                Seg::Star => f.write_str("/*")?,
            }
        }
        if self.trailing {
            f.write_str("/*")
        } else if self.segs.is_empty() {
            f.write_str("/")
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    lit: FxHashMap<Box<[u8]>, Node>,
    star: Option<Box<Node>>,
    exact: Vec<u32>,
    trailing: Vec<u32>,
}

/// Maps patterns to rule ids; a lookup visits every id whose pattern matches, in time that
/// depends on the path's length, not on how many patterns there are.
#[derive(Debug, Default)]
pub struct PatternTrie {
    root: Node,
}

impl PatternTrie {
    pub fn insert(&mut self, p: &Pattern, id: u32) {
        let mut node = &mut self.root;
        for s in &p.segs {
            node = match s {
                Seg::Lit(l) => node.lit.entry(l.clone()).or_default(),
                Seg::Star => node.star.get_or_insert_with(Default::default),
            };
        }
        if p.trailing {
            node.trailing.push(id);
        } else {
            node.exact.push(id);
        }
    }

    pub fn lookup(&self, segments: &[&[u8]], visit: &mut impl FnMut(u32)) {
        walk(&self.root, segments, visit);
    }
}

fn walk(node: &Node, segs: &[&[u8]], visit: &mut impl FnMut(u32)) {
    let Some((first, rest)) = segs.split_first() else {
        node.exact.iter().for_each(|id| visit(*id));
        return;
    };
    if first.is_empty() {
        // An empty segment (`//` or a trailing `/`) is matched only by a literal pattern
        // segment, which cannot be empty: nothing matches below here.
        return;
    }
    node.trailing.iter().for_each(|id| visit(*id));
    if let Some(child) = node.lit.get(*first) {
        walk(child, rest, visit);
    }
    if let Some(star) = &node.star {
        walk(star, rest, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Segments;

    fn m(p: &str, path: &str) -> bool {
        let pat = Pattern::parse(p).unwrap();
        let segs = Segments::new(path.as_bytes());
        let direct = pat.matches(segs.as_slice());
        let mut t = PatternTrie::default();
        t.insert(&pat, 7);
        let mut hit = false;
        t.lookup(segs.as_slice(), &mut |_| hit = true);
        assert_eq!(direct, hit, "trie and direct match disagree for {p} {path}");
        direct
    }

    #[test]
    fn spec_examples() {
        assert!(m("/api/comments/*/reply", "/api/comments/abc123/reply"));
        assert!(!m("/api/comments/*/reply", "/api/comments//reply"));
        assert!(!m("/api/comments/*/reply", "/api/comments/a/b/reply"));
        assert!(m("/api/comments/*", "/api/comments/test-post"));
        assert!(m("/api/comments/*", "/api/comments/a/b"));
        assert!(!m("/api/comments/*", "/api/comments"));
        assert!(!m("/api/comments/*", "/api/comments/"));
        assert!(m("/api/health", "/api/health"));
        assert!(!m("/api/health", "/api/health/x"));
        assert!(m("/", "/"));
        assert!(m("/*", "/anything/at/all"));
        assert!(!m("/*", "/"));
    }

    #[test]
    fn parse_rules() {
        assert!(Pattern::parse("api").is_err());
        assert!(Pattern::parse("/a//b").is_err());
        assert!(Pattern::parse("/a/b*").is_err());
        assert!(Pattern::parse("/a?x").is_err());
        for never in [
            "/a/./b",
            "/a/..",
            "/.",
            "/..",
            "//a",
            "/a//",
            "/%61dmin",
            "/a%2fb",
            "/a%2Fb",
            "/a%c3%a9",
            "/a\\b",
            "/a%",
            "/%G1",
            "/a/%2e%2E/b",
        ] {
            let e = Pattern::parse(never).unwrap_err();
            assert!(e.contains("never match"), "{never}: {e}");
        }
        assert!(Pattern::parse("/a%C3%A9/*").is_ok());
        assert!(Pattern::parse("/.well-known/*").is_ok());
        assert_eq!(
            Pattern::parse("/a/").unwrap(),
            Pattern::parse("/a").unwrap()
        );
        assert_eq!(Pattern::parse("/a/*/b/*").unwrap().to_string(), "/a/*/b/*");
        assert_eq!(Pattern::parse("/a/*/b/*").unwrap().literal_count(), 2);
    }
}
