//! The layering, checked from every crate's `Cargo.toml` (docs/architecture.md): the
//! contexts (domain, ports, services) use no transport and no database driver, the adapters
//! never reach into the HTTP edge, every crate has a layer, and the workspace's crates form
//! no cycle. A new dependency that breaks a rule fails here, in review, not months later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What a crate is, by name. A crate missing here fails the test: place it first.
const LAYERS: &[(&str, Layer)] = &[
    ("keel-kernel", Layer::Context),
    ("keel-catalog", Layer::Context),
    ("keel-identity", Layer::Context),
    ("keel-orders", Layer::Context),
    ("keel-webhooks", Layer::Context),
    ("keel-payments", Layer::Context),
    ("keel-store-common", Layer::Adapter),
    ("keel-store-sqlite", Layer::Adapter),
    ("keel-store-postgres", Layer::Adapter),
    ("keel-worker", Layer::Adapter),
    ("keel-resilience", Layer::Adapter),
    ("keel-payments-stripe", Layer::Adapter),
    ("keel-http", Layer::Edge),
    ("keel-graphql", Layer::Edge),
    ("keel", Layer::Binary),
    ("keel-bench", Layer::Tooling),
    ("keel-build", Layer::Tooling),
    ("keel-store-conformance", Layer::Tooling),
    ("keel-testdb", Layer::Tooling),
    ("keel-testkit", Layer::Tooling),
    ("keel-faults", Layer::Tooling),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// Domain types, ports and services: pure Rust, no I/O library of any kind.
    Context,
    /// Storage, bus and outbound calls, behind the contexts' ports.
    Adapter,
    /// HTTP: routes, extractors, problems, the document.
    Edge,
    /// The one binary that wires everything.
    Binary,
    /// Benchmarks and test kits.
    Tooling,
}

/// Crates (or name prefixes ending in `-`) a context may not use: transports, servers,
/// clients and database drivers.
const NOT_IN_A_CONTEXT: &[&str] = &[
    "axum",
    "axum-",
    "hyper",
    "hyper-",
    "tower",
    "tower-",
    "http-body",
    "reqwest",
    "sqlx",
    "sqlx-",
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "async-nats",
    "redis",
    "tonic",
    "utoipa-axum",
    "keel-http",
    "keel-store-",
    "keel-worker",
    "keel",
];

/// Crates an adapter may not use: the HTTP edge and the binary.
const NOT_IN_AN_ADAPTER: &[&str] = &["axum", "axum-", "keel-http", "utoipa-axum", "keel"];

/// One manifest's dependencies by kind (`dependencies`, `dev-dependencies`, ...).
#[derive(Debug, Default)]
struct Manifest {
    normal: BTreeSet<String>,
    other: BTreeSet<String>,
}

/// Reads the dependency names of a `Cargo.toml`: keys of the `[*dependencies]` tables
/// (`name = ...`, `name.workspace = true`) and `[dependencies.name]` tables. The workspace's
/// manifests use only these forms.
fn parse(manifest: &str) -> Manifest {
    let mut m = Manifest::default();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            header.clone_into(&mut section);
            // `[dependencies.sqlx]`: the table is the dependency.
            for kind in ["build-dependencies", "dev-dependencies", "dependencies"] {
                if let Some((_, name)) = section.split_once(&format!("{kind}.")) {
                    add(&mut m, kind, name);
                    break;
                }
            }
            continue;
        }
        let kind = section.rsplit('.').next().unwrap_or_default();
        if !kind.ends_with("dependencies") || section.contains("dependencies.") {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let name = key
                .trim()
                .split('.')
                .next()
                .unwrap_or_default()
                .trim_matches('"');
            if !name.is_empty() && !name.starts_with('#') {
                add(&mut m, kind, name);
            }
        }
    }
    m
}

fn add(m: &mut Manifest, kind: &str, name: &str) {
    if kind == "dependencies" {
        m.normal.insert(name.to_owned());
    } else {
        m.other.insert(name.to_owned());
    }
}

fn forbidden(rules: &[&str], dependency: &str) -> bool {
    rules
        .iter()
        .any(|r| dependency == *r || (r.ends_with('-') && dependency.starts_with(r)))
}

