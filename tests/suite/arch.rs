//! Architecture tests: rules about the shape of the workspace that no
//! compiler checks.
//!
//! * the setuid `tern-queue` links only a short, reviewed list of crates
//!   (computed from `cargo metadata`'s resolve graph);
//! * only `tern-sys` contains the `unsafe` keyword, and every other crate
//!   root forbids `unsafe_code`;
//! * every program in `bin/` has its man page, and `tern-queue`'s man page
//!   lists exactly the exit codes of `tern_spool::QueueExit`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every crate `tern-queue` may link, directly or not (normal and build
/// dependencies, transitively).
const TERN_QUEUE_ALLOWED: &[&str] = &[
    "tern-spool",
    "tern-sys",
    "tern-log",
    "tern-date",
    "rustix",
    "nix",
    "libc",
    "memchr",
    "thiserror",
    // proc-macro and build-time dependencies of the above
    "thiserror-impl",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
    "bitflags",
    "linux-raw-sys",
    "errno",
    "cfg-if",
    "cfg_aliases",
    // nix's `net` feature (getifaddrs, for tern-route's check that an MX is
    // not this host) is unified into every workspace build: memoffset is
    // compile-time offset arithmetic for nix's socket address types, and
    // autocfg its build script's helper. Neither runs anything in
    // tern-queue.
    "memoffset",
    "autocfg",
];

/// The keyword this file looks for, spelled so that this file does not
/// contain it.
const KEYWORD: &str = concat!("un", "safe");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The host triple, so that dependencies for other platforms (windows-sys
/// and the like) are left out of the graph.
fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    assert!(out.status.success(), "rustc -vV failed");
    let text = String::from_utf8(out.stdout).expect("rustc -vV prints UTF-8");
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .trim()
        .to_string()
}

fn metadata() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        let root = workspace_root();
        let out = Command::new(cargo())
            .arg("metadata")
            .arg("--format-version")
            .arg("1")
            .arg("--filter-platform")
            .arg(host_triple())
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("cargo metadata: {key} is not a string in {v}"))
}

fn array<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("cargo metadata: {key} is not an array"))
}

/// Package names of everything `package` depends on through normal and
/// build dependencies, transitively (dev-dependencies are not linked).
fn closure(meta: &Value, package: &str) -> BTreeMap<String, String> {
    let names: BTreeMap<&str, &str> = array(meta, "packages")
        .iter()
        .map(|p| (str_field(p, "id"), str_field(p, "name")))
        .collect();
    let nodes: BTreeMap<&str, &Value> = array(&meta["resolve"], "nodes")
        .iter()
        .map(|n| (str_field(n, "id"), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, name)| **name == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("package {package} is not in cargo metadata"));
    // name -> the package that pulled it in (for the failure message)
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        let node = nodes
            .get(id)
            .unwrap_or_else(|| panic!("{id} missing from the resolve graph"));
        for dep in array(node, "deps") {
            let linked = array(dep, "dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if !linked {
                continue;
            }
            let dep_id = str_field(dep, "pkg");
            if seen.insert(dep_id) {
                todo.push(dep_id);
                found.insert(names[dep_id].to_string(), names[id].to_string());
            }
        }
    }
    found
}

#[test]
fn tern_queue_links_only_the_allowed_crates() {
    let deps = closure(metadata(), "tern-queue");
    assert!(
        deps.contains_key("tern-spool") && deps.contains_key("tern-sys"),
        "the closure looks wrong (no tern-spool/tern-sys): {deps:?}"
    );
    let extra: Vec<String> = deps
        .iter()
        .filter(|(name, _)| !TERN_QUEUE_ALLOWED.contains(&name.as_str()))
        .map(|(name, parent)| format!("{name} (pulled in by {parent})"))
        .collect();
    assert!(
        extra.is_empty(),
        "the setuid tern-queue links crates outside its allowed list:\n  {}\n\
         Keep tern-queue's dependencies minimal (style.md 3), or review and \
         extend TERN_QUEUE_ALLOWED in tests/suite/arch.rs.",
        extra.join("\n  ")
    );
    for banned in ["clap", "anyhow", "serde"] {
        assert!(!deps.contains_key(banned), "{banned} in tern-queue");
    }
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("read directory entry");
        let path = entry.path();
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            let name = entry.file_name();
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if ty.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// True when `line` holds `word` as a whole word (identifier characters
/// on neither side).
fn has_word(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with("/*") || t.starts_with('*')
}

#[test]
fn has_word_sees_whole_words_only() {
    assert!(has_word(&format!("    {KEYWORD} {{"), KEYWORD));
    assert!(has_word(&format!("#[{KEYWORD}(no_mangle)]"), KEYWORD));
    assert!(!has_word(&format!("#![forbid({KEYWORD}_code)]"), KEYWORD));
    assert!(!has_word(&format!("not_{KEYWORD}"), KEYWORD));
    assert!(is_comment("    // SAFETY: fine"));
    assert!(!is_comment("let x = 1; // note"));
}

#[test]
fn only_tern_sys_contains_the_keyword() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "bin", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 10,
        "found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    let allowed = root.join("crates/tern-sys");
    let mut offenders = Vec::new();
    for file in &files {
        if file.starts_with(&allowed) {
            continue;
        }
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for (n, line) in text.lines().enumerate() {
            if !is_comment(line) && has_word(line, KEYWORD) {
                offenders.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&root).unwrap_or(file).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "`{KEYWORD}` outside crates/tern-sys (style.md 6):\n  {}",
        offenders.join("\n  ")
    );
}

/// Every crate root other than tern-sys's.
fn crate_roots(root: &Path) -> Vec<PathBuf> {
    let mut roots = vec![
        root.join("tests/src/lib.rs"),
        root.join("tests/fuzz/src/lib.rs"),
    ];
    for (dir, file) in [("crates", "src/lib.rs"), ("bin", "src/main.rs")] {
        let entries =
            std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("read {dir}/: {e}"));
        for entry in entries {
            let path = entry.expect("read directory entry").path();
            if path.join("Cargo.toml").is_file() && !path.ends_with("crates/tern-sys") {
                roots.push(path.join(file));
            }
        }
    }
    roots.sort();
    roots
}

