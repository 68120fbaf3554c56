//! The layout of `src/`: no import cycle between files.
//!
//! Reads every `src/**/*.rs`, takes its `use` declarations (before its `#[cfg(test)]` module),
//! resolves each imported path (`crate::`, `super::`, `self::`, a child module) to the file
//! that defines the name, following re-exports, and fails on any cycle in that graph, printing
//! it. A `pub use` that the file itself never names again is a re-export (the module's table of
//! contents), not a dependency; everything else is. Paths written inline (`crate::x::f()`) and
//! method calls into an `impl` in another file are not imports and are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path and what it imports.
struct File {
    path: String,
    /// Imports as absolute paths (`["layer", "replay", "Replay"]`), with whether each counts
    /// as a dependency.
    imports: Vec<(Vec<String>, bool)>,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `["a", "b"]`; `src/a/mod.rs` → `["a"]`; `src/lib.rs` → `[]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        file => parts.push(file.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// Source text without comments, and without the test module at the end.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `use …;` in `code` at any depth, as `(is_pub, tree)`, plus the code left without them.
fn uses(code: &str) -> (Vec<(bool, String)>, String) {
    let mut found = Vec::new();
    let mut rest = String::new();
    let mut i = 0;
    while i < code.len() {
        let line_start = code[..i].rfind('\n').map_or(0, |n| n + 1);
        let before = code[line_start..i].trim();
        let at_statement = matches!(before, "" | "pub" | "pub(crate)" | "pub(super)");
        if at_statement && code[i..].starts_with("use ") {
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            let before = rest.trim_end();
            let is_pub = before.ends_with("pub") || before.ends_with(')');
            let tree: Vec<&str> = code[i + 4..end].split_whitespace().collect();
            found.push((is_pub, tree.join(" ")));
            i = end + 1;
            continue;
        }
        let c = code[i..].chars().next().unwrap();
        rest.push(c);
        i += c.len_utf8();
    }
    (found, rest)
}

/// `a::{b, c::{d, e}}` → `[a::b, a::c::d, a::c::e]`; `x as y` keeps `x`.
fn expand(tree: &str) -> Vec<(Vec<String>, String)> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(&s[start..]);
        out.into_iter().filter(|p| !p.trim().is_empty()).collect()
    }
    let tree = tree.trim().trim_start_matches("::");
    match tree.find('{') {
        Some(open) => {
            let prefix: Vec<String> = tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap()];
            split_top(inner)
                .into_iter()
                .flat_map(expand)
                .map(|(path, name)| {
                    let mut full = prefix.clone();
                    full.extend(path);
                    (full, name)
                })
                .collect()
        }
        None => {
            let (path, alias) = match tree.split_once(" as ") {
                Some((path, alias)) => (path, Some(alias.trim())),
                None => (tree, None),
            };
            let path: Vec<String> = path.split("::").map(|s| s.trim().to_owned()).collect();
            let name = alias.unwrap_or(path.last().unwrap()).to_owned();
            vec![(path, name)]
        }
    }
}

fn is_word_in(word: &str, text: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let ok = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        ok(text[..at].chars().next_back()) && ok(text[at + word.len()..].chars().next())
    })
}

#[test]
fn no_import_cycle_between_files_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let mut modules: BTreeMap<Vec<String>, File> = BTreeMap::new();
    for path in &paths {
        let relative = path.strip_prefix(&root).unwrap();
        // The simulator is leaving `src/` for its own crate (`withings-sim`).
        if relative.starts_with("sim") {
            continue;
        }
        let module = module_of(relative);
        let text = code(&std::fs::read_to_string(path).unwrap());
        let (found, rest) = uses(&text);
        let children: BTreeSet<String> = rest
            .split([';', '\n'])
            .filter_map(|s| {
                let s = s.trim();
                let s = s
                    .strip_prefix("pub(crate) ")
                    .or(s.strip_prefix("pub "))
                    .unwrap_or(s);
                s.strip_prefix("mod ").map(|m| m.trim().to_owned())
            })
            .filter(|m| !m.contains('{') && !m.contains(' '))
            .collect();
        let mut imports = Vec::new();
        for (is_pub, tree) in found {
            for (path, name) in expand(&tree) {
                let mut absolute = match path[0].as_str() {
                    "crate" => vec![],
                    "self" => module.clone(),
                    "super" => module[..module.len().saturating_sub(1)].to_vec(),
                    first if children.contains(first) => {
                        let mut m = module.clone();
                        m.push(first.to_owned());
                        m.extend(path[1..].iter().cloned());
                        imports.push((m, !is_pub || name == "*" || is_word_in(&name, &rest)));
                        continue;
                    }
                    _ => continue, // another crate
                };
                let mut tail = &path[1..];
                while tail.first().is_some_and(|s| s == "super") {
                    absolute.pop();
                    tail = &tail[1..];
                }
                absolute.extend(tail.iter().cloned());
                imports.push((absolute, !is_pub || name == "*" || is_word_in(&name, &rest)));
            }
        }
        modules.insert(
            module,
            File {
                path: format!("src/{}", relative.display()),
                imports,
            },
        );
    }

    // The file defining `path`: the longest module prefix with a file, then through its
    // imports when the next name is one it re-exports.
    fn resolve(modules: &BTreeMap<Vec<String>, File>, path: &[String], depth: u32) -> Vec<String> {
        let mut len = path.len();
        while !modules.contains_key(&path[..len]) {
            len -= 1;
        }
        let module = path[..len].to_vec();
        if depth > 16 || len == path.len() {
            return module;
        }
        let name = &path[len];
        let file = &modules[&module];
        for (import, _) in &file.imports {
            if import.last() == Some(name) && import.as_slice() != path {
                let mut target = import.clone();
                target.extend(path[len + 1..].iter().cloned());
                return resolve(modules, &target, depth + 1);
            }
        }
        module
    }

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in modules.values() {
        let edges = graph.entry(file.path.clone()).or_default();
        for (import, counts) in &file.imports {
            if !counts || import.last().is_some_and(|n| n == "*") && import.len() == 1 {
                continue;
            }
            let target = &modules[&resolve(&modules, import, 0)].path;
            if *target != file.path {
                edges.insert(target.clone());
            }
        }
    }

    // Depth-first search for a back edge; the first cycle found is printed.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, graph, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    cycles.push(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
    }
    let (mut state, mut cycles) = (BTreeMap::new(), Vec::new());
    for node in graph.keys() {
        if !state.contains_key(node) {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        graph.len() > 20,
        "the walk found only {} files: is the parser broken?",
        graph.len()
    );
    let printed: Vec<String> = cycles.iter().map(|c| c.join(" → ")).collect();
    assert!(
        cycles.is_empty(),
        "import cycles between files in src/:\n{}",
        printed.join("\n")
    );
}
