//! The layout's promises, read from the source: the request path's lower layers know nothing
//! of HTTP or the wiring, and no file imports one that imports it back, directly or around a
//! circle, between folders or inside one.
//!
//! A file's edges are every `crate::`, `super::` and `self::` path in its code (`use` trees
//! expanded), and a folder's bare `child::` paths, resolved to the deepest module file the
//! path reaches; a name a folder re-exports (`pub use child::Name`) resolves to the child that
//! defines it. Only a `mod.rs` declaring and re-exporting its children (`mod x;`,
//! `pub use x::Y;`) adds no edge: that is its front door, not its code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by module path (`src/cache/key.rs` → `["cache", "key"]`,
/// `src/cache/mod.rs` → `["cache"]`), with its text.
fn sources(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
            .to_owned();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            sources(&path, &inner, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            let mut module = prefix.to_vec();
            if !["mod", "lib", "main"].contains(&name.as_str()) {
                module.push(name);
            }
            out.insert(module, text);
        }
    }
}

fn files() -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    sources(&src(), &[], &mut out);
    // main.rs is the binary, not a module of the library.
    out.remove(&Vec::new());
    out
}

/// The code of `text`: comments, string and char literals and `#[cfg(test)]` modules left
/// out (tests may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            'r' if matches!(next, Some('"') | Some('#')) && raw_string_starts(&chars, i) => {
                // A raw string: r"…", r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n', '\''), or a lifetime ('a).
                if next == Some('\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether the `r` at `at` opens a raw string (`r"…"`, `r#"…"#`, `br"…"`), not ends a name.
fn raw_string_starts(chars: &[char], at: usize) -> bool {
    let ident = |c: &char| c.is_alphanumeric() || *c == '_';
    match chars[..at].last() {
        Some('b') => !chars[..at - 1].last().is_some_and(ident),
        before => !before.is_some_and(ident),
    }
}

/// `use` trees expanded into whole paths: `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`,
/// `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    // `x as y` → `x`, before whitespace goes.
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut kept = String::new();
    let mut skip = false;
    for word in words {
        if skip {
            skip = false;
            // The alias may carry the list's punctuation (`y,` or `y}`).
            kept.extend(word.chars().filter(|c| matches!(c, ',' | '}')));
            continue;
        }
        if word == "as" {
            skip = true;
            continue;
        }
        kept.push_str(word);
    }
    let tree = kept;
    let mut out = Vec::new();
    expand_into("", &tree, &mut out);
    out
}

