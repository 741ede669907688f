//! A client generated from `/openapi.json` runs a whole merchant flow (issue 20): the served
//! document is handed to `openapi-python-client` (PyPI, an established generator; installed by
//! `scripts/test` into the suite's virtualenv), and `tests/client/merchant_flow.py` drives the
//! generated, typed package through setup, catalog, stock, pricing, a storefront cart,
//! checkout, payment, fulfilment, shipping, delivery, a refund and a webhook endpoint, over real
//! HTTP on both backends. Every answer must parse into its typed model and render the same JSON
//! back. The generated code lives in the test's temp dir, never in the repository.

use std::{path::Path, time::Duration};

use keel_testkit::{
    Backend, backend_tests, contract_tool,
    receiver::{fast_webhooks, receiver},
    spawn_app_with,
};

/// Upper bounds against a hang, not synchronisation: generating takes seconds, the flow less.
const GENERATE_LIMIT: Duration = Duration::from_mins(2);
const FLOW_LIMIT: Duration = Duration::from_mins(2);

fn client_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client"))
}

/// Runs `cmd`, failing the test with its output unless it succeeds; answers its stdout.
async fn run(mut cmd: tokio::process::Command, limit: Duration, what: &str) -> String {
    let out = tokio::time::timeout(limit, cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within its bound"))
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

backend_tests! {
    async fn a_client_generated_from_the_document_runs_a_whole_merchant_flow(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), fast_webhooks).await;
        let owner = app.create_owner("client").await;
        let mut hooks = receiver(Vec::new()).await;
        let work = tempfile::tempdir().expect("temp dir");

        // The document as this server serves it (the contract test ties it to docs/openapi.json).
        let doc = app.get("/openapi.json").await.bytes().await.expect("the document");
        let doc_path = work.path().join("openapi.json");
        std::fs::write(&doc_path, &doc).expect("write the document");
        let mut generate = tokio::process::Command::new(contract_tool("openapi-python-client"));
        generate
            .current_dir(work.path())
            // A piece of the document the generator cannot read is a failure, not a warning.
            .args(["generate", "--fail-on-warning", "--meta", "none", "--path"])
            .arg(&doc_path)
            .arg("--output-path")
            .arg(work.path().join("keel_client"))
            .arg("--config")
            .arg(client_dir().join("generator.yaml"));
        run(generate, GENERATE_LIMIT, "openapi-python-client").await;

        let mut flow = tokio::process::Command::new(contract_tool("python"));
        flow.current_dir(work.path())
            .env("PYTHONPATH", work.path())
            // No bytecode cache written beside the checked-in script.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // Its checks are asserts, which -O would remove.
            .env_remove("PYTHONOPTIMIZE")
            .env("KEEL_SETUP_TOKEN", &owner.setup_token)
            .env("KEEL_OPENAPI_DOCUMENT", &doc_path)
            .arg(client_dir().join("merchant_flow.py"))
            .args([app.url(""), owner.slug.clone(), hooks.url.clone()]);
        let stdout = run(flow, FLOW_LIMIT, "the merchant flow").await;
        let order = stdout.lines().last().expect("the flow prints the order's id").trim().to_owned();

        // The endpoint the flow configured gets the order's events, `order.paid` among them.
        loop {
            let delivery = hooks.next().await.json();
            if delivery["type"] == "order.paid" {
                assert_eq!(delivery["data"]["order_id"], order.as_str(), "{delivery}");
                break;
            }
        }
    }
}
