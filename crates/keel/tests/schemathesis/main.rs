//! Property-based contract tests: schemathesis (PyPI; `scripts/test` installs it into the
//! suite's virtualenv) generates requests from `/openapi.json` and checks every answer of a
//! running Keel against the document: no 5xx, every status, media type and header declared,
//! every body valid against its schema. Over real HTTP on both backends, for the staff API (the
//! owner's token) and the storefront (a publishable key and a customer's token), with the
//! shop's catalog, stock and a paid order seeded, and fixtures (real ids, cart secrets,
//! one-time tokens) so that operations reach their success paths, not only their 404s. A failure prints schemathesis' report, with
//! a `curl` line that reproduces each failing request.

mod fixtures;

use std::time::Duration;

use fixtures::{Fixtures, paid_order, staff_fixtures, store_fixtures};
use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, backend_tests, contract_tool,
    receiver::{fast_webhooks, receiver},
    shop::{created, shop},
    spawn_app_with,
};

/// The checks the contract must pass (schemathesis' names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
/// Cases per operation and phase: a bound on the suite's time, not a sample size to tune.
const MAX_EXAMPLES: &str = "5";
/// An upper bound against a hang, not a synchronisation: a run takes well under a minute.
const RUN_LIMIT: Duration = Duration::from_mins(10);

/// Runs schemathesis against `app` with `headers` on the operations whose path matches
/// `include`; fails the test with its report unless every check passed.
async fn contract(
    app: &TestApp,
    headers: &[(&str, &str)],
    include: &str,
    fixtures: &mut Fixtures,
) -> Coverage {
    for (name, value) in headers {
        fixtures.headers.insert((*name).to_owned(), (*value).into());
    }
    // schemathesis keeps a cache of failures (with the requests that made them) in its
    // working directory: a directory of the run's own, gone with it, so no run replays
    // another's failures and nothing lands in the checkout. Its configuration file there
    // carries the fixtures.
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("schemathesis.toml"), fixtures.toml()).expect("config");
    let events = work.path().join("events.ndjson");
    let mut cmd = tokio::process::Command::new(contract_tool("st"));
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
        // Event streams answer for as long as the client listens (their own suite,
        // `tests/realtime.rs`, reads them as a client would).
        .args(["--exclude-path-regex", "/stream$"])
        .args(["--output-truncate", "false"])
        .args(["--warnings", "off"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&events)
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("KEEL_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
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
    for op in coverage.operations.difference(&coverage.succeeded) {
        eprintln!("  no 2xx: {op} {:?}", coverage.statuses.get(op));
    }
    // Every fixture reached schemathesis: each operation given one that takes no body (whose
    // success does not hang on a generated body) answered 2xx at least once.
    let doc: serde_json::Value = app
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("the document");
    for (operation, ..) in &fixtures.operations {
        let (method, path) = operation.split_once(' ').expect("METHOD /path");
        let declared = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            declared.is_object(),
            "the fixture's operation {operation} is not in the document"
        );
        if declared.get("requestBody").is_none() {
            assert!(
                coverage.succeeded.contains(operation),
                "{operation} has fixtures but never answered 2xx: {:?}",
                coverage.statuses.get(operation)
            );
        }
    }
    coverage
}

/// What a run exercised, read from schemathesis' event stream.
#[derive(Debug, Default)]
struct Coverage {
    operations: std::collections::BTreeSet<String>,
    succeeded: std::collections::BTreeSet<String>,
    /// The statuses each operation answered, for the report.
    statuses: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>,
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
                c.statuses.entry(label.clone()).or_default().insert(status);
                if (200..300).contains(&status) {
                    c.succeeded.insert(label.clone());
                }
            }
        }
        c
    }
}

/// Keel as the contract runs need it: webhooks open to the loopback receivers, and a
/// second-factor lockout the fuzzer's hundreds of wrong codes cannot reach (else the MFA
/// fixtures would meet only 429; the lockout has its own tests, `keel::mfa`).
async fn contract_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        keel_testkit::utoipa_axum::router::OpenApiRouter::new(),
        |raw| {
            fast_webhooks(raw);
            raw.auth.second_factor_max = 1_000_000;
            // A provider no case can reach (nothing listens on the discard port): a shop the
            // fuzzer switches on gets 503 `payment_provider_unavailable` at once.
            raw.payments.stripe.api_base = "http://127.0.0.1:9".into();
            raw.payments.stripe.retry_delays = "1ms".into();
        },
    )
    .await
}

/// A shop with its catalog, stock, taxes, shipping, promotions and one paid order.
async fn seeded_shop(app: &TestApp, prefix: &str) -> keel_testkit::shop::Shop {
    let shop = shop(app, prefix, 1_000).await;
    paid_order(app, &shop).await;
    shop
}

backend_tests! {
    async fn the_staff_api_answers_as_its_document_says(backend: Backend) {
        let app = contract_app(backend).await;
        let shop = seeded_shop(&app, "st-staff").await;
        let (mut hooks, mut mail) = (receiver(Vec::new()).await, receiver(Vec::new()).await);
        let mut fixtures = staff_fixtures(&app, &shop, &mut hooks, &mut mail).await;
        // Every operation: what would end or change the owner's own session or credentials,
        // or set the shop's policies, runs as another principal (`account_fixtures`).
        let covered = contract(
            &app,
            &[("Authorization", &format!("Bearer {}", shop.owner.access_token))],
            "^/(v1/(admin|auth|me|hooks)|livez|readyz|metrics|openapi|\\.well-known)",
            &mut fixtures,
        )
        .await;
        // Reads of what was seeded answer 200 (a run that only met 401s would not).
        // ...and so do the id routes given a seeded record (a run whose fixtures did not reach
        // schemathesis would meet only 404s there).
        for op in ["GET /v1/admin/products", "GET /v1/admin/orders", "GET /v1/me", "GET /v1/admin/products/{id}", "GET /v1/admin/orders/{id}"] {
            assert!(covered.succeeded.contains(op), "{op} never answered 2xx: {:?}", covered.succeeded);
        }
    }

    async fn the_storefront_answers_as_its_document_says(backend: Backend) {
        let app = contract_app(backend).await;
        let shop = seeded_shop(&app, "st-store").await;
        let signed_up = app
            .client
            .post(app.url("/v1/store/customers"))
            .header("keel-publishable-key", &shop.pk)
            .json(&serde_json::json!({"email": "shopper@example.com", "password": OWNER_PASSWORD}))
            .send()
            .await
            .expect("sign-up reaches the server");
        let customer = created(signed_up).await;
        let token = customer["tokens"]["access_token"].as_str().expect("customer token");
        let mut mail = receiver(Vec::new()).await;
        let mut fixtures = store_fixtures(&app, &shop, "shopper@example.com", &mut mail).await;
        let covered = contract(
            &app,
            &[("Keel-Publishable-Key", &shop.pk), ("Authorization", &format!("Bearer {token}"))],
            "^/v1/store",
            &mut fixtures,
        )
        .await;
        for op in ["GET /v1/store/products", "GET /v1/store/me", "POST /v1/store/carts", "GET /v1/store/carts/{id}", "GET /v1/store/orders/{id}"] {
            assert!(covered.succeeded.contains(op), "{op} never answered 2xx: {:?}", covered.succeeded);
        }
    }
}
