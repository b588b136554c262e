//! The house keeps its drawing: imports between the files of `src/` form
//! no circle (counted between files, not only between top-level modules),
//! and every module imports only what docs/ARCHITECTURE.md's "Layers"
//! tables say it may. Reads the sources, so a wrong import fails here with
//! its file and path, not in a review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. `["server", "engine", "input"]` (`[]`: the crate).
type ModPath = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module a source file defines (`src/server/engine/mod.rs` ->
/// `server::engine`); `lib.rs` and `main.rs` are the crate root.
fn module_of(file: &Path) -> ModPath {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: ModPath = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The file that defines `module`, if it is a file of its own.
fn file_of(module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(src().join("lib.rs"));
    }
    let base = module.iter().fold(src(), |p, m| p.join(m));
    let single = base.with_extension("rs");
    let dir = base.join("mod.rs");
    [single, dir].into_iter().find(|p| p.is_file())
}

/// The file a path names, resolved from `at` (the module whose code holds
/// the path): `crate::`, `super::`, `self::`, or a child module of `at`.
/// The deepest module file on the path, or, where the path goes on to an
/// item that file only re-exports (`pub use child::Item`), the file the
/// re-export leads to. `None` for paths outside the crate.
fn resolve(at: &[String], path: &[String]) -> Option<PathBuf> {
    resolve_within(at, path, 4)
}

fn resolve_within(at: &[String], path: &[String], hops: u32) -> Option<PathBuf> {
    let (mut module, rest): (ModPath, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (at.to_vec(), &path[1..]),
        Some("super") => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            (at[..at.len().checked_sub(supers)?].to_vec(), &path[supers..])
        }
        Some(first) => {
            let mut child = at.to_vec();
            child.push(first.to_string());
            file_of(&child)?;
            (at.to_vec(), path)
        }
        None => return None,
    };
    let mut found = file_of(&module);
    for (i, segment) in rest.iter().enumerate() {
        module.push(segment.clone());
        match file_of(&module) {
            Some(file) => found = Some(file),
            None => {
                module.pop();
                let target = (hops > 0).then(|| reexport(&module, segment)).flatten();
                return target
                    .and_then(|t| resolve_within(&module, &[t, rest[i + 1..].to_vec()].concat(), hops - 1))
                    .or(found);
            }
        }
    }
    found
}

/// Where `module` re-exports `name` from (`pub use a::b::Name` in its
/// file): that path, if it does.
fn reexport(module: &[String], name: &str) -> Option<Vec<String>> {
    let file = file_of(module)?;
    statements(&file)
        .into_iter()
        .filter_map(|(_, st)| reexported_tree(&st).map(use_paths))
        .flatten()
        .find(|p| p.last().is_some_and(|last| last == name))
}

/// The tree of a `pub use` / `pub(crate) use` statement.
fn reexported_tree(statement: &str) -> Option<&str> {
    ["pub use ", "pub(crate) use ", "pub(super) use "]
        .iter()
        .find_map(|p| statement.strip_prefix(p))
        .map(|t| t.trim_end_matches(';'))
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn use_paths(tree: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> =
                tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            let mut base = prefix.to_vec();
            base.extend(head);
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&base, &inner[start..], out);
        } else if !tree.is_empty() {
            let tree = tree.split(" as ").next().unwrap_or(tree);
            let mut path = prefix.to_vec();
            path.extend(tree.split("::").map(str::trim).filter(|s| !s.is_empty() && *s != "*").map(String::from));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    expand(&[], tree, &mut out);
    out
}

/// Paths a line of code names inline (`crate::a::b`, `super::x`, and
/// `child::x`, which `resolve` keeps only where `child` is a module).
fn inline_paths(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in line.char_indices() {
        let in_word = c.is_alphanumeric() || c == '_';
        match (in_word, word_start) {
            (true, None) => word_start = Some(i),
            (false, Some(start)) => {
                word_start = None;
                let word = &line[start..i];
                let after_path = line[..start].ends_with("::");
                if line[i..].starts_with("::") && !after_path && !matches!(word, "crate" | "super" | "self") {
                    let path: String =
                        line[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                    out.push(path.split("::").filter(|s| !s.is_empty()).map(String::from).collect());
                }
            }
            _ => {}
        }
    }
    for anchor in ["crate::", "super::"] {
        let mut rest = line;
        while let Some(i) = rest.find(anchor) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            rest = &rest[i + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            out.push(path.split("::").filter(|s| !s.is_empty()).map(String::from).collect());
        }
    }
    out
}

/// The code of `file` without comments, one `use` statement per entry,
/// each with the inline module it sits in (`mod tests { .. }`: its
/// `super::` is the file's own module).
fn statements(file: &Path) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    let (mut open_use, mut depth) = (false, 0i32);
    let mut inline: Vec<(String, i32)> = Vec::new();
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        if open_use {
            out.last_mut().unwrap().1.push_str(code);
        } else {
            out.push((inline.iter().map(|(m, _)| m.clone()).collect(), code.to_string()));
        }
        let starts = code.starts_with("use ") || reexported_tree(code).is_some();
        open_use = (open_use || starts) && !code.ends_with(';');
        let words: Vec<&str> = code.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "mod") {
            if words.get(i + 2) == Some(&"{") {
                inline.push((words[i + 1].to_string(), depth));
            }
        }
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        while inline.last().is_some_and(|(_, d)| depth <= *d) {
            inline.pop();
        }
    }
    out
}

