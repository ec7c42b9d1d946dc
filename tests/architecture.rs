//! The import rules of docs/architecture.md, checked on the source: every `use` line
//! and every `crate::…` path of the library's non-test code is read, resolved to the
//! file it names, and held against the rules:
//!
//! - the engine and the judge import nothing from `source`, `daemon`, `platform`,
//!   `notify`, `server`, `store` or `config`, and no async or client crate;
//! - `platform/`, `notify/`, `source/` and `store/` import nothing from `daemon/`;
//! - `telemetry.rs` imports nothing from `notify`;
//! - no two files import each other, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file of the library under `src/` (the binaries' `main.rs`, `cli/` and
/// `bin/` left out: nothing imports them), by its path relative to `src/`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|f| (f.strip_prefix(&root).unwrap().to_string_lossy().into_owned(), f))
        .filter(|(rel, _)| {
            !rel.starts_with("bin/")
                && !rel.starts_with("cli/")
                && rel != "main.rs"
                && !rel.ends_with("tests.rs")
        })
        .map(|(rel, f)| (rel, non_test_code(&std::fs::read_to_string(f).unwrap())))
        .collect()
}

/// The code before the file's `#[cfg(test)]` module, without comments.
fn non_test_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The module path of a file: `engine/plan.rs` is `engine::plan`, `engine/mod.rs` is
/// `engine`, `lib.rs` is the crate root.
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Every path a file names: `use` trees expanded (`a::{b, c::{d}}`), and `crate::…`
/// paths written inline. `super::` is resolved against the file's module.
fn paths_in(file: &str, code: &str) -> Vec<Vec<String>> {
    // `a/b.rs` is module `a::b`: its `self` is `a::b`, its `super` is `a`, and its
    // `mod x;` is `a::b::x` (as for `a/b/mod.rs`).
    let here = module_of(file);
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok =
            at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        let tail = &rest[at + 4..];
        let Some(end) = tail.find(';') else { break };
        if before_ok {
            let tree: String = tail[..end].chars().filter(|c| !c.is_whitespace()).collect();
            expand(&tree, &mut Vec::new(), &mut out);
        }
        rest = &tail[end..];
    }
    // Inline paths: `crate::a::b(…)`, `crate::a::B { … }`.
    for (i, _) in code.match_indices("crate::") {
        let path: String =
            code[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        out.push(path.split("::").filter(|s| !s.is_empty()).map(String::from).collect());
    }
    // Own submodules (`mod x;`, `use x::…`) and super paths, made absolute.
    let submodules: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    out.into_iter()
        .filter_map(|p| {
            let first = p.first()?.as_str();
            match first {
                "crate" => Some(p[1..].to_vec()),
                "super" => {
                    let mut base = here.clone();
                    base.pop();
                    Some(base.into_iter().chain(p[1..].iter().cloned()).collect())
                }
                "self" => Some(here.iter().cloned().chain(p[1..].iter().cloned()).collect()),
                _ if submodules.contains(first) => Some(here.iter().cloned().chain(p).collect()),
                _ => Some(std::iter::once("::extern".to_string()).chain(p).collect()),
            }
        })
        .collect()
}

/// Appends every leaf of a `use` tree, prefixed by `prefix`.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .trim_end_matches("::")
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let n = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        prefix.truncate(n);
    } else if !tree.is_empty() {
        let leaf = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(
            leaf.split("::").filter(|s| !s.is_empty() && *s != "self" && *s != "*").map(String::from),
        );
        out.push(path);
    }
}

/// The file a module path lands in: the longest prefix that is a file, then, through a
/// `mod.rs`'s `pub use sub::Name`, the submodule that defines the name.
fn resolve(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    let file_of = |module: &[String]| -> Option<String> {
        if module.is_empty() {
            return files.contains_key("lib.rs").then(|| "lib.rs".to_string());
        }
        let joined = module.join("/");
        [format!("{joined}.rs"), format!("{joined}/mod.rs")].into_iter().find(|f| files.contains_key(f))
    };
    let (mut file, used) = (0..=path.len()).rev().find_map(|n| file_of(&path[..n]).map(|f| (f, n)))?;
    if let Some(name) = path.get(used) {
        // A name re-exported by a module file: the submodule that holds it.
        for statement in files[&file].split(';').filter_map(|s| s.trim_start().strip_prefix("pub use ")) {
            let mut leaves = Vec::new();
            let tree: String = statement.chars().filter(|c| !c.is_whitespace()).collect();
            expand(&tree, &mut Vec::new(), &mut leaves);
            if let Some(leaf) = leaves.iter().find(|l| l.last() == Some(name) && l.len() > 1) {
                let base = module_of(&file);
                let target: Vec<String> = if leaf[0] == "crate" {
                    leaf[1..leaf.len() - 1].to_vec()
                } else {
                    base.into_iter().chain(leaf[..leaf.len() - 1].iter().cloned()).collect()
                };
                if let Some(f) = file_of(&target) {
                    file = f;
                }
                break;
            }
        }
    }
    Some(file)
}

