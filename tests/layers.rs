//! The layers of src/ (the table in src/lib.rs) hold: every file sits in one layer, imports
//! only from its own layer or those below, and no files import each other in a circle.
//!
//! An import is any `crate::…` or `super::…` path in a file's code (comments and the
//! `#[cfg(test)] mod tests` block at the end are left out: a test may reach up), and a
//! `mod.rs`'s use of its own submodules. A path is charged to the longest module path that
//! is a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`queue::lane`) → file.
fn source_files(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        // The crate roots, and test-only module files (`delivery/tests/…`).
        if parts == ["lib"] || parts == ["main"] || parts.iter().any(|p| p == "tests") {
            continue;
        }
        out.insert(parts.join("::"), f);
    }
    out
}

/// The layer table of src/lib.rs: rows `//! | N name | `a`, `b::c` | … |`, bottom first.
fn layer_table(lib: &str) -> Vec<(String, Vec<String>)> {
    let mut rows = Vec::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some((n, name)) = cells[0].split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else {
            continue;
        };
        assert_eq!(
            n,
            rows.len() + 1,
            "layers are numbered 1, 2, … in order: {line}"
        );
        let modules = cells[1]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        rows.push((name.to_owned(), modules));
    }
    rows
}

/// The code of a file without comments and without its trailing test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string ("http://…") ends nothing: keep lines whose `//` follows a
            // quote; paths after a URL on the same line are rare enough to accept.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file's code names: `crate::a::b::{c, d::e}` gives `a::b::c` and
/// `a::b::d::e`; `super::x` is resolved against `module`; in a `mod.rs`, `child::x` too.
fn imports(code: &str, module: &[&str], is_mod_rs: bool, children: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':') || !ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b':') {
            i += 1;
        }
        let word = &code[start..i];
        // `pub(super)`, `pub(crate)` and a bare `crate`/`super` name no module.
        if !word.contains("::") {
            continue;
        }
        let mut base: Vec<&str> = match word.split("::").next() {
            Some("crate") => vec![],
            Some("super") => {
                let ups = word.split("::").take_while(|s| *s == "super").count();
                module[..module.len().saturating_sub(ups)].to_vec()
            }
            Some(first)
                if is_mod_rs && word.contains("::") && children.iter().any(|c| c == first) =>
            {
                module.to_vec()
            }
            _ => continue,
        };
        let rest: Vec<&str> = word
            .split("::")
            .skip_while(|s| *s == "crate" || *s == "super")
            .filter(|s| !s.is_empty())
            .collect();
        base.extend(rest);
        // A group `{…}` after `…::`: each item extends the prefix.
        if word.ends_with("::") && bytes.get(i) == Some(&b'{') {
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            for item in code[i + 1..j].split([',', '{', '}']) {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                if item.is_empty() || item == "self" {
                    out.push(base.join("::"));
                    continue;
                }
                let mut p = base.clone();
                p.extend(item.split("::").filter(|s| !s.is_empty() && *s != "self"));
                out.push(p.join("::"));
            }
            i = j;
        } else {
            out.push(base.join("::"));
        }
    }
    out
}

/// The longest module path of `path` that is a file.
fn file_of<'a>(path: &str, files: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|k| files.get_key_value(&k).map(|(k, _)| k.as_str()))
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(edges: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
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
        for &w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[v].min(t.low[w]);
                t.low.insert(v, l);
            } else if t.on.contains(w) {
                let l = t.low[v].min(t.index[w]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn src_is_layered_without_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = source_files(&root.join("src"));
    let table = layer_table(&std::fs::read_to_string(root.join("src/lib.rs")).unwrap());
    assert!(table.len() >= 5, "src/lib.rs lists its layers: {table:?}");

    // Each file's layer: the row of the longest listed module path that contains it.
    let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, (_, modules)) in table.iter().enumerate() {
        for m in modules {
            assert!(
                files
                    .keys()
                    .any(|f| f == m || f.starts_with(&format!("{m}::"))),
                "src/lib.rs lists `{m}`, which is no module of src/"
            );
            assert!(listed.insert(m, n).is_none(), "`{m}` is listed twice");
        }
    }
    let layer_of = |file: &str| -> usize {
        let parts: Vec<&str> = file.split("::").collect();
        (1..=parts.len())
            .rev()
            .find_map(|n| listed.get(parts[..n].join("::").as_str()).copied())
            .unwrap_or_else(|| panic!("`{file}` is in no layer of src/lib.rs's table"))
    };

    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut why: BTreeMap<(&str, &str), String> = BTreeMap::new();
    let mut climbs = Vec::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let parts: Vec<&str> = module.split("::").collect();
        let is_mod_rs = path.ends_with("mod.rs");
        let children: Vec<String> = files
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{module}::")))
            .filter(|k| !k.contains("::"))
            .map(str::to_owned)
            .collect();
        let from = layer_of(module);
        for p in imports(&code_of(&text), &parts, is_mod_rs, &children) {
            let Some(to) = file_of(&p, &files) else {
                continue;
            };
            if to == module {
                continue;
            }
            edges.entry(module).or_default().insert(to);
            why.entry((module, to)).or_insert_with(|| p.clone());
            let target = layer_of(to);
            if target > from {
                climbs.push(format!(
                    "{} (layer {} {}) imports {p} (layer {} {})",
                    path.strip_prefix(root).unwrap().display(),
                    from + 1,
                    table[from].0,
                    target + 1,
                    table[target].0
                ));
            }
        }
    }
    climbs.sort();
    climbs.dedup();
    assert!(
        climbs.is_empty(),
        "imports that climb a layer:\n{}",
        climbs.join("\n")
    );
    let circles: Vec<String> = cycles(&edges)
        .iter()
        .map(|c| {
            let inside = why
                .iter()
                .filter(|((a, b), _)| c.iter().any(|x| x == a) && c.iter().any(|x| x == b))
                .map(|((a, _), p)| format!("  {a} uses {p}"));
            format!("{c:?}:\n{}", inside.collect::<Vec<_>>().join("\n"))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "files importing each other in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    let code = "use crate::a::{b::C, d};\nuse super::e::F; let x = crate::g::h();";
    let got = imports(code, &["p", "q"], false, &[]);
    assert_eq!(got, ["a::b::C", "a::d", "p::e::F", "g::h"]);
    let code = code_of("pub mod lane;\npub use lane::enqueue; // crate::z");
    let got = imports(&code, &["queue"], true, &["lane".into()]);
    assert_eq!(got, ["queue::lane::enqueue"]);
    assert_eq!(
        code_of("a // crate::x\n#[cfg(test)]\nmod tests { crate::y }"),
        "a "
    );
    let mut edges = BTreeMap::new();
    edges.insert("a", BTreeSet::from(["b"]));
    edges.insert("b", BTreeSet::from(["a"]));
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".into()]]);
}
