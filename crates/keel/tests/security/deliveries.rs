//! Finding 3: one shop's slow webhook endpoint must not stall anyone else's deliveries;
//! an endpoint that keeps failing is paused by its circuit without spending its messages'
//! retries. Finding 8: deliveries never go through a proxy from the environment.

use std::time::{Duration, Instant};

use keel_testkit::{
    Backend, TestApp, backend_tests,
    receiver::{fast_webhooks, receiver, receiver_with_delay, verifies},
    spawn_app_with,
};

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let res = app
        .send_as(reqwest::Method::POST, path, token, Some(body))
        .await;
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.expect("JSON")
}

/// `n` products in batches of at most 1000: one `product.created` event each.
async fn products(app: &TestApp, token: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| serde_json::json!({"title": format!("Item {i}"), "handle": format!("item-{i}"), "status": "draft"}))
            .collect();
        post(
            app,
            token,
            "/v1/admin/products/batch",
            serde_json::json!({"products": batch}),
        )
        .await;
    }
}

backend_tests! {
    async fn a_slow_endpoint_with_a_backlog_does_not_delay_another_shops_deliveries(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            fast_webhooks(c);
            // The production pace: one claim per second, attempts time out after 15 s.
            c.webhooks.delivery_interval_ms = 1_000;
            c.webhooks.timeout_ms = 15_000;
        })
        .await;
        // Shop A: its endpoint answers only after the timeout, and 2,000 messages wait for it.
        let (_, a) = app.owner_with_tokens("slow").await;
        let mut slow = receiver_with_delay(Vec::new(), Duration::from_secs(20)).await;
        post(&app, &a.access_token, "/v1/admin/webhook-endpoints", serde_json::json!({"url": slow.url, "event_types": ["product.*"]})).await;
        products(&app, &a.access_token, 2_000).await;
        // A's four slots are taken by attempts that will hang for the whole timeout.
        for _ in 0..4 {
            slow.next().await;
        }
        // Shop B's message is delivered at once.
        let (_, b) = app.owner_with_tokens("fast").await;
        let mut fast = receiver(Vec::new()).await;
        let hook = post(&app, &b.access_token, "/v1/admin/webhook-endpoints", serde_json::json!({"url": fast.url, "event_types": ["stock_location.created"]})).await;
        let secret = hook["secret"].as_str().expect("secret").to_owned();
        let started = Instant::now();
        post(&app, &b.access_token, "/v1/admin/stock-locations", serde_json::json!({"name": "Main"})).await;
        let got = fast.next().await;
        let waited = started.elapsed();
        assert!(verifies(&secret, &got));
        assert_eq!(got.json()["type"], "stock_location.created");
        // Two delivery intervals plus B's own answer time (immediate).
        assert!(waited < Duration::from_secs(2), "B waited {waited:?} behind A's backlog");
        assert!(slow.try_next().is_none(), "A still has only its four slots");
    }

    async fn a_shop_with_many_slow_endpoints_cannot_take_every_delivery_slot(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            fast_webhooks(c);
            c.webhooks.delivery_interval_ms = 1_000;
            c.webhooks.delivery_batch = 10;
            c.webhooks.shop_max_in_flight = 6;
            c.webhooks.timeout_ms = 15_000;
        })
        .await;
        // Shop A: three endpoints whose receivers succeed, slowly (5 s each), with a backlog.
        let (_, a) = app.owner_with_tokens("greedy").await;
        let mut slow = Vec::new();
        for _ in 0..3 {
            let r = receiver_with_delay(Vec::new(), Duration::from_secs(5)).await;
            post(&app, &a.access_token, "/v1/admin/webhook-endpoints", serde_json::json!({"url": r.url, "event_types": ["product.*"]})).await;
            slow.push(r);
        }
        products(&app, &a.access_token, 50).await;
        // The shop gets its six places (of the node's ten), and no more.
        let mut arrived = 0;
        while arrived < 6 {
            for r in &mut slow {
                while r.try_next().is_some() {
                    arrived += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        // Shop B is served at once from the places left.
        let (_, b) = app.owner_with_tokens("other").await;
        let mut fast = receiver(Vec::new()).await;
        post(&app, &b.access_token, "/v1/admin/webhook-endpoints", serde_json::json!({"url": fast.url, "event_types": ["stock_location.created"]})).await;
        let started = Instant::now();
        post(&app, &b.access_token, "/v1/admin/stock-locations", serde_json::json!({"name": "Main"})).await;
        assert_eq!(fast.next().await.json()["type"], "stock_location.created");
        assert!(started.elapsed() < Duration::from_secs(2), "B waited {:?}", started.elapsed());
        for r in &mut slow {
            while r.try_next().is_some() {
                arrived += 1;
            }
        }
        assert_eq!(arrived, 6, "A never held more than its six");
    }

    async fn an_endpoint_that_keeps_failing_is_paused_without_spending_its_retries(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            fast_webhooks(c);
            c.webhooks.max_in_flight = 1;
            c.webhooks.circuit_failures = 3;
            c.webhooks.circuit_pause_ms = 600_000;
            c.webhooks.retry_schedule = "60s".into();
        })
        .await;
        let (_, owner) = app.owner_with_tokens("circuit").await;
        // The receiver fails every request.
        let mut failing = receiver(vec![500; 100]).await;
        let hook = post(&app, &owner.access_token, "/v1/admin/webhook-endpoints", serde_json::json!({"url": failing.url, "event_types": ["product.*"]})).await;
        let id = hook["endpoint"]["id"].as_str().expect("id").to_owned();
        products(&app, &owner.access_token, 10).await;
        for _ in 0..3 {
            failing.next().await;
        }
        // Three failures in a row open the circuit: the endpoint is paused, and the seven
        // other messages are neither attempted nor charged a retry.
        let endpoint = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let e: serde_json::Value = app.get_as(&format!("/v1/admin/webhook-endpoints/{id}"), &owner.access_token).await.json().await.expect("endpoint");
                if e["consecutive_failures"] == 3 {
                    return e;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the failures are recorded");
        assert!(endpoint["paused_until"].is_string(), "{endpoint}");
        assert_eq!(endpoint["enabled"], true, "paused, not disabled");
        let messages: serde_json::Value = app.get_as(&format!("/v1/admin/webhook-endpoints/{id}/messages?limit=100"), &owner.access_token).await.json().await.expect("messages");
        let attempts: Vec<i64> = messages["data"].as_array().expect("data").iter().map(|m| m["attempts"].as_i64().expect("attempts")).collect();
        assert_eq!(attempts.iter().filter(|a| **a == 0).count(), 7, "{attempts:?}");
        assert_eq!(attempts.iter().filter(|a| **a == 1).count(), 3, "{attempts:?}");
        // While open, nothing more is sent, at the next claims either.
        let before = app.get("/livez").await;
        assert_eq!(before.status(), 200);
        assert!(failing.try_next().is_none());
    }

    async fn a_shop_cannot_create_endpoints_without_bound(backend: Backend) {
        // Every claim probes each enabled endpoint: a shop creating endpoints without bound
        // would slow every other shop's deliveries. The limit holds per shop.
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            fast_webhooks(c);
            c.webhooks.max_endpoints = 3;
        })
        .await;
        let (_, a) = app.owner_with_tokens("hoarder").await;
        let r = receiver(Vec::new()).await;
        let body = serde_json::json!({"url": r.url, "event_types": ["product.*"]});
        let mut ids = Vec::new();
        for _ in 0..3 {
            let hook = post(&app, &a.access_token, "/v1/admin/webhook-endpoints", body.clone()).await;
            ids.push(hook["endpoint"]["id"].as_str().expect("id").to_owned());
        }
        let refused = app.send_as(reqwest::Method::POST, "/v1/admin/webhook-endpoints", &a.access_token, Some(body.clone())).await;
        keel_testkit::assert_problem(refused, 409, "too_many_endpoints").await;
        let listed: serde_json::Value = app.get_as("/v1/admin/webhook-endpoints?limit=100", &a.access_token).await.json().await.expect("list");
        assert_eq!(listed["data"].as_array().map(Vec::len), Some(3), "the refused one changed nothing");
        // Another shop has its own limit; a deleted endpoint frees its place.
        let (_, b) = app.owner_with_tokens("neighbour").await;
        post(&app, &b.access_token, "/v1/admin/webhook-endpoints", body.clone()).await;
        let deleted = app.send_as(reqwest::Method::DELETE, &format!("/v1/admin/webhook-endpoints/{}", ids[0]), &a.access_token, None).await;
        assert!(deleted.status().is_success(), "{}", deleted.status());
        post(&app, &a.access_token, "/v1/admin/webhook-endpoints", body).await;
    }

    async fn deliveries_ignore_proxies_in_the_environment(backend: Backend) {
        deliveries_bypass_an_environment_proxy(backend).await;
    }
}

