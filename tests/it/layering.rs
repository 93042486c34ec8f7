//! The one-way layering of `src/` (docs/architecture.md): each module imports only modules
//! listed before it there, and no files of `src/` import each other in a cycle.
//!
//! It reads the sources themselves: every `use` statement (braces expanded) and every inline
//! `crate::…` / `super::…` path outside the `#[cfg(test)]` modules, resolved to the file that
//! defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// The layer list of docs/architecture.md, bottom first.
fn layers() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let list: Vec<String> = doc
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(". `")?;
            n.trim().parse::<u32>().ok()?;
            Some(rest.split('`').next()?.to_owned())
        })
        .collect();
    assert!(
        list.len() >= 8,
        "no layer list found in docs/architecture.md: {list:?}"
    );
    list
}

/// Every `.rs` file under `src/`, as its module path (`proxy::admit`, `tls`, `lib`).
fn sources() -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root().join("src")).unwrap();
                let mut m: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if m.last().is_some_and(|l| l == "mod") {
                    m.pop();
                }
                out.insert(m, p);
            }
        }
    }
    out
}

/// The code of a file without its test modules, comments and string literals.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    strip_strings_and_comments(text)
}

/// Blanks out string and char literals and comments, so that `"use …"` inside a message or
/// a path in a doc comment is not read as an import.
fn strip_strings_and_comments(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let rest = |k: usize| c.get(i + k).copied();
        if c[i] == '/' && rest(1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == 'r' && (rest(1) == Some('"') || rest(1) == Some('#')) && {
            let mut k = 1;
            while rest(k) == Some('#') {
                k += 1;
            }
            rest(k) == Some('"')
        } {
            let mut hashes = 0;
            i += 1;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
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
        } else if c[i] == '\'' && rest(2) == Some('\'') {
            i += 3;
        } else if c[i] == '\'' && rest(1) == Some('\\') && rest(3) == Some('\'') {
            i += 4;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `a::{b, c::{d, E}}` → `a::b`, `a::c::d`, `a::c::E`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.to_owned()
            } else {
                format!("{prefix}::{p}")
            }
        })
        .collect()
}

/// Every path a file names that starts with `crate::` or `super::`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            out.extend(expand(&after[..end].replace(['\n', ' '], "")));
        }
        rest = &after[end..];
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            out.push(code[at..at + len].trim_end_matches(':').to_owned());
        }
    }
    out
}

/// The file a path resolves to: the longest prefix that is a module of the crate.
fn resolve(
    from: &[String],
    path: &str,
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match *segs.first()? {
        "crate" => Vec::new(),
        // `super` is the parent of the module itself, whether it is `foo.rs` or
        // `foo/mod.rs` (the file's module path already drops `mod`).
        "super" => from[..from.len().saturating_sub(1)].to_vec(),
        "self" => from.to_vec(),
        // A relative path that starts with a child module (a `pub use child::Item`
        // re-export in a `mod.rs`) is an import of that child.
        child if files.contains_key(&[from, &[child.to_owned()]].concat()) => {
            return Some([from, &[child.to_owned()]].concat());
        }
        _ => return None,
    };
    segs.remove(0);
    while segs.first() == Some(&"super") {
        base.pop();
        segs.remove(0);
    }
    let mut best = None;
    let mut cur = base.clone();
    if files.contains_key(&cur) || cur.is_empty() {
        best = Some(cur.clone());
    }
    for s in segs {
        cur.push(s.to_owned());
        if files.contains_key(&cur) {
            best = Some(cur.clone());
        } else {
            break;
        }
    }
    best.filter(|b| !b.is_empty())
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources();
    let mut g = BTreeMap::new();
    for (m, path) in &files {
        let mut deps = BTreeSet::new();
        for p in paths(&code(path)) {
            if let Some(target) = resolve(m, &p, &files) {
                if &target != m {
                    deps.insert(target);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

#[test]
fn no_module_imports_a_module_listed_after_it_in_the_architecture() {
    let layers = layers();
    let rank = |m: &str| layers.iter().position(|l| l == m);
    let mut wrong = Vec::new();
    for (file, deps) in graph() {
        let Some(top) = file.first() else { continue };
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = rank(top) else {
            wrong.push(format!("src module `{top}` is not in docs/architecture.md"));
            continue;
        };
        for d in deps {
            let Some(other) = rank(&d[0]) else { continue };
            if other > own {
                wrong.push(format!("{} imports {}", file.join("::"), d.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_files_of_src_import_each_other_in_a_cycle() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == d).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if !state.contains_key(n) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(n, &g, &mut state, &mut stack) {
                let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
                panic!("import cycle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn the_checker_sees_imports_written_every_way() {
    // Pins the parser itself, so the two tests above cannot pass by reading nothing.
    let code = strip_strings_and_comments(
        "use crate::a::{b, c::{D, e}};\nuse super::f;\nfn x() { crate::g::h(); }\n\
         // crate::in_a_comment\nconst S: &str = \"use crate::in_a_string;\";",
    );
    let found: BTreeSet<String> = paths(&code).into_iter().collect();
    let want: BTreeSet<String> = [
        "crate::a",
        "crate::a::b",
        "crate::a::c::D",
        "crate::a::c::e",
        "crate::g::h",
        "super::f",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(found, want);
    let g = graph();
    let proxy_server = vec!["proxy".to_owned(), "server".to_owned()];
    assert!(
        g.get(&proxy_server)
            .is_some_and(|d| d.contains(&vec!["metrics".to_owned()])),
        "proxy::server imports metrics: {:?}",
        g.get(&proxy_server)
    );
}
