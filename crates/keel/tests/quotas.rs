//! Quotas per shop over real HTTP, once per backend (issue 23): each quota refuses exactly the
//! one past it with `403 quota_exceeded` naming it and creates nothing, concurrent creations
//! never pass it (the store enforces it where the rows are written), and a shop's own quota
//! (`keel tenant quotas`, the operator's CLI) replaces the default for that shop alone.

use keel_testkit::{Backend, TestApp, assert_problem, backend_tests, shop::json, spawn_app_with};
use reqwest::{Method, StatusCode};

async fn app(backend: Backend, configure: impl FnOnce(&mut keel::config::RawQuotas)) -> TestApp {
    spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
        // Webhook endpoints on loopback (never connected to here).
        raw.webhooks.allow_http = true;
        raw.webhooks.allow_cidrs = "127.0.0.1/32".into();
        configure(&mut raw.quotas);
    })
    .await
}

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.send_as(Method::POST, path, token, Some(body)).await
}

fn product(handle: &str, skus: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "title": handle, "handle": handle, "status": "active",
        "variants": skus.iter().map(|s| serde_json::json!({"sku": s, "prices": [{"amount": 100, "currency": "USD"}]})).collect::<Vec<_>>(),
    })
}

/// The refusal names the quota and says nothing was created.
async fn refused(res: reqwest::Response, quota: &str) {
    let body = assert_problem(res, 403, "quota_exceeded").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(&quota.replace('_', " ")), "{detail}");
}

