//! No import cycles among the control-side files (issue 13): the file-level dependency graph
//! of `src/` is read from the source itself (`use` trees and inline `a::b` paths, each
//! resolved to the file that defines the module it names), and no cycle
//! may run through `src/config/`, `src/control*`, `src/health/` or `src/upstream/` files.
//!
//! What counts: every path in non-test code (`#[cfg(test)] mod … { … }` blocks are left out,
//! comments and string literals too). `mod x;` declarations are structure, not dependencies;
//! `pub use` re-exports are dependencies. A path is resolved to the longest module prefix that
//! has a file, so `crate::config::Config` is an edge to `src/config/mod.rs` and
//! `crate::config::tcp::Tcp` one to `src/config/tcp.rs`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The files whose cycles are refused.
const WATCHED: &[&str] = &["config/", "control", "health/", "upstream/"];

#[test]
fn no_cycles_through_config_control_health_upstream() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let graph = graph(&files);
    let watched = |f: &str| WATCHED.iter().any(|w| f.starts_with(w));
    // Sanity: the graph is not empty where it matters (a parser that finds nothing passes).
    assert!(
        graph
            .get("control.rs")
            .is_some_and(|e| e.contains("routing/build.rs")),
        "control.rs -> routing/build.rs not seen: the parser is broken"
    );
    // Among these files: the graph they induce (a path through another file, say state.rs,
    // is that file's business).
    let among: BTreeMap<String, BTreeSet<String>> = graph
        .iter()
        .filter(|(f, _)| watched(f))
        .map(|(f, es)| {
            (
                f.clone(),
                es.iter().filter(|e| watched(e)).cloned().collect(),
            )
        })
        .collect();
    let bad = cycles(&among);
    assert!(
        bad.is_empty(),
        "import cycles through config/, control, health/ or upstream/ files (each line: files that all reach each other):\n{}",
        bad.iter()
            .map(|c| {
                let edges: Vec<String> = c
                    .iter()
                    .flat_map(|f| {
                        among[f]
                            .iter()
                            .filter(|e| c.contains(e))
                            .map(move |e| format!("    {f} -> {e}"))
                    })
                    .collect();
                format!("  {}\n{}", c.join(", "), edges.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker finds a cycle when there is one, through `super::` and through a `use` tree.
#[test]
fn the_checker_sees_a_planted_cycle() {
    let files = vec![
        ("lib.rs".to_string(), "pub mod a;".to_string()),
        (
            "a/mod.rs".to_string(),
            "mod b; mod c;\npub struct S; fn f() { c::g(); }".to_string(),
        ),
        (
            "a/b.rs".to_string(),
            "use super::{S, c::{self as cc}};\n// use crate::x; (a comment)\nconst X: &str = \"crate::a::c\";".to_string(),
        ),
        ("a/c.rs".to_string(), "pub fn g() {}\n#[cfg(test)]\nmod tests { use super::super::b; }".to_string()),
    ];
    let g = graph(&files);
    assert_eq!(
        g["a/b.rs"],
        BTreeSet::from(["a/c.rs".to_string(), "a/mod.rs".to_string()])
    );
    assert!(
        g["a/c.rs"].is_empty(),
        "test modules and strings are not edges: {g:?}"
    );
    assert_eq!(g["a/mod.rs"], BTreeSet::from(["a/c.rs".to_string()]));
    assert!(cycles(&g).is_empty());

    let mut files = files;
    files[3].1 = "use crate::a::b as _; pub fn g() {}".into();
    let found = cycles(&graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(&"a/b.rs".to_string()) && found[0].contains(&"a/c.rs".to_string()));
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// The module path of a file: `config/mod.rs` -> [config], `config/tcp.rs` -> [config, tcp].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// File -> the files it depends on.
fn graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> = files
        .iter()
        .filter(|(f, _)| f != "main.rs")
        .map(|(f, _)| (module_of(f), f.clone()))
        .collect();
    let mut g = BTreeMap::new();
    for (file, src) in files {
        let here = module_of(file);
        let code = without_tests(&strip(src));
        let mut edges = BTreeSet::new();
        for path in paths(&code) {
            let Some(abs) = absolute(&here, &path, &by_module) else {
                continue;
            };
            // The longest prefix with a file of its own; the crate root itself is no edge.
            if let Some(target) = (1..=abs.len()).rev().find_map(|n| by_module.get(&abs[..n])) {
                if target != file {
                    edges.insert(target.clone());
                }
            }
        }
        g.insert(file.clone(), edges);
    }
    g
}

/// A path as written, made absolute from the module it appears in; None for other crates.
fn absolute(
    here: &[String],
    path: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A bare first segment is a child module of this one, or another crate.
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
        }
        None => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every path in `code`: the leaves of each `use` tree, and inline paths elsewhere (`absolute`
/// drops those that name another crate or a type).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word = &code[start..i];
        if word == "use" {
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            expand(&code[i..end], &mut Vec::new(), &mut out);
            i = end;
        } else if code[i..].starts_with("::") {
            let mut segs = vec![word.to_string()];
            while code[i..].starts_with("::") {
                let s = i + 2;
                let mut e = s;
                while e < bytes.len() && is_ident(bytes[e]) {
                    e += 1;
                }
                if e == s {
                    break;
                }
                segs.push(code[s..e].to_string());
                i = e;
            }
            out.push(segs);
        }
    }
    out
}

/// Expands one use tree (`a::{b, c::{self, d}}`) into its leaf paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let n = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut from = 0;
        for (j, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[from..j], prefix, out);
                    from = j + 1;
                }
                _ => {}
            }
        }
        expand(&inner[from..], prefix, out);
        prefix.truncate(n);
        return;
    }
    let leaf = tree.split(" as ").next().unwrap_or("").trim();
    if leaf.is_empty() {
        return;
    }
    let mut p = prefix.clone();
    for seg in leaf.split("::").map(str::trim) {
        if seg == "self" && !p.is_empty() || seg == "*" {
            continue;
        }
        p.push(seg.to_string());
    }
    if !p.is_empty() {
        out.push(p);
    }
}

/// `src` with comments and the contents of string and char literals blanked out.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // r"…", r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `code` without its `#[cfg(test)] mod name { … }` blocks.
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let t = after.trim_start();
        if !t.starts_with("mod ") {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let Some(open) = after.find(['{', ';']) else {
            rest = "";
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (j, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The strongly connected components with more than one file (Tarjan), each sorted.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(es) = t.g.get(v) {
            for w in es {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[v].min(t.low[w]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.low[v].min(t.index[w]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}
