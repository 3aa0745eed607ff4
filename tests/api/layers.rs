//! The layout's promises, read from the source: the request path's lower layers know nothing
//! of HTTP or the wiring, and no two modules import each other, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            out.push((path.display().to_string(), text));
        }
    }
    out
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`src/cache/key.rs` → `cache`).
fn module_of(file: &str) -> Option<String> {
    let rel = file.strip_prefix(src().to_str()?)?.trim_start_matches('/');
    let first = rel.split('/').next()?;
    let name = first.trim_end_matches(".rs");
    (!["lib", "main"].contains(&name)).then(|| name.to_owned())
}

/// `crate::x` paths in `text`, comments and doc comments left out.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in sources(&src()) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let refs = crate_references(&text);
        let out = edges.entry(module.clone()).or_default();
        out.extend(refs.into_iter().filter(|r| *r != module));
    }
    edges
}

#[test]
fn lower_layers_know_nothing_of_http_or_the_wiring() {
    for (file, text) in sources(&src()) {
        let lower = [
            "cache",
            "query",
            "normalize",
            "upstream",
            "render",
            "service",
            "fetch",
            "promql",
        ]
        .iter()
        .any(|m| module_of(&file).as_deref() == Some(*m));
        if !lower {
            continue;
        }
        for forbidden in [
            "actix_web",
            "crate::startup",
            "crate::state",
            "crate::api",
            "crate::error",
        ] {
            assert!(
                !text.contains(forbidden),
                "{file} mentions {forbidden}: only api/ and the wiring may"
            );
        }
    }
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let edges = graph();
    assert!(edges.contains_key("service") && edges.contains_key("cache"));
    // Depth-first search for a back edge; the path to it is the circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}
