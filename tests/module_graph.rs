//! The module graph points one way (docs/architecture.md): read from the
//! `crate::` and `super::` paths of every file under src/ (unit tests left
//! out), it must have no cycle, every edge must go down the layer table
//! below, and the few rules the architecture names must hold. A back-edge
//! fails here with the file and the path that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the top (may use anything below) to the bottom
/// (uses nothing of the crate). A module may use modules of lower layers
/// only; within a layer, none uses another.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["demo"],
    &["register"],
    &["app"],
    &["sim"],
    &["server"],
    &["status"],
    &["reload"],
    &["probe"],
    &["ha"],
    &["poller", "callbacks"],
    &["journal"],
    &["roomset"],
    &["store"],
    &["exposition"],
    &["serve"],
    &["basic_auth"],
    &["web_config"],
    &["api"],
    &["usersig"],
    &["config"],
    &["budget"],
    &["room"],
    &["api/model"],
    &[
        "watch",
        "connections",
        "clock",
        "metrics",
        "shutdown",
        "priority",
        "logging",
    ],
];

/// One file's module path (`roomset::writer`) and its text without unit tests.
struct Source {
    module: Vec<String>,
    text: String,
}

fn sources() -> BTreeMap<PathBuf, Source> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                // Unit tests may reach anywhere (a test double, a fixture).
                let text = match text.find("#[cfg(test)]\nmod ") {
                    Some(at) => text[..at].to_owned(),
                    None => text,
                };
                out.insert(
                    path.clone(),
                    Source {
                        module: module_of(&path),
                        text,
                    },
                );
            }
        }
    }
    out
}

fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix("src").expect("under src/");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The file that `module` (or its longest existing prefix) lives in.
fn file_of(module: &[String]) -> Option<PathBuf> {
    for len in (1..=module.len()).rev() {
        let base: PathBuf = std::iter::once("src".to_owned())
            .chain(module[..len].iter().cloned())
            .collect();
        for candidate in [base.with_extension("rs"), base.join("mod.rs")] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Every module path the text names from the crate root: `crate::a::b`,
/// the branches of `use crate::{a, b::{c, d}}`, and `super::x` resolved.
fn paths_named(source: &Source) -> Vec<Vec<String>> {
    let text = &source.text;
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent_of(&source.module))] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            let before = text[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand(&text[from..]) {
                let mut full = base.clone();
                full.extend(path);
                out.push(full);
            }
        }
    }
    out
}

/// The module a `super::` in this file refers to (for `a/mod.rs` and
/// `a/b.rs` alike, one level up from the file's own module).
fn parent_of(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// The paths of one use tree or path, read from its start: `a::b::C` or
/// `{a, b::{c, d}}`. Only the leading identifiers are kept.
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut chars = text.char_indices().peekable();
    let mut path = Vec::new();
    let mut ident = String::new();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_alphanumeric() || c == '_' {
            ident.push(c);
            chars.next();
        } else if text[i..].starts_with("::") {
            path.push(std::mem::take(&mut ident));
            chars.next();
            chars.next();
        } else if c == '{' {
            let inner = &text[i + 1..matching_brace(&text[i..]).map_or(text.len(), |e| i + e)];
            return split_top(inner)
                .into_iter()
                .flat_map(|branch| {
                    expand(branch.trim()).into_iter().map({
                        let path = path.clone();
                        move |rest| path.iter().cloned().chain(rest).collect()
                    })
                })
                .collect();
        } else {
            break;
        }
    }
    if !ident.is_empty() && ident != "self" {
        path.push(ident);
    }
    vec![path]
}

fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// The layer table's name for a file: its top-level module, or `api/model`.
fn unit_of(file: &Path) -> String {
    let module = module_of(file);
    match module.as_slice() {
        [] => "lib".into(),
        [api, model, ..] if api == "api" && model == "model" => "api/model".into(),
        [top, ..] => top.clone(),
    }
}

/// file → (file it uses, the path that names it).
fn edges() -> BTreeMap<PathBuf, BTreeMap<PathBuf, String>> {
    let sources = sources();
    let mut edges: BTreeMap<PathBuf, BTreeMap<PathBuf, String>> = BTreeMap::new();
    for (file, source) in &sources {
        for path in paths_named(source) {
            if let Some(target) = file_of(&path) {
                if &target != file && target != Path::new("src/lib.rs") {
                    edges
                        .entry(file.clone())
                        .or_default()
                        .entry(target)
                        .or_insert_with(|| path.join("::"));
                }
            }
        }
    }
    edges
}

#[test]
fn the_graph_of_files_has_no_cycle() {
    let edges = edges();
    // Depth-first search; a grey node reached again closes a cycle.
    fn visit<'a>(
        node: &'a Path,
        edges: &'a BTreeMap<PathBuf, BTreeMap<PathBuf, String>>,
        state: &mut BTreeMap<&'a Path, bool>,
        stack: &mut Vec<&'a Path>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[at..].iter().map(|n| n.display().to_string()).collect();
                cycle.push(node.display().to_string());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        stack.push(node);
        for next in edges.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut state, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn every_use_goes_down_the_layer_table() {
    let rank = |unit: &str| LAYERS.iter().position(|layer| layer.contains(&unit));
    let mut wrong = BTreeSet::new();
    for (file, targets) in edges() {
        let from = unit_of(&file);
        for (target, path) in targets {
            let to = unit_of(&target);
            if from == to {
                continue;
            }
            match (rank(&from), rank(&to)) {
                (Some(a), Some(b)) if a < b => {}
                (None, _) => {
                    wrong.insert(format!("{}: module `{from}` is not in LAYERS", file.display()));
                }
                (_, None) => {
                    wrong.insert(format!("{}: module `{to}` is not in LAYERS", target.display()));
                }
                _ => {
                    wrong.insert(format!(
                        "{} uses crate::{path} ({}): `{from}` may not use `{to}` (same or higher layer)",
                        file.display(),
                        target.display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "back-edges:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn only_app_uses_the_poller_and_metrics_uses_nothing() {
    let mut wrong = Vec::new();
    for (file, targets) in edges() {
        let from = unit_of(&file);
        for (target, path) in targets {
            let to = unit_of(&target);
            if to == "poller" && !matches!(from.as_str(), "poller" | "app") {
                wrong.push(format!(
                    "{} uses crate::{path}: only app may use the poller",
                    file.display()
                ));
            }
            if from == "metrics" || from == "clock" {
                wrong.push(format!(
                    "{} uses crate::{path}: {from} uses nothing of the crate",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn one_wall_clock() {
    let mut readers = Vec::new();
    for (file, source) in sources() {
        if source.text.contains("SystemTime::now()") && file != Path::new("src/clock.rs") {
            readers.push(file.display().to_string());
        }
    }
    assert!(
        readers.is_empty(),
        "read the wall clock through crate::clock: {readers:?}"
    );
}

#[test]
fn the_reader_sees_paths_as_written() {
    let source = Source {
        module: vec!["roomset".into(), "writer".into()],
        text: "use crate::{clock, room::{Field, Fields}};\nuse super::backend::Record;\nlet x = crate::api::model::RoomInfo::default();".into(),
    };
    let mut got: Vec<String> = paths_named(&source).into_iter().map(|p| p.join("::")).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "api::model::RoomInfo::default",
            "clock",
            "room::Field",
            "room::Fields",
            "roomset::backend::Record",
        ]
    );
}
