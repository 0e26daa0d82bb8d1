//! The house rules of DEVELOPERS.md, checked: each room (a top-level module
//! of `src/`) imports only the rooms its row of the table allows, and no two
//! source files import each other, directly or round a longer loop.
//!
//! Only library code counts: a file is read up to its `#[cfg(test)]` module
//! (tests may reach across rooms to build what they check), comments are
//! skipped, and every `crate::…` and `super::…` path is an import, whether in
//! a `use` line or written inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The root of the crate.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, relative to the crate root.
fn sources() -> Vec<PathBuf> {
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
    let mut out = Vec::new();
    walk(&root().join("src"), &mut out);
    out.sort();
    out.into_iter().map(|p| p.strip_prefix(root()).unwrap().to_path_buf()).collect()
}

/// A file's library code: up to its test module (a `#[cfg(test)]` on a
/// `mod`; one on any other item does not end the library code), without
/// comments.
fn library_code(path: &Path) -> String {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            let next = lines[i + 1..].iter().map(|l| l.trim_start()).find(|l| !l.is_empty());
            if next.is_some_and(|l| l.starts_with("mod ") || l.starts_with("pub(crate) mod ")) {
                break;
            }
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The module path of a file: `src/run/call.rs` → `[run, call]`,
/// `src/run/mod.rs` → `[run]`, `src/lib.rs` → `[]`.
fn module_of(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix("src").unwrap();
    let mut parts: Vec<String> =
        rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file that defines the longest prefix of `module` that is a file.
fn file_of(module: &[String], files: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    (1..=module.len()).rev().find_map(|n| {
        let base = format!("src/{}", module[..n].join("/"));
        [PathBuf::from(format!("{base}.rs")), PathBuf::from(format!("{base}/mod.rs"))]
            .into_iter()
            .find(|p| files.contains(p))
    })
}

/// The module paths `code` imports: `crate::a::b`, `super::c`, a path
/// into one of the file's own child modules (`use child::X`, `child::f()`,
/// `self::child::X`), and each member of a `{…}` group after them (one level
/// deep, which is how the code base writes them), resolved against the
/// file's own module.
fn imports(code: &str, own: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    // The file's child modules: `mod x;` and `pub(crate) mod x;` lines.
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub(crate) mod ")
                .or(l.strip_prefix("pub mod "))
                .or(l.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(|m| m.trim().to_string())
        })
        .collect();
    // A module's re-exports of its own children (`pub use child::X;`) are
    // its public face, not a dependency of its code: they are left out, so
    // a child may use what its parent defines.
    let used: String = code
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("pub use ") || l.starts_with("pub(crate) use "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ubytes = used.as_bytes();
    for child in &children {
        for start in [format!("{child}::"), format!("self::{child}::")] {
            let mut at = 0;
            while let Some(found) = used[at..].find(&start) {
                let begin = at + found;
                at = begin + start.len();
                let before = begin.checked_sub(1).map(|i| ubytes[i]);
                if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                    continue;
                }
                let mut module = own.to_vec();
                module.push(child.clone());
                out.push(module);
            }
        }
    }
    for start in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(found) = code[at..].find(start) {
            let begin = at + found;
            at = begin + start.len();
            let before = begin.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            // `super::` names the parent of the file's own module.
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                own[..own.len().saturating_sub(1)].to_vec()
            };
            let mut rest = &code[at..];
            while rest.starts_with("super::") {
                base.pop();
                rest = &rest["super::".len()..];
            }
            let path_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = &rest[..path_len];
            let segments: Vec<String> =
                path.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let mut module = base.clone();
            module.extend(segments);
            if (path.is_empty() || path.ends_with("::")) && rest[path_len..].starts_with('{') {
                let group_end = rest[path_len..].find('}').map_or(rest.len(), |e| path_len + e);
                for item in rest[path_len + 1..group_end].split(',') {
                    let item = item.trim().split(' ').next().unwrap_or("");
                    let mut m = module.clone();
                    if !item.is_empty() && item != "self" {
                        m.extend(item.split("::").map(String::from));
                    }
                    out.push(m);
                }
            } else {
                out.push(module);
            }
        }
    }
    out
}

/// The rules table of DEVELOPERS.md: room → the rooms (or `room::file`)
/// its library code may import.
fn rules() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("DEVELOPERS.md")).unwrap();
    let section = text.split("## Rooms and what each may import").nth(1).expect("the rules table");
    let mut rules = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let room = cells[1].trim_matches('`').trim_end_matches('/').to_string();
        let allowed = cells[3]
            .split(',')
            .map(|a| a.trim().trim_matches('`').trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty() && a != "—")
            .collect();
        rules.insert(room, allowed);
    }
    assert!(rules.len() >= 8, "the rules table has {} rows", rules.len());
    rules
}

#[test]
fn each_room_imports_only_what_developers_md_allows() {
    let rules = rules();
    let mut broken = Vec::new();
    for file in sources() {
        let own = module_of(&file);
        let room = own.first().cloned().unwrap_or_else(|| "lib".to_string());
        if room == "lib" {
            // The crate root declares the rooms; it imports none.
            continue;
        }
        let allowed = rules.get(&room).unwrap_or_else(|| {
            panic!("{}: room `{room}` has no row in DEVELOPERS.md", file.display())
        });
        for module in imports(&library_code(&file), &own) {
            let Some(target) = module.first() else { continue };
            if *target == room {
                continue;
            }
            let sub = module.get(1).map(|s| format!("{target}::{s}"));
            let ok = allowed.contains(target) || sub.as_ref().is_some_and(|s| allowed.contains(s));
            if !ok {
                broken.push(format!("{}: {}", file.display(), module.join("::")));
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "imports DEVELOPERS.md does not allow:\n{}", broken.join("\n"));
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let files: BTreeSet<PathBuf> = sources().into_iter().collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let own = module_of(file);
        let deps = imports(&library_code(file), &own)
            .iter()
            .filter_map(|m| file_of(m, &files))
            .filter(|d| d != file)
            .collect();
        edges.insert(file.clone(), deps);
    }
    // Depth-first search for a back edge; the loop is reported whole.
    fn visit(
        at: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        path: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.clone());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    for file in &files {
        if let Some(cycle) = visit(file, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|p| p.display().to_string()).collect();
            panic!("an import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_groups_inline_paths_super_and_children() {
    let code = "mod names;\nmod lookups;\npub(crate) use lookups::Lookups;\nuse names::Found;\nuse crate::api::{client::Client, time};\nlet x = crate::results::Status::Planned;\nuse super::call::Ctx;\nuse super::{journal, summary::Summary};\n";
    let own = vec!["run".to_string(), "resolve".to_string()];
    let found: Vec<String> = imports(code, &own).iter().map(|m| m.join("::")).collect();
    assert_eq!(
        found,
        [
            "run::resolve::names",
            "api::client::Client",
            "api::time",
            "results::Status::Planned",
            "run::call::Ctx",
            "run::journal",
            "run::summary::Summary",
        ]
    );
}