/// Every file under `src/` -> the files its code imports or names. A
/// module file's re-export of its own children (`pub use child::Item`) is
/// its face, not an import: like `mod child;`, it is no edge.
fn file_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    collect_rs(&src(), &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let module = module_of(&file);
        let mut deps = BTreeSet::new();
        for (inline, statement) in statements(&file) {
            let at = [module.clone(), inline].concat();
            let paths = if let Some(tree) = reexported_tree(&statement) {
                let own_child = |p: &Vec<String>| p.first().is_some_and(|f| f != "crate" && f != "super");
                use_paths(tree).into_iter().filter(|p| !own_child(p)).collect()
            } else if let Some(tree) = statement.strip_prefix("use ") {
                use_paths(tree.trim_end_matches(';'))
            } else {
                inline_paths(&statement)
            };
            deps.extend(paths.iter().filter_map(|p| resolve(&at, p)).filter(|d| *d != file));
        }
        graph.insert(file, deps);
    }
    graph
}

fn collect_rs(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect_rs(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs") {
        out.push(path.to_path_buf());
    }
}

/// A cycle through `from`, if any, as the path that closes it.
fn cycle_from<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>, from: &N) -> Option<Vec<N>> {
    fn walk<N: Ord + Clone>(
        g: &BTreeMap<N, BTreeSet<N>>,
        at: &N,
        goal: &N,
        path: &mut Vec<N>,
        seen: &mut BTreeSet<N>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            path.push(next.clone());
            if next == goal || (seen.insert(next.clone()) && walk(g, next, goal, path, seen)) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![from.clone()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn shown(file: &Path) -> String {
    file.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_file_imports_itself_back() {
    let graph = file_graph();
    assert!(graph.len() > 50, "{} files", graph.len());
    // The reader sees real imports: a driver names the engine it runs.
    let epoll = src().join("server/driver/epoll/mod.rs");
    assert!(graph[&epoll].contains(&src().join("server/engine/mod.rs")), "{:?}", graph[&epoll]);
    let cycles: BTreeSet<String> = graph
        .keys()
        .filter_map(|f| cycle_from(&graph, f))
        .map(|p| p.iter().map(|f| shown(f)).collect::<Vec<_>>().join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles between files: {cycles:#?}");
}

/// The rules of docs/ARCHITECTURE.md's "Layers" tables: module -> the
/// modules it may import (besides itself and its own children).
fn layer_rules() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc.split("\n## ").find(|s| s.starts_with("Layers")).expect("a Layers section");
    let names = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(String::from).collect() };
    let mut rules = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').collect();
        if cells.len() < 5 {
            continue;
        }
        let (modules, allowed) = (names(cells[2]), names(cells[4]));
        for module in modules {
            rules.insert(module, allowed.iter().cloned().collect());
        }
    }
    rules
}

/// The most specific rule for `module` (`server::engine::input` is ruled
/// by `server::engine`, else by `server`).
fn rule_for<'r>(
    rules: &'r BTreeMap<String, BTreeSet<String>>,
    module: &str,
) -> Option<(&'r String, &'r BTreeSet<String>)> {
    rules
        .iter()
        .filter(|(m, _)| module == m.as_str() || module.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let rules = layer_rules();
    assert!(rules.contains_key("ws") && rules.contains_key("server::engine"), "{rules:?}");
    let mut broken = Vec::new();
    for (file, deps) in file_graph() {
        let from = module_of(&file).join("::");
        if from.is_empty() {
            continue; // lib.rs: the crate's list of modules
        }
        let Some((ruled_as, allowed)) = rule_for(&rules, &from) else {
            broken.push(format!("{}: no rule in ARCHITECTURE.md covers `{from}`", shown(&file)));
            continue;
        };
        for dep in deps {
            let to = module_of(&dep).join("::");
            let inside = to == *ruled_as || to.starts_with(&format!("{ruled_as}::"));
            let permitted = allowed.iter().any(|a| to == *a || to.starts_with(&format!("{a}::")));
            if !inside && !permitted && !to.is_empty() {
                broken.push(format!("{} (`{ruled_as}`) imports `{to}`", shown(&file)));
            }
        }
    }
    assert!(broken.is_empty(), "imports across layers:\n{}", broken.join("\n"));
}

#[test]
fn the_check_finds_a_cycle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&graph, &"a".to_string()).unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, &"a".to_string()), None);
}

#[test]
fn the_reader_expands_use_trees_and_resolves_them_to_files() {
    let paths = use_paths("super::{conn::Conn, table::{ConnTable, Removed}, Engine}");
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["super::conn::Conn", "super::table::ConnTable", "super::table::Removed", "super::Engine"]);
    let at: ModPath = ["server", "engine", "input"].map(String::from).to_vec();
    let file = |p: &str| resolve(&at, &p.split("::").map(String::from).collect::<Vec<_>>()).map(|f| shown_path(&f));
    assert_eq!(file("super::conn::Conn").as_deref(), Some("server/engine/conn.rs"));
    assert_eq!(file("super::Engine").as_deref(), Some("server/engine/mod.rs"));
    assert_eq!(file("crate::ws::frame::FrameHead").as_deref(), Some("ws/frame.rs"));
    assert_eq!(file("std::io"), None);
    assert_eq!(inline_paths("let x = crate::server::life::io_reason(&e); // super::y").len(), 2);
    let child = inline_paths("Scenario::Echo => process::run(cfg, echo::Echo::new(cfg))");
    let child: Vec<String> = child.iter().map(|p| p.join("::")).collect();
    assert_eq!(child, ["Scenario::Echo", "process::run", "echo::Echo::new"]);
}

fn shown_path(file: &Path) -> String {
    shown(file)
}