async fn count(app: &TestApp, token: &str, path: &str) -> usize {
    json(app.get_as(path, token).await).await["data"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `keel tenant quotas` (the operator's CLI) against the app's database.
async fn operator(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["tenant", "quotas"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    app.operator_cli(env!("CARGO_BIN_EXE_keel"), &args).await
}

backend_tests! {
    /// Every quota: the shop makes exactly as many as it allows; the next is refused, named,
    /// and not made.
    async fn each_quota_refuses_exactly_the_one_past_it(backend: Backend) {
        let app = app(backend, |q| {
            q.products = "1".into();
            q.variants = "2".into();
            q.stock_locations = "1".into();
            q.webhook_endpoints = "1".into();
            // The storefront's publishable key is one.
            q.api_keys = "2".into();
            // The owner is one.
            q.staff_users = "2".into();
            q.open_carts = "1".into();
        })
        .await;
        let (owner, pk) = app.shop_with_storefront("quota-each").await;
        let t = owner.access_token.as_str();

        let first = post(&app, t, "/v1/admin/products", product("one", &["A", "B"])).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let id = json(first).await["id"].as_str().expect("id").to_owned();
        refused(post(&app, t, "/v1/admin/products", product("two", &["C"])).await, "products").await;
        assert_eq!(count(&app, t, "/v1/admin/products").await, 1, "nothing was created");
        refused(post(&app, t, &format!("/v1/admin/products/{id}/variants"), serde_json::json!({"sku": "D", "prices": [{"amount": 100, "currency": "USD"}]})).await, "variants").await;
        // At its quotas the shop still edits what it has (rewriting its variants is no new row).
        let edited = app
            .client
            .patch(app.url(&format!("/v1/admin/products/{id}")))
            .bearer_auth(t)
            .header("if-match", "\"v1\"")
            .json(&serde_json::json!({"title": "One, renamed"}))
            .send()
            .await
            .expect("send");
        assert_eq!(edited.status(), StatusCode::OK);

        assert_eq!(post(&app, t, "/v1/admin/stock-locations", serde_json::json!({"name": "Main"})).await.status(), StatusCode::CREATED);
        refused(post(&app, t, "/v1/admin/stock-locations", serde_json::json!({"name": "Second"})).await, "stock_locations").await;

        assert_eq!(post(&app, t, "/v1/admin/webhook-endpoints", serde_json::json!({"url": "http://127.0.0.1:9/a", "event_types": ["order.*"]})).await.status(), StatusCode::CREATED);
        refused(post(&app, t, "/v1/admin/webhook-endpoints", serde_json::json!({"url": "http://127.0.0.1:9/b", "event_types": ["order.*"]})).await, "webhook_endpoints").await;

        let key = post(&app, t, "/v1/admin/api-keys", serde_json::json!({"name": "erp", "scopes": ["orders:read"]})).await;
        assert_eq!(key.status(), StatusCode::CREATED);
        refused(post(&app, t, "/v1/admin/api-keys", serde_json::json!({"name": "erp2", "scopes": ["orders:read"]})).await, "api_keys").await;
        // A revoked key no longer counts.
        let key_id = json(key).await["key"]["id"].as_str().expect("id").to_owned();
        assert!(app.send_as(Method::DELETE, &format!("/v1/admin/api-keys/{key_id}"), t, None).await.status().is_success());
        assert_eq!(post(&app, t, "/v1/admin/api-keys", serde_json::json!({"name": "erp3", "scopes": ["orders:read"]})).await.status(), StatusCode::CREATED);

        assert_eq!(post(&app, t, "/v1/admin/users", serde_json::json!({"email": "one@quota.test", "role": "viewer"})).await.status(), StatusCode::CREATED);
        refused(post(&app, t, "/v1/admin/users", serde_json::json!({"email": "two@quota.test", "role": "viewer"})).await, "staff_users").await;

        let cart = || app.store_request(Method::POST, &pk, "/v1/store/carts", None, Some(serde_json::json!({"currency": "USD"})));
        assert_eq!(cart().await.status(), StatusCode::CREATED);
        refused(cart().await, "open_carts").await;
    }

    /// Twenty concurrent product creations under a quota of five: exactly five are made.
    async fn concurrent_creations_never_pass_a_quota(backend: Backend) {
        let app = app(backend, |q| q.products = "5".into()).await;
        let (_, owner) = app.owner_with_tokens("quota-race").await;
        let t = owner.access_token.as_str();
        let answers = futures_util::future::join_all((0..20).map(|i| {
            let app = &app;
            async move { post(app, t, "/v1/admin/products", product(&format!("p{i}"), &[&format!("SKU{i}")])).await.status() }
        }))
        .await;
        assert_eq!(answers.iter().filter(|s| **s == StatusCode::CREATED).count(), 5, "{answers:?}");
        assert_eq!(answers.iter().filter(|s| **s == StatusCode::FORBIDDEN).count(), 15, "{answers:?}");
        assert_eq!(count(&app, t, "/v1/admin/products?limit=100").await, 5);
    }

    /// The operator raises one shop's quota: that shop may make more, another keeps the
    /// default; clearing it gives the default back.
    async fn a_shops_own_quota_replaces_the_default_for_it_alone(backend: Backend) {
        let app = app(backend, |q| q.products = "1".into()).await;
        let (a, a_tokens) = app.owner_with_tokens("quota-own-a").await;
        let (_, b_tokens) = app.owner_with_tokens("quota-own-b").await;
        let shown = operator(&app, &[&a.tenant_id, "--set", "products=3"]).await;
        assert_eq!(shown["quotas"]["products"], serde_json::json!({"max": 3, "shop_own": true}));
        assert_eq!(shown["quotas"]["stock_locations"]["shop_own"], false);
        for i in 0..3 {
            assert_eq!(post(&app, &a_tokens.access_token, "/v1/admin/products", product(&format!("a{i}"), &[&format!("A{i}")])).await.status(), StatusCode::CREATED);
        }
        refused(post(&app, &a_tokens.access_token, "/v1/admin/products", product("a3", &["A3"])).await, "products").await;
        assert_eq!(post(&app, &b_tokens.access_token, "/v1/admin/products", product("b0", &["B0"])).await.status(), StatusCode::CREATED);
        refused(post(&app, &b_tokens.access_token, "/v1/admin/products", product("b1", &["B1"])).await, "products").await;
        let cleared = operator(&app, &[&a.tenant_id, "--clear", "products"]).await;
        assert_eq!(cleared["quotas"]["products"], serde_json::json!({"max": 1, "shop_own": false}));
    }
}
