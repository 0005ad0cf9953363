//! The rules of the code's shape that ARCHITECTURE.md states, checked on the source itself:
//! short functions, app/ files that form a tree, and transitions spelled only in `domain/`.
//!
//! The source is rustfmt's, so a function ends at the first `}` alone on a line at the
//! indentation its `fn` line starts at; test code (files named `*tests.rs` or `test_*.rs`, and
//! `#[cfg(test)]` items) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 70;

fn root() -> PathBuf {
    xtask::venv::workspace_root()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with("tests.rs") || name.starts_with("test_") || name == "tests.rs"
}

/// The lines of `text` outside `#[cfg(test)]` items, with their line numbers.
fn production_lines(text: &str) -> Vec<(usize, &str)> {
    let mut kept = Vec::new();
    let mut skip_until: Option<String> = None;
    let mut cfg_test = false;
    for (n, line) in text.lines().enumerate() {
        if let Some(end) = &skip_until {
            if line == end {
                skip_until = None;
            }
            continue;
        }
        if line.trim() == "#[cfg(test)]" {
            cfg_test = true;
            continue;
        }
        if cfg_test {
            cfg_test = false;
            let indent = &line[..line.len() - line.trim_start().len()];
            // `mod tests;` ends on its own line; a block ends at its closing brace.
            if line.trim_end().ends_with('{') {
                skip_until = Some(format!("{indent}}}"));
            }
            continue;
        }
        kept.push((n + 1, line));
    }
    kept
}

fn fn_name(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let after = ["pub(crate) ", "pub(super) ", "pub "]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p))
        .unwrap_or(trimmed);
    let after = after.strip_prefix("const ").unwrap_or(after);
    let after = after.strip_prefix("async ").unwrap_or(after);
    let rest = after.strip_prefix("fn ")?;
    rest.split(['(', '<']).next()
}

/// Every function of `text` longer than the limit: `(name, first line, lines)`.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines = production_lines(text);
    let mut long = Vec::new();
    for (i, (start, line)) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        // The signature ends at the first line ending in `{` (a body) or `;` (a declaration).
        let declaration = lines[i..]
            .iter()
            .map(|(_, l)| l.trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with('}'))
            .is_some_and(|l| l.ends_with(';'));
        if declaration {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let close = format!("{indent}}}");
        let end = if line.trim_end().ends_with('}') {
            *start // a one-liner
        } else {
            lines[i..]
                .iter()
                .find(|(_, l)| *l == close)
                .map_or(*start, |(n, _)| *n)
        };
        let count = end - start + 1;
        if count > MAX_FN_LINES {
            long.push((name.to_owned(), *start, count));
        }
    }
    long
}

#[test]
fn no_function_over_70_lines() {
    let root = root();
    let mut files = Vec::new();
    for dir in [
        "shared/src",
        "functions",
        "payctl/src",
        "xtask/src/stack.rs",
    ] {
        let path = root.join(dir);
        if path.is_file() {
            files.push(path);
        } else {
            rust_files(&path, &mut files);
        }
    }
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (name, line, count) in long_functions(&text) {
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            found.push(format!("{shown}:{line} {name} has {count} lines"));
        }
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        found.join("\n")
    );
}

/// The app/ modules each app/ file imports (`crate::app::x`, `super::x`).
fn app_imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (_, line) in production_lines(text) {
        for prefix in ["crate::app::", "super::"] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&module) {
                    found.insert(module);
                }
                // `use crate::app::{a, b}`.
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for part in group.split(',') {
                        let module = part.trim().split("::").next().unwrap_or("").trim();
                        if modules.contains(module) {
                            found.insert(module.to_owned());
                        }
                    }
                }
            }
        }
    }
    found
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn app_files_import_no_cycle() {
    let dir = root().join("shared/src/app");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let module_of = |path: &Path| {
        path.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| m != "mod")
        .collect();
    assert!(modules.len() >= 10, "app modules: {modules:?}");
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source");
        let mut imports = app_imports(&text, &modules);
        imports.remove(&module);
        graph.insert(module, imports);
    }
    assert_eq!(find_cycle(&graph), None, "app/ imports: {graph:#?}");
    // The shared steps sit at the bottom: they import no entry point.
    for bottom in ["apply", "ask", "settle"] {
        let imports = &graph[bottom];
        let allowed: BTreeSet<String> = ["settle".to_owned()].into();
        assert!(imports.is_subset(&allowed), "{bottom} imports {imports:?}");
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
    let modules: BTreeSet<String> =
        ["poll".to_owned(), "refunds".to_owned(), "ask".to_owned()].into();
    let imports = app_imports(
        "use crate::app::poll::{A, B};\nuse crate::app::{ask, refunds::x};\n#[cfg(test)]\nmod tests;\n",
        &modules,
    );
    assert_eq!(imports, modules);
}

#[test]
fn the_length_check_measures_functions() {
    let body = "    x();\n".repeat(MAX_FN_LINES);
    let text = format!(
        "pub async fn long(a: u8) {{\n{body}}}\n\nfn short() {{}}\n\n#[cfg(test)]\nmod tests {{\n    fn also_long() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(
        long_functions(&text),
        vec![("long".to_owned(), 1, MAX_FN_LINES + 2)]
    );
}

#[test]
fn only_domain_spells_transitions() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["shared/src", "functions", "payctl/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let domain = root.join("shared/src/domain");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&domain)) {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in production_lines(&text) {
            if line.contains("Transition {") && !line.contains("TransitionOutcome") {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "transitions spelled outside domain/:\n{}",
        found.join("\n")
    );
}

/// The use cases return domain outcomes and refusals; only `edge` (and the functions) speak
/// HTTP. The create's idempotency record is the one response app/ forms, through `api`'s
/// shapes, because a repeat is answered with exactly what the first request got.
#[test]
fn app_speaks_no_http() {
    let mut files = Vec::new();
    rust_files(&root().join("shared/src/app"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let create = file.ends_with("create.rs");
        for (n, line) in production_lines(&text) {
            let edge = line.contains("crate::edge");
            let api = line.contains("crate::api") && !create;
            if edge || api || line.contains("ApiError") && !create {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "app/ speaking HTTP:\n{}",
        found.join("\n")
    );
}
