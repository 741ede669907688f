//! Mechanical checks of the project's standing rules over the whole source tree.

use std::path::{Path, PathBuf};

fn rust_sources() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![crates];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    assert!(out.len() > 20, "found the sources");
    out
}

/// The exact-values rule (docs/architecture.md, "Exact values"): no `f32`/`f64` anywhere in the code, tests included,
/// unless the line says why with an `// exact-values:` comment (a non-calculation use such
/// as a protocol that is float by definition).
#[test]
fn no_floating_point_types_in_the_code() {
    // Spelled in two halves so this file does not match itself.
    let floats = [concat!("f", "32"), concat!("f", "64")];
    let mut found = Vec::new();
    for path in rust_sources() {
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let has_float = code
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|tok| floats.contains(&tok));
            if has_float && !line.contains("// exact-values:") {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "floating point found:\n{}",
        found.join("\n")
    );
}

/// sqlx only accepts `'static` SQL strings unless wrapped in `AssertSqlSafe`; that wrapper
/// (SQL built at run time) is allowed only in the test database kit, for generated schema
/// names. Production SQL is always a literal with bound parameters.
#[test]
fn dynamic_sql_only_in_the_test_database_kit() {
    let offenders: Vec<String> = rust_sources()
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "keel-testdb"))
        .filter(|p| !p.ends_with("standing_rules.rs"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .expect("read")
                .contains("AssertSqlSafe")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "dynamic SQL in: {offenders:?}");
}

/// Every crate forbids unsafe code at its root.
#[test]
fn every_crate_forbids_unsafe_code() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for entry in std::fs::read_dir(crates).expect("crates dir") {
        let dir = entry.expect("entry").path();
        let lib = dir.join("src/lib.rs");
        if lib.is_file() {
            let text = std::fs::read_to_string(&lib).expect("read");
            assert!(
                text.contains("#![forbid(unsafe_code)]"),
                "{} lacks #![forbid(unsafe_code)]",
                lib.display()
            );
        }
    }
}

/// No source file over 1,000 lines, tests included: a file one cannot hold in one's head gets
/// split by use case (issue 21). The workspace has no generated Rust sources.
#[test]
fn no_source_file_is_over_a_thousand_lines() {
    const MAX_LINES: usize = 1_000;
    let mut long: Vec<String> = rust_sources()
        .into_iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these by use case:\n{}",
        long.join("\n")
    );
}