/// `keel serve` (a child process) with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` pointing at
/// a listener the test runs: the delivery goes straight to the receiver, the proxy sees no
/// connection (a proxy would resolve the host again, outside the SSRF guard).
async fn deliveries_bypass_an_environment_proxy(backend: Backend) {
    keel_testkit::install_crypto_provider();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = proxy.accept().await {
            let _ = seen_tx.send(());
        }
    });
    let db = keel_testkit::TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let database = db.url();
    let secret = keel::secrets::generate();
    let base: Vec<(&str, &str)> = vec![
        ("KEEL_DATABASE_URL", &database),
        ("KEEL_SECRET_KEY", &secret),
    ];
    let keel = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"));
        c.args(args)
            .env_clear()
            .envs(base.iter().copied())
            .current_dir(dir.path());
        c
    };
    let migrated = keel(&["migrate"]).output().await.expect("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let mut env = base.clone();
    env.extend([
        ("KEEL_WEBHOOKS__ALLOW_HTTP", "true"),
        ("KEEL_WEBHOOKS__ALLOW_CIDRS", "127.0.0.1/32"),
        ("KEEL_WEBHOOKS__RELAY_INTERVAL_MS", "50"),
        ("KEEL_WEBHOOKS__DELIVERY_INTERVAL_MS", "50"),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("https_proxy", proxy_url.as_str()),
        ("all_proxy", proxy_url.as_str()),
    ]);
    let (_child, addr) =
        keel_testkit::serve_process(env!("CARGO_BIN_EXE_keel"), dir.path(), &env).await;
    let out = keel(&[
        "tenant",
        "create",
        "--name",
        "Proxy",
        "--slug",
        "proxy",
        "--owner-email",
        "owner@proxy.test",
    ])
    .output()
    .await
    .expect("tenant create");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = owner_token(&client, &addr, &String::from_utf8_lossy(&out.stdout)).await;
    let mut hooks = receiver(Vec::new()).await;
    let res = client
        .post(format!("http://{addr}/v1/admin/webhook-endpoints"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"url": hooks.url, "event_types": ["stock_location.created"]}))
        .send()
        .await
        .expect("endpoint");
    assert_eq!(res.status(), 201);
    let res = client
        .post(format!("http://{addr}/v1/admin/stock-locations"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Main"}))
        .send()
        .await
        .expect("location");
    assert_eq!(res.status(), 201);
    let got = hooks.next().await;
    assert_eq!(
        got.json()["type"],
        "stock_location.created",
        "delivered directly"
    );
    assert!(seen.try_recv().is_err(), "the proxy saw no connection");
}

/// Redeems the setup token `keel tenant create` printed; answers the owner's access token.
async fn owner_token(client: &reqwest::Client, addr: &str, printed: &str) -> String {
    let setup = printed
        .split_whitespace()
        .find(|w| w.starts_with("st_"))
        .unwrap_or_else(|| panic!("{printed}"));
    let tokens: serde_json::Value = client
        .post(format!("http://{addr}/v1/auth/setup"))
        .json(&serde_json::json!({"setup_token": setup, "password": keel_testkit::OWNER_PASSWORD}))
        .send()
        .await
        .expect("setup")
        .json()
        .await
        .expect("tokens");
    tokens["access_token"].as_str().expect("access").to_owned()
}
