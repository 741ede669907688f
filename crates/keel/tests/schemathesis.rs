//! Property-based contract tests: schemathesis (PyPI; `scripts/test` installs it into the
//! suite's virtualenv) generates requests from `/openapi.json` and checks every answer of a
//! running Keel against the document: no 5xx, every status, media type and header declared,
//! every body valid against its schema. Over real HTTP on both backends, for the staff API (the
//! owner's token) and the storefront (a publishable key and a customer's token), with the
//! shop's catalog, stock and a paid order seeded. A failure prints schemathesis' report, with
//! a `curl` line that reproduces each failing request.

use std::{path::PathBuf, time::Duration};

use keel_testkit::{
    Backend, TestApp, backend_tests,
    shop::{checkout, created, ny, pay, ready_cart, shop},
    spawn_app,
};

/// The checks the contract must pass (schemathesis' names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
/// Cases per operation and phase: a bound on the suite's time, not a sample size to tune.
const MAX_EXAMPLES: &str = "5";
/// An upper bound against a hang, not a synchronisation: a run takes well under a minute.
const RUN_LIMIT: Duration = Duration::from_mins(10);

/// schemathesis' `st`: `KEEL_SCHEMATHESIS`, else the virtualenv `scripts/test` makes.
fn st() -> PathBuf {
    if let Some(path) = std::env::var_os("KEEL_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"),
        PathBuf::from,
    );
    let path = cache.join("keel/venv/bin/st");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run ./scripts/test (it installs it), or set \
         KEEL_SCHEMATHESIS to an `st` binary",
        path.display()
    );
    path
}

/// Runs schemathesis against `app` with `headers` on the operations whose path matches
/// `include` and not `exclude`; fails the test with its report unless every check passed.
async fn contract(app: &TestApp, headers: &[String], include: &str, exclude: &str) -> Coverage {
    // schemathesis keeps a cache of failures (with the requests that made them) in its
    // working directory: a directory of the run's own, gone with it, so no run replays
    // another's failures and nothing lands in the checkout.
    let work = tempfile::tempdir().expect("temp dir");
    let events = work.path().join("events.ndjson");
    let mut cmd = tokio::process::Command::new(st());
    cmd.current_dir(work.path())
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        // One worker: hypothesis' shared caches are not safe across its threads, and nextest
        // already runs tests side by side.
        .args(["--workers", "1"])
        .args(["--include-path-regex", include])
        .args(["--exclude-path-regex", exclude])
        .args(["--output-truncate", "false"])
        .args(["--warnings", "off"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&events)
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("KEEL_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .expect("schemathesis finishes within its bound")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found contract failures ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let coverage = Coverage::read(&events);
    assert!(coverage.cases > 0, "schemathesis ran no case:\n{report}");
    // Shown with `--no-capture` (the figures of the note).
    eprintln!(
        "schemathesis: {} operations, {} cases, {} operations answered 2xx at least once",
        coverage.operations.len(),
        coverage.cases,
        coverage.succeeded.len()
    );
    coverage
}

/// What a run exercised, read from schemathesis' event stream.
#[derive(Debug, Default)]
struct Coverage {
    operations: std::collections::BTreeSet<String>,
    succeeded: std::collections::BTreeSet<String>,
    cases: usize,
}

impl Coverage {
    fn read(path: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(path).expect("schemathesis' events");
        let mut c = Self::default();
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).expect("an NDJSON event");
            let Some(recorder) = event.get("ScenarioFinished").map(|f| &f["recorder"]) else {
                continue;
            };
            let label = recorder["label"].as_str().unwrap_or_default().to_owned();
            // The stateful phase reports its sequences under one label; their requests are
            // counted as cases, and their operations come from the other phases.
            let is_operation =
                label.starts_with(|c: char| c.is_ascii_uppercase()) && label.contains(" /");
            for interaction in recorder["interactions"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, i)| i)
            {
                c.cases += 1;
                if !is_operation {
                    continue;
                }
                c.operations.insert(label.clone());
                let status = interaction["response"]["status_code"].as_u64().unwrap_or(0);
                if (200..300).contains(&status) {
                    c.succeeded.insert(label.clone());
                }
            }
        }
        c
    }
}

/// A shop with its catalog, stock, taxes, shipping, promotions and one paid order.
async fn seeded_shop(app: &TestApp, prefix: &str) -> keel_testkit::shop::Shop {
    let shop = shop(app, prefix, 1_000).await;
    let (cart, _) = ready_cart(
        app,
        &shop,
        "USD",
        &[(&shop.tee, 1)],
        ny(),
        &shop.us_shipping,
        None,
    )
    .await;
    let order = created(checkout(app, &shop, &cart, "seed-checkout").await).await;
    let id = order["id"].as_str().expect("order id");
    created(pay(app, &shop, &cart, id, "seed-pay").await).await;
    shop
}

backend_tests! {
    async fn the_staff_api_answers_as_its_document_says(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = seeded_shop(&app, "st-staff").await;
        // Left out: what would end or change the owner's own session or credentials midway
        // (every later case would then test only the 401), and the shop settings (a generated
        // `require_mfa: true` would answer every later case 403 until the owner enrols).
        let covered = contract(
            &app,
            &[format!("Authorization: Bearer {}", shop.owner.access_token)],
            "^/(v1/(admin|auth|me)|livez|readyz|metrics|openapi|\\.well-known)",
            "^/v1/(auth/logout|me/(password|sessions|mfa)|admin/settings)",
        )
        .await;
        // Reads of what was seeded answer 200 (a run that only met 401s would not).
        for op in ["GET /v1/admin/products", "GET /v1/admin/orders", "GET /v1/me"] {
            assert!(covered.succeeded.contains(op), "{op} never answered 2xx: {:?}", covered.succeeded);
        }
    }

    async fn the_storefront_answers_as_its_document_says(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = seeded_shop(&app, "st-store").await;
        let signed_up = app
            .client
            .post(app.url("/v1/store/customers"))
            .header("keel-publishable-key", &shop.pk)
            .json(&serde_json::json!({"email": "shopper@example.com", "password": "plum-harbor-cinder-77-lantern"}))
            .send()
            .await
            .expect("sign-up reaches the server");
        let customer = created(signed_up).await;
        let token = customer["tokens"]["access_token"].as_str().expect("customer token");
        let covered = contract(
            &app,
            &[format!("Keel-Publishable-Key: {}", shop.pk), format!("Authorization: Bearer {token}")],
            "^/v1/store",
            "^/v1/store/(auth/logout|me/(password|mfa))",
        )
        .await;
        for op in ["GET /v1/store/products", "GET /v1/store/me", "POST /v1/store/carts"] {
            assert!(covered.succeeded.contains(op), "{op} never answered 2xx: {:?}", covered.succeeded);
        }
    }
}