#[test]
fn every_other_crate_root_forbids_the_keyword() {
    let root = workspace_root();
    let roots = crate_roots(&root);
    let mut missing = Vec::new();
    for path in &roots {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read crate root {}: {e}", path.display()));
        let forbids = text
            .lines()
            .any(|l| l.trim() == format!("#![forbid({KEYWORD}_code)]"));
        if !forbids {
            missing.push(
                path.strip_prefix(&root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(roots.len() >= 6, "too few crate roots found: {roots:?}");
    assert!(
        missing.is_empty(),
        "crate roots without #![forbid({KEYWORD}_code)]:\n  {}",
        missing.join("\n  ")
    );
}

/// The programs built from `bin/`: every bin target of a workspace member
/// whose manifest lives under `bin/`.
fn programs() -> Vec<String> {
    let meta = metadata();
    let bin_dir = workspace_root().join("bin");
    let members: BTreeSet<&str> = array(meta, "workspace_members")
        .iter()
        .map(|m| m.as_str().expect("member id"))
        .collect();
    let mut progs = Vec::new();
    for p in array(meta, "packages") {
        if !members.contains(str_field(p, "id"))
            || !Path::new(str_field(p, "manifest_path")).starts_with(&bin_dir)
        {
            continue;
        }
        for t in array(p, "targets") {
            if array(t, "kind").iter().any(|k| k == "bin") {
                progs.push(str_field(t, "name").to_string());
            }
        }
    }
    progs.sort();
    progs
}

#[test]
fn every_program_has_a_man_page() {
    let root = workspace_root();
    let progs = programs();
    assert!(
        progs.iter().any(|p| p == "tern-queue"),
        "no tern-queue among the programs: {progs:?}"
    );
    let missing: Vec<String> = progs
        .iter()
        .map(|p| format!("docs/man/{p}.8.md"))
        .filter(|page| !root.join(page).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "programs in bin/ without their man page (style.md 8):\n  {}",
        missing.join("\n  ")
    );
}

/// The codes in the first column of the table in a man page's
/// `## EXIT CODES` section. Panics on a code listed twice.
fn man_exit_codes(text: &str) -> BTreeSet<u32> {
    let mut codes = BTreeSet::new();
    let mut in_section = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_section = title.trim() == "EXIT CODES";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or("").trim();
        if let Ok(code) = first.parse::<u32>() {
            assert!(codes.insert(code), "exit code {code} listed twice");
        }
    }
    codes
}

#[test]
fn man_exit_code_parser() {
    let page = "## NAME\n| 5 | not here |\n## EXIT CODES\n\n| code | meaning |\n|---|---|\n\
                | 0 | fine |\n|  11 | bad |\n| x | no |\n## FILES\n| 7 | no |\n";
    assert_eq!(man_exit_codes(page), BTreeSet::from([0, 11]));
}

#[test]
fn tern_queue_man_page_lists_exactly_its_exit_codes() {
    let path = workspace_root().join("docs/man/tern-queue.8.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let documented = man_exit_codes(&text);
    let actual: BTreeSet<u32> = tern_spool::QueueExit::ALL
        .iter()
        .map(|e| u32::from(e.code()))
        .collect();
    assert_eq!(
        actual.len(),
        tern_spool::QueueExit::ALL.len(),
        "QueueExit::ALL holds a code twice"
    );
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{}: EXIT CODES table does not match QueueExit::ALL\n  \
         in the enum, not in the man page: {undocumented:?}\n  \
         in the man page, not in the enum: {unknown:?}",
        path.display()
    );
}