/// Every broken rule in `crates` (name -> manifest).
fn violations(crates: &BTreeMap<String, Manifest>) -> Vec<String> {
    let layer = |name: &str| LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
    let mut found = Vec::new();
    for (name, manifest) in crates {
        let Some(own) = layer(name) else {
            found.push(format!(
                "{name}: no layer; add it to LAYERS in tests/layering.rs"
            ));
            continue;
        };
        // Test-only dependencies count too: a context's tests use no server or driver either.
        for dep in manifest.normal.iter().chain(&manifest.other) {
            let rules = match own {
                Layer::Context => NOT_IN_A_CONTEXT,
                Layer::Adapter => NOT_IN_AN_ADAPTER,
                _ => continue,
            };
            if forbidden(rules, dep) {
                found.push(format!("{name} ({own:?}) depends on {dep}"));
            }
        }
    }
    found.extend(cycles(crates));
    found
}

/// Cycles among the workspace's crates over normal dependencies.
fn cycles(crates: &BTreeMap<String, Manifest>) -> Vec<String> {
    fn visit<'a>(
        name: &'a str,
        crates: &'a BTreeMap<String, Manifest>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == name) {
            found.push(format!("cycle: {} -> {name}", path[at..].join(" -> ")));
            return;
        }
        if !done.insert(name) {
            return;
        }
        path.push(name);
        for dep in crates[name]
            .normal
            .iter()
            .filter(|d| crates.contains_key(*d))
        {
            visit(dep, crates, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for name in crates.keys() {
        visit(name, crates, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn workspace() -> BTreeMap<String, Manifest> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("crates/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = "))
                .expect("a package name")
                .trim_matches('"')
                .to_owned();
            crates.insert(name, parse(&text));
        }
    }
    assert!(
        crates.len() >= LAYERS.len(),
        "found the workspace's crates: {:?}",
        crates.keys()
    );
    crates
}

#[test]
fn the_workspace_keeps_its_layers() {
    let found = violations(&workspace());
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// The checker itself, on the workspace with one forbidden edge added of each kind: a context
/// using a driver, an adapter using the HTTP edge, a crate without a layer, a cycle.
#[test]
fn each_kind_of_forbidden_edge_is_caught() {
    let add = |crates: &mut BTreeMap<String, Manifest>, from: &str, to: &str| {
        crates
            .get_mut(from)
            .expect("crate")
            .normal
            .insert(to.to_owned());
    };
    let mut crates = workspace();
    add(&mut crates, "keel-catalog", "sqlx");
    add(&mut crates, "keel-orders", "axum");
    add(&mut crates, "keel-store-sqlite", "keel-http");
    // Every context uses the kernel: the kernel using one is a cycle.
    add(&mut crates, "keel-kernel", "keel-orders");
    crates.insert("keel-new".into(), Manifest::default());
    let found = violations(&crates).join("\n");
    for expected in [
        "keel-catalog (Context) depends on sqlx",
        "keel-orders (Context) depends on axum",
        "keel-store-sqlite (Adapter) depends on keel-http",
        "keel-new: no layer",
        "cycle: keel-kernel -> keel-orders -> keel-kernel",
    ] {
        assert!(
            found.contains(expected),
            "{expected} not reported in:\n{found}"
        );
    }
}

#[test]
fn manifests_are_read_in_every_form_the_workspace_uses() {
    let m = parse(
        "[package]\nname = \"x\"\n\n[dependencies]\naxum.workspace = true\nreqwest = { version = \"1\" }\n\
         \"quoted\" = \"1\"\n\n[dev-dependencies]\ntempfile.workspace = true\n\n\
         [target.'cfg(unix)'.dependencies]\nlibc = \"1\"\n\n[dependencies.sqlx]\nversion = \"1\"\n\n[lints]\nworkspace = true\n",
    );
    let normal: Vec<&str> = m.normal.iter().map(String::as_str).collect();
    assert_eq!(normal, ["axum", "libc", "quoted", "reqwest", "sqlx"]);
    assert_eq!(
        m.other.iter().map(String::as_str).collect::<Vec<_>>(),
        ["tempfile"]
    );
}