fn expand_into(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        let path = tree.trim_end_matches("::*");
        out.push(format!("{prefix}{path}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                split_item(prefix, head, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    split_item(prefix, head, &inner[start..], out);
}

fn split_item(prefix: &str, head: &str, item: &str, out: &mut Vec<String>) {
    if item.is_empty() {
        return;
    }
    if item == "self" {
        out.push(format!("{prefix}{}", head.trim_end_matches("::")));
    } else {
        expand_into(&format!("{prefix}{head}"), item, out);
    }
}

/// The paths a file's code names: its `use` trees, and `crate::`/`super::`/`self::` paths
/// written inline. A `mod.rs` re-exporting its children (`pub use child::…`) names nothing.
fn paths(module: &[String], text: &str, children: &BTreeSet<String>) -> Vec<String> {
    let code = code(text);
    let mut out = Vec::new();
    // `use` statements, which may span lines.
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let (is_pub, rest_of_line) = if let Some(r) = trimmed.strip_prefix("use ") {
            (false, r)
        } else if let Some(r) = ["pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
        {
            (true, r)
        } else {
            offset += line.len();
            continue;
        };
        let start = offset + (line.len() - rest_of_line.len());
        offset += line.len();
        let Some(end) = code[start..].find(';') else {
            continue;
        };
        for path in expand(&code[start..start + end]) {
            let first = path.split("::").next().unwrap_or("");
            let reexport = is_pub && (children.contains(first) || first == "self");
            if !reexport {
                out.push(path);
            }
        }
    }
    // Inline paths outside `use` statements.
    for line in code.lines() {
        if line.trim_start().starts_with("use ") || line.trim_start().starts_with("pub use ") {
            continue;
        }
        for root in ["crate::", "super::", "self::"] {
            let mut rest = line;
            while let Some(at) = rest.find(root) {
                let before = rest[..at].chars().last();
                let tail = &rest[at..];
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    out.push(path.trim_end_matches(':').to_owned());
                }
                rest = &tail[root.len()..];
            }
        }
    }
    let _ = module;
    out
}

/// The module file a path from `module` reaches: the deepest existing module along it.
fn resolve(
    module: &[String],
    is_folder: bool,
    path: &str,
    known: &BTreeSet<Vec<String>>,
    reexports: &Reexports,
) -> Option<Vec<String>> {
    let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
    // Where `self` is: a folder's mod.rs is its folder; a file is itself.
    let mut at: Vec<String> = match segments.peek().copied() {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("self") => {
            segments.next();
            module.to_vec()
        }
        Some("super") => {
            let mut here = module.to_vec();
            while segments.peek() == Some(&"super") {
                segments.next();
                here.pop();
            }
            here
        }
        // A path into an external crate, or a name in scope.
        _ => {
            if is_folder {
                let first = segments.next()?;
                let mut child = module.to_vec();
                child.push(first.to_owned());
                if !known.contains(&child) {
                    return None;
                }
                child
            } else {
                return None;
            }
        }
    };
    for segment in segments {
        let mut deeper = at.clone();
        deeper.push(segment.to_owned());
        if known.contains(&deeper) {
            at = deeper;
        } else {
            // A name a folder re-exports is the child's that defines it.
            if let Some(child) = reexports.get(&(at.clone(), segment.to_owned())) {
                at = child.clone();
            }
            break;
        }
    }
    Some(at)
}

/// (folder, name) → the child module that defines the name a folder's `pub use` re-exports.
type Reexports = BTreeMap<(Vec<String>, String), Vec<String>>;

fn reexports(files: &BTreeMap<Vec<String>, String>, known: &BTreeSet<Vec<String>>) -> Reexports {
    let mut out = Reexports::new();
    for (module, text) in files {
        for line in code(text).split(';') {
            let line = line.trim();
            let Some(tree) = ["pub use ", "pub(crate) use "]
                .iter()
                .find_map(|p| line.strip_prefix(p))
            else {
                continue;
            };
            for path in expand(tree) {
                let segments: Vec<&str> = path.split("::").collect();
                let Some((name, within)) = segments.split_last() else {
                    continue;
                };
                let mut child = module.clone();
                child.extend(within.iter().map(|s| (*s).to_owned()));
                if within
                    .first()
                    .is_some_and(|f| *f != "crate" && *f != "super")
                    && known.contains(&child)
                {
                    out.insert((module.clone(), (*name).to_owned()), child);
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = files();
    let known: BTreeSet<Vec<String>> = files.keys().cloned().chain([Vec::new()]).collect();
    let folders: BTreeSet<Vec<String>> = known
        .iter()
        .filter(|m| {
            known
                .iter()
                .any(|k| k.len() == m.len() + 1 && k.starts_with(m))
        })
        .cloned()
        .collect();
    let reexported = reexports(&files, &known);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        let is_folder = folders.contains(module);
        let children: BTreeSet<String> = known
            .iter()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
            .filter_map(|k| k.last().cloned())
            .collect();
        let no_children = BTreeSet::new();
        let name = module.join("::");
        let out = edges.entry(name.clone()).or_default();
        for path in paths(
            module,
            text,
            if is_folder { &children } else { &no_children },
        ) {
            if let Some(target) = resolve(module, is_folder, &path, &known, &reexported) {
                let target = target.join("::");
                // The crate root (lib.rs) only declares modules.
                if target != name && !target.is_empty() {
                    out.insert(target);
                }
            }
        }
        // A folder's code calling a child by its bare name (`values::name_token(…)`).
        if is_folder {
            for line in code(text).lines() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("mod ")
                    || trimmed.starts_with("pub mod ")
                    || trimmed.starts_with("pub(crate) mod ")
                    || trimmed.contains("use ")
                {
                    continue;
                }
                for child in &children {
                    let needle = format!("{child}::");
                    let mut rest = line;
                    while let Some(at) = rest.find(&needle) {
                        let before = rest[..at].chars().last();
                        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                            let mut target = module.clone();
                            target.push(child.clone());
                            out.insert(target.join("::"));
                        }
                        rest = &rest[at + needle.len()..];
                    }
                }
            }
        }
    }
    edges
}

/// The first circle found, as the path around it.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
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
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn lower_layers_know_nothing_of_http_or_the_wiring() {
    let lower = [
        "cache",
        "query",
        "normalize",
        "upstream",
        "render",
        "service",
        "fetch",
        "promql",
        "limits",
        "settings",
    ];
    for (module, text) in files() {
        if !module.first().is_some_and(|m| lower.contains(&m.as_str())) {
            continue;
        }
        let code = code(&text);
        for forbidden in [
            "actix_web",
            "crate::startup",
            "crate::state",
            "crate::api",
            "crate::error",
        ] {
            assert!(
                !code.contains(forbidden),
                "src/{} mentions {forbidden}: only api/ and the wiring may",
                module.join("/")
            );
        }
    }
}

/// The PromQL engine evaluates over any series source: it knows no appliance question, no
/// answer's shape, no cache and no HTTP.
#[test]
fn the_promql_engine_is_pure() {
    let mut seen = 0;
    for (module, text) in files() {
        if !module.starts_with(&["promql".to_owned(), "engine".to_owned()]) {
            continue;
        }
        seen += 1;
        let code = code(&text);
        for forbidden in [
            "crate::query",
            "crate::normalize",
            "crate::cache",
            "crate::service",
            "crate::fetch",
            "promql::select",
            "promql::plan",
            "actix",
            "reqwest",
        ] {
            assert!(
                !code.contains(forbidden),
                "src/{} mentions {forbidden}: the engine reads only its SeriesSource",
                module.join("/")
            );
        }
    }
    assert!(seen >= 6, "the engine's files: {seen}");
}

#[test]
fn no_file_imports_one_that_imports_it() {
    let edges = graph();
    // The graph sees what it claims: edges between folders, inside them, and through super::.
    for (from, to) in [
        ("service", "cache::answers"),
        ("service::promql", "service"),
        ("normalize::shapes", "normalize::error"),
        ("api::prometheus::query", "api::prometheus::form"),
        ("api::metricdata", "api::failures"),
        ("query::spelling", "query::builder"),
        ("query::builder", "query"),
        ("promql::plan", "promql::engine::hints"),
        ("promql::engine::functions", "promql::engine::over_time"),
    ] {
        assert!(
            edges.get(from).is_some_and(|e| e.contains(to)),
            "{from} -> {to} not seen: {:?}",
            edges.get(from)
        );
    }
    // Every circle, each reported once (one of its edges set aside to find the next).
    let mut left = edges.clone();
    let mut circles = Vec::new();
    while let Some(found) = circle(&left) {
        if let Some(out) = left.get_mut(&found[0]) {
            out.remove(&found[1]);
        }
        circles.push(found.join(" -> "));
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_graph_finds_a_circle_inside_a_folder() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges
        .entry("a::x".into())
        .or_default()
        .insert("a::y".into());
    edges
        .entry("a::y".into())
        .or_default()
        .insert("a::x".into());
    assert!(circle(&edges).is_some());
    assert_eq!(
        expand("super::{values::{self, shown}, A as B, c::*}"),
        [
            "super::values",
            "super::values::shown",
            "super::A",
            "super::c"
        ]
    );
}
