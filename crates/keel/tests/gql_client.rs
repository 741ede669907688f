//! An independent GraphQL client (PyPI `gql`, installed by `scripts/test` into the contract
//! tools' virtualenv) against a running Keel, once per backend: a query and a mutation on both
//! schemas over HTTP, and a subscription on each over WebSocket (`graphql-transport-ws`) that
//! receives the events of an order placed and paid over REST, exactly once and in order.

use keel_testkit::{
    Backend, backend_tests, contract_tool,
    shop::{self, created},
    spawn_app_with,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

backend_tests! {
    async fn gql_runs_queries_mutations_and_subscriptions_on_both_schemas(backend: Backend) {
        let app = spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
            raw.webhooks.relay_interval_ms = 50;
        })
        .await;
        let s = shop::shop(&app, "gql-py", 10).await;
        // The storefront subscription follows an order of its own shopper.
        let (cart, _) = shop::ready_cart(&app, &s, "USD", &[(&s.mug, 1)], shop::ny(), &s.us_shipping, None).await;
        let theirs = created(shop::checkout(&app, &s, &cart, "py-first").await).await;
        let theirs = theirs["id"].as_str().expect("id").to_owned();

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gql/client.py");
        let mut child = tokio::process::Command::new(contract_tool("python"))
            .args([script, &app.base_url, &s.owner.access_token, &s.pk, &cart.secret, &theirs])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the gql client starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = async || -> Value {
            let line = tokio::time::timeout(std::time::Duration::from_mins(1), lines.next_line())
                .await
                .expect("the client answers within the test's bound")
                .expect("read")
                .expect("the client goes on");
            serde_json::from_str(&line).expect("a JSON line")
        };

        let q = next().await;
        assert_eq!(q["kind"], "admin_query");
        let product = &q["value"]["products"]["edges"][0]["node"];
        let prices = product["variants"][0]["prices"].as_array().expect("prices");
        assert!(prices.contains(&serde_json::json!({"amount": 1999, "currency": "USD"})), "{q}");
        let m = next().await;
        assert_eq!(m["value"]["createProduct"]["title"], "Cap", "{m}");
        assert_eq!(m["value"]["createProduct"]["variants"][0]["prices"][0]["amount"], 1250);
        let sq = next().await;
        assert_eq!(sq["kind"], "store_query");
        assert!(sq["value"]["products"]["edges"].as_array().is_some_and(|e| !e.is_empty()));
        let sm = next().await;
        assert_eq!(sm["value"]["createCart"]["status"], "open", "{sm}");
        assert_eq!(sm["value"]["createCart"]["total"], serde_json::json!({"amount": 0, "currency": "USD"}));
        assert_eq!(next().await["kind"], "ready");

        // Over REST: an order placed, then the shopper's first order paid.
        let (other, _) = shop::ready_cart(&app, &s, "USD", &[(&s.tee, 1)], shop::ny(), &s.us_shipping, None).await;
        let placed = created(shop::checkout(&app, &s, &other, "py-second").await).await;
        let placed = placed["id"].as_str().expect("id").to_owned();
        let paid = shop::pay(&app, &s, &cart, &theirs, "py-pay").await;
        assert_eq!(paid.status(), 201);

        let mut admin = Vec::new();
        let mut store = Vec::new();
        loop {
            let line = next().await;
            match line["kind"].as_str() {
                Some("admin_event") => admin.push(line["value"]["orderEvents"].clone()),
                Some("store_event") => store.push(line["value"]["orderStatus"].clone()),
                Some("done") => break,
                other => panic!("unexpected {other:?}: {line}"),
            }
        }
        assert_eq!(admin.len(), 2, "exactly the two events: {admin:?}");
        assert_eq!(admin[0]["type"], "order.placed");
        assert_eq!(admin[0]["data"]["order_id"], placed.as_str());
        assert_eq!(admin[1]["type"], "order.paid");
        assert_eq!(admin[1]["data"]["order_id"], theirs.as_str());
        assert_eq!(store.len(), 1);
        assert_eq!(store[0]["type"], "order.paid");
        assert_eq!(store[0]["orderId"], theirs.as_str());
        let status = child.wait().await.expect("the client ends");
        assert!(status.success());
    }
}
