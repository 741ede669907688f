//! Build-time helpers for Keel's crates, with no dependencies so build scripts stay cheap.
//!
//! [`embed_migrations`]: a storage adapter's migration list is derived from its `migrations/`
//! folder, never written by hand (issue 21): every `<version>_<description>.sql` file becomes
//! one `(version, "description", include_str!(...))` entry, in version order, in
//! `$OUT_DIR/migrations.rs`, which the adapter `include!`s into its `EmbeddedMigrations`.
#![forbid(unsafe_code)]

use std::{fmt::Write as _, path::Path};

/// Writes `$OUT_DIR/migrations.rs` from `$CARGO_MANIFEST_DIR/migrations/*.sql` and asks Cargo
/// to run the build script again when the folder changes. Panics (failing the build with the
/// message) on a file whose name is not `<digits>_<description>.sql` or on a repeated version.
pub fn embed_migrations() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("Cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("Cargo sets OUT_DIR for build scripts");
    let dir = Path::new(&manifest).join("migrations");
    // Cargo reads a build script's instructions from its standard output.
    #[allow(clippy::print_stdout)]
    {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let list = migration_list(&dir);
    std::fs::write(Path::new(&out).join("migrations.rs"), list)
        .expect("the build script can write to OUT_DIR");
}

/// The Rust expression for the migrations in `dir`.
fn migration_list(dir: &Path) -> String {
    let mut files: Vec<(u64, String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .map(|path| {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("{}: not a UTF-8 name", path.display()));
            let (version, description) = stem
                .split_once('_')
                .filter(|(v, d)| {
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !d.is_empty()
                })
                .unwrap_or_else(|| {
                    panic!("{}: name it <version>_<description>.sql", path.display())
                });
            let version = version
                .parse()
                .unwrap_or_else(|_| panic!("{}: version out of range", path.display()));
            (version, description.to_owned(), path.display().to_string())
        })
        .collect();
    files.sort();
    let mut list = String::from("&[\n");
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations with version {}",
            pair[0].0
        );
    }
    for (version, description, path) in &files {
        let version = grouped(*version);
        writeln!(
            list,
            "    ({version}, {description:?}, include_str!({path:?})),"
        )
        .expect("writing to a String");
    }
    list.push(']');
    list
}

/// `20261121000001` as `20_261_121_000_001`: the generated code passes the workspace's lints.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::migration_list;

    #[test]
    fn the_list_is_every_sql_file_in_version_order() {
        let dir = tempfile_dir();
        for name in [
            "20260102000001_second.sql",
            "20260101000001_first.sql",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "SELECT 1;").expect("write");
        }
        let list = migration_list(&dir);
        let first = list.find("\"first\"").expect("first listed");
        let second = list.find("\"second\"").expect("second listed");
        assert!(first < second, "{list}");
        assert!(
            list.starts_with("&[\n    (20_260_101_000_001, \"first\", include_str!("),
            "{list}"
        );
        assert!(!list.contains("notes"), "{list}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    #[should_panic(expected = "name it <version>_<description>.sql")]
    fn a_file_without_a_version_fails_the_build() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("tenants.sql"), "SELECT 1;").expect("write");
        migration_list(&dir);
    }

    /// A fresh directory under the system's temp dir (this crate has no dependencies).
    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keel-build-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
