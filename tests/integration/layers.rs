//! The module DAG of `src/`: every module may use the modules below it and none above, so the
//! crate has no cycles and each layer can be read (and tested) without the ones above it. The
//! order is the one `docs/architecture.md` draws; this test reads every source file and fails
//! on an import that points up or sideways to a later module.

use std::collections::BTreeMap;
use std::path::Path;

/// Top-level modules from the bottom up, by layer. A module may import only modules listed
/// before it.
const ORDER: &[(&str, &[&str])] = &[
    (
        "bottom",
        &[
            "spelling",
            "diag",
            "units",
            "clock",
            "stage",
            "events",
            "files",
            "config",
            "exit_code",
            "atomic",
            "lock",
            "reaper",
            "exec",
            "schemas",
        ],
    ),
    ("model", &["profile", "manifest"]),
    (
        "services",
        &[
            "tools",
            "checksum",
            "guest",
            "hooks",
            "mapping",
            "libvirt",
            "exports",
            "boot_test",
        ],
    ),
    ("plan", &["plan"]),
    ("run", &["outcome", "pipeline", "report", "batch", "ui"]),
    ("edge", &["cli", "app", "fuzzing"]),
];

/// The module a file under `src/` belongs to: `src/x.rs` and `src/x/**` are `x`. The binaries
/// (`main.rs`, `bin/`) are crates of their own that use the library from outside.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
}

/// The top-level modules a source text names through `crate::`, outside comments.
fn imports(text: &str) -> Vec<String> {
    let path = regex_lite::Regex::new(r"crate::([a-z_][a-z0-9_]*)").expect("regex");
    let group = regex_lite::Regex::new(r"crate::\{([^}]*)\}").expect("regex");
    let mut found = Vec::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for c in path.captures_iter(&code) {
        found.push(c[1].to_owned());
    }
    for c in group.captures_iter(&code) {
        for item in c[1].split(',') {
            let head = item.trim().split("::").next().unwrap_or("").trim();
            if !head.is_empty() {
                found.push(head.to_owned());
            }
        }
    }
    found
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let rank: BTreeMap<&str, (usize, &str)> = ORDER
        .iter()
        .flat_map(|(layer, mods)| mods.iter().map(move |m| (*m, *layer)))
        .enumerate()
        .map(|(i, (m, layer))| (m, (i, layer)))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut unknown = Vec::new();
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(&(mine, my_layer)) = rank.get(module.as_str()) else {
            unknown.push(format!("{} (module {module})", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for used in imports(&text) {
            if used == module {
                continue;
            }
            match rank.get(used.as_str()) {
                None => unknown.push(format!("{} imports crate::{used}", rel.display())),
                Some(&(theirs, their_layer)) if theirs > mine => upward.push(format!(
                    "{} ({my_layer}) imports crate::{used} ({their_layer})",
                    rel.display()
                )),
                Some(_) => {}
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        unknown.is_empty(),
        "modules missing from the layer table (add them where they belong, and to \
         docs/architecture.md):\n  {}",
        unknown.join("\n  ")
    );
    assert!(
        upward.is_empty(),
        "imports that point up the layers (move the shared thing down, or the importer up):\n  {}",
        upward.join("\n  ")
    );
}