/// File → the files and external crates it imports.
fn imports() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, BTreeSet<String>>) {
    let files = sources();
    let (mut internal, mut external) = (BTreeMap::new(), BTreeMap::new());
    for (file, code) in &files {
        let (ours, theirs): (&mut BTreeSet<String>, &mut BTreeSet<String>) =
            (internal.entry(file.clone()).or_default(), external.entry(file.clone()).or_default());
        for path in paths_in(file, code) {
            if path.first().is_some_and(|p| p == "::extern") {
                if let Some(krate) = path.get(1) {
                    theirs.insert(krate.clone());
                }
            } else if let Some(target) = resolve(&path, &files)
                && target != *file
            {
                ours.insert(target);
            }
        }
    }
    (internal, external)
}

fn in_folder(file: &str, folders: &[&str]) -> bool {
    folders.iter().any(|f| file.starts_with(&format!("{f}/")) || file == format!("{f}.rs"))
}

#[test]
fn the_engine_and_the_judge_import_no_outer_module_and_no_io_crate() {
    let (internal, external) = imports();
    let outer =
        ["source", "daemon", "platform", "notify", "server", "store", "config", "telemetry", "backtest"];
    let io = ["tokio", "reqwest", "kube", "axum", "hyper", "hyper_util", "prometheus_http_query", "futures"];
    let mut broken = Vec::new();
    for (file, targets) in internal.iter().filter(|(f, _)| in_folder(f, &["engine", "judge"])) {
        broken.extend(targets.iter().filter(|t| in_folder(t, &outer)).map(|t| format!("{file} -> {t}")));
        broken.extend(
            external[file].iter().filter(|c| io.contains(&c.as_str())).map(|c| format!("{file} -> {c}")),
        );
    }
    assert!(broken.is_empty(), "the pure core imports outer modules or I/O crates: {broken:#?}");
    assert!(
        internal.contains_key("engine/step.rs") && internal.contains_key("judge/mod.rs"),
        "the files were read"
    );
}

#[test]
fn platforms_notifiers_sources_and_stores_do_not_import_the_daemon() {
    let (internal, _) = imports();
    let broken: Vec<String> = internal
        .iter()
        .filter(|(f, _)| in_folder(f, &["platform", "notify", "source", "store"]))
        .flat_map(|(f, targets)| {
            targets.iter().filter(|t| in_folder(t, &["daemon"])).map(move |t| format!("{f} -> {t}"))
        })
        .collect();
    assert!(broken.is_empty(), "the daemon drives these, not the other way round: {broken:#?}");
    let telemetry: Vec<&String> =
        internal["telemetry.rs"].iter().filter(|t| in_folder(t, &["notify"])).collect();
    assert!(telemetry.is_empty(), "telemetry.rs imports notify: {telemetry:?}");
}

/// Every cycle of `graph`, each as the path that closes it (depth-first search for
/// back edges).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit<'a>(
        file: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(file, 1);
        stack.push(file);
        for next in graph.get(file).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|f| f == next).unwrap_or(0);
                    cycles.push(format!("{} -> {next}", stack[from..].join(" -> ")));
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(file, 2);
    }
    let (mut state, mut found) = (BTreeMap::new(), Vec::new());
    for file in graph.keys() {
        if !state.contains_key(file.as_str()) {
            visit(file, graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_file_imports_itself_through_others() {
    let (internal, _) = imports();
    let found = cycles(&internal);
    assert!(found.is_empty(), "import cycles between files: {found:#?}");
}

#[test]
fn the_reader_finds_a_known_import_and_a_planted_cycle() {
    // The reader itself, on code whose imports are known.
    let files: BTreeMap<String, String> = [
        ("a/mod.rs", "pub mod b;\npub use b::Thing;\n"),
        ("a/b.rs", "use crate::c::{self, Other as O};\nfn f() { crate::a::Thing::new(); }\n"),
        ("c.rs", "use crate::a::Thing;\nuse tokio::sync::mpsc;\n"),
        ("a/d.rs", "use super::b::Thing;\nuse self::e::Inner;\nmod e;\n"),
        ("a/d/e.rs", "pub struct Inner;\n"),
    ]
    .into_iter()
    .map(|(f, c)| (f.to_string(), c.to_string()))
    .collect();
    let resolved = |file: &str| -> BTreeSet<String> {
        paths_in(file, &files[file]).iter().filter_map(|p| resolve(p, &files)).collect()
    };
    assert!(resolved("a/b.rs").contains("c.rs"));
    assert!(resolved("c.rs").contains("a/b.rs"), "a re-exported name resolves to the file defining it");
    assert!(paths_in("c.rs", &files["c.rs"]).iter().any(|p| p == &["::extern", "tokio", "sync", "mpsc"]));
    // In a file that is not `mod.rs`, `super` is the folder's module and `self` the file's.
    assert_eq!(resolved("a/d.rs"), BTreeSet::from(["a/b.rs".to_string(), "a/d/e.rs".to_string()]));
    // a/b.rs -> c.rs -> a/b.rs (through a's re-export) is found as a cycle.
    let graph: BTreeMap<String, BTreeSet<String>> =
        files.keys().map(|f| (f.clone(), resolved(f).into_iter().filter(|t| t != f).collect())).collect();
    let found = cycles(&graph);
    assert!(found.iter().any(|c| c.contains("a/b.rs -> c.rs -> a/b.rs")), "{found:?}");
}
