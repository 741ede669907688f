//! The HTTP suite: the real app over real HTTP, once per backend (`sqlite::*`, `postgres::*`).

use axum::{
    extract::Path,
    routing::{get, post},
};
use keel_http::{AppState, extract::Json};
use keel_testkit::{
    Backend, assert_problem, backend_tests, spawn_app, spawn_app_with,
    utoipa_axum::router::OpenApiRouter,
};
use serde::Deserialize;

/// A JSON route for exercising the extractor and middleware end to end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateItem {
    #[allow(dead_code)]
    name: String,
    quantity: u32,
}

fn test_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route(
            "/v1/test/items",
            post(|Json(item): Json<CreateItem>| async move {
                axum::Json(serde_json::json!({"quantity": item.quantity}))
            }),
        )
        .route(
            "/v1/test/items/{id}",
            get(|Path(id): Path<String>| async move { id }),
        )
        // Never completes: only the request timeout ends it.
        .route("/v1/test/stall", get(std::future::pending::<&'static str>))
        .route(
            "/v1/test/panic",
            get(|| async {
                if true {
                    panic!("secret=hunter2")
                } else {
                    "unreachable"
                }
            }),
        )
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn assert_security_headers(res: &reqwest::Response) {
    assert_eq!(header(res, "x-content-type-options"), "nosniff");
    assert_eq!(header(res, "x-frame-options"), "DENY");
    assert_eq!(header(res, "referrer-policy"), "no-referrer");
    assert!(header(res, "content-security-policy").starts_with("default-src 'none'"));
    assert_eq!(header(res, "cache-control"), "no-store");
    assert!(!header(res, "x-request-id").is_empty());
}

backend_tests! {
    async fn readyz_is_200_json_when_migrated(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/readyz").await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "content-type"), "application/json");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["database"]["status"], "ok");
        assert_eq!(body["database"]["migrations_applied"], body["database"]["migrations_expected"]);
    }

    async fn livez_is_200(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/livez").await;
        assert_eq!(res.status(), 200);
        assert_security_headers(&res);
        assert_eq!(res.json::<serde_json::Value>().await.expect("json")["status"], "ok");
    }

    async fn unknown_route_is_a_404_problem_with_security_headers(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/v1/nothing/here").await;
        assert_security_headers(&res);
        assert_problem(res, 404, "not_found").await;
    }

    async fn wrong_method_is_a_405_problem_with_allow(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.client.delete(app.url("/livez")).send().await.expect("send");
        assert!(header(&res, "allow").contains("GET"), "{:?}", res.headers());
        assert_security_headers(&res);
        assert_problem(res, 405, "method_not_allowed").await;
    }

    async fn body_over_the_limit_is_a_413_problem(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |c| c.body_limit_bytes = 1_024).await;
        // Declared length over the limit: refused before the body is read.
        let big = format!(r#"{{"name": "{}", "quantity": 1}}"#, "x".repeat(2_000));
        let res = app.post_raw("/v1/test/items", "application/json", big.clone()).await;
        assert_security_headers(&res);
        assert_problem(res, 413, "payload_too_large").await;
        // Chunked (no declared length): refused while reading.
        let chunks = futures_stream(big);
        let res = app.post_raw("/v1/test/items", "application/json", reqwest::Body::wrap_stream(chunks)).await;
        assert_problem(res, 413, "payload_too_large").await;
        // Exactly at the limit is accepted.
        let exact = format!(r#"{{"name": "{}", "quantity": 1}}"#, "x".repeat(1_024 - 27));
        assert_eq!(exact.len(), 1_024);
        assert_eq!(app.post_raw("/v1/test/items", "application/json", exact).await.status(), 200);
    }

    async fn malformed_json_is_a_400_problem(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |_| {}).await;
        let res = app.post_raw("/v1/test/items", "application/json", r#"{"name": "a", "quantity": "#).await;
        assert_security_headers(&res);
        assert_problem(res, 400, "malformed_json").await;
    }

    async fn invalid_fields_are_a_422_problem_with_pointers(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |_| {}).await;
        let res = app.post_raw("/v1/test/items", "application/json", r#"{"name": "a", "quantity": -3}"#).await;
        let body = assert_problem(res, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["pointer"], "/quantity", "{body}");
        assert!(body["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    async fn json_routes_refuse_other_content_types_with_415(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |_| {}).await;
        let res = app.post_raw("/v1/test/items", "text/plain", r#"{"name": "a", "quantity": 1}"#).await;
        assert_problem(res, 415, "unsupported_media_type").await;
    }

    async fn request_ids_are_echoed_when_sane_and_replaced_when_not(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.client.get(app.url("/livez")).header("x-request-id", "req-42.a_b").send().await.expect("send");
        assert_eq!(header(&res, "x-request-id"), "req-42.a_b");
        let res = app.client.get(app.url("/livez")).header("x-request-id", "evil\"id with spaces").send().await.expect("send");
        let id = header(&res, "x-request-id");
        assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let a = app.get("/livez").await;
        let b = app.get("/livez").await;
        assert_ne!(header(&a, "x-request-id"), header(&b, "x-request-id"));
    }

    async fn metrics_label_routes_by_template_and_unknown_paths_as_unmatched(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |_| {}).await;
        for id in ["a1", "b2", "c3"] {
            assert_eq!(app.get(&format!("/v1/test/items/{id}")).await.status(), 200);
        }
        for path in ["/x/secret-token-1", "/y/secret-token-2"] {
            assert_eq!(app.get(path).await.status(), 404);
        }
        let text = app.get("/metrics").await.text().await.expect("text");
        assert!(text.contains(r#"keel_http_requests_total{method="GET",route="/v1/test/items/{id}",status="2xx"} 3"#), "{text}");
        assert!(text.contains(r#"keel_http_requests_total{method="GET",route="unmatched",status="4xx"} 2"#), "{text}");
        assert!(text.contains(r#"keel_http_request_duration_seconds_count{method="GET",route="/v1/test/items/{id}",status="2xx"} 3"#), "{text}");
        assert!(text.contains(r#"keel_http_request_duration_seconds_bucket{method="GET",route="/v1/test/items/{id}",status="2xx",le="+Inf"} 3"#), "{text}");
        for raw in ["a1", "b2", "c3", "secret-token"] {
            assert!(!text.contains(raw), "raw path value {raw} leaked into labels");
        }
    }

    async fn slow_requests_end_in_a_503_timeout_problem(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |c| c.request_timeout_ms = 200).await;
        let res = app.get("/v1/test/stall").await;
        assert_security_headers(&res);
        let body = assert_problem(res, 503, "request_timeout").await;
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("200 ms")), "{body}");
    }

    async fn panics_are_a_generic_500_problem(backend: Backend) {
        let app = spawn_app_with(backend, test_routes(), |_| {}).await;
        let res = app.get("/v1/test/panic").await;
        assert_security_headers(&res);
        let body = assert_problem(res, 500, "internal").await;
        assert!(!body.to_string().contains("hunter2"), "{body}");
        // The server keeps serving.
        assert_eq!(app.get("/livez").await.status(), 200);
    }

    async fn openapi_document_is_3_1_and_describes_the_probes(backend: Backend) {
        let app = spawn_app(backend).await;
        let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        for path in ["/livez", "/readyz", "/metrics", "/v1/me", "/v1/admin/users", "/v1/admin/api-keys", "/v1/admin/events", "/.well-known/jwks.json"] {
            assert!(doc["paths"][path]["get"].is_object(), "GET {path} missing");
        }
        for path in ["/v1/auth/setup", "/v1/auth/login", "/v1/auth/mfa", "/v1/auth/refresh", "/v1/auth/logout", "/v1/me/password", "/v1/admin/users"] {
            assert!(doc["paths"][path]["post"].is_object(), "POST {path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["paths"]["/v1/me"]["get"]["security"].is_array(), "protected routes declare their scheme");
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    async fn docs_page_is_served_from_the_binary(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/docs/").await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "content-security-policy").contains("script-src 'self'"));
        let html = res.text().await.expect("html");
        assert!(html.contains("swagger-ui-bundle.js") && !html.contains("http"), "the page must load nothing remote");
        let js = app.get("/docs/swagger-ui-bundle.js").await;
        assert_eq!(js.status(), 200);
        assert!(js.bytes().await.expect("js").len() > 100_000);
        let init = app.get("/docs/swagger-initializer.js").await.text().await.expect("js");
        assert!(init.contains("/openapi.json"));
    }

    async fn graceful_stop_lets_an_in_flight_request_finish(backend: Backend) {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let entered = std::sync::Arc::new(tokio::sync::Notify::new());
        let (g, e) = (gate.clone(), entered.clone());
        let routes = OpenApiRouter::new().route("/v1/test/gated", get(move || {
            let (g, e) = (g.clone(), e.clone());
            async move { e.notify_one(); g.notified().await; "finished" }
        }));
        let app = spawn_app_with(backend, routes, |_| {}).await;
        let in_flight = tokio::spawn(app.client.get(app.url("/v1/test/gated")).send());
        entered.notified().await;
        let url = app.url("/livez");
        let addr = app.base_url.trim_start_matches("http://").to_owned();
        let client = app.client.clone();
        let stopping = tokio::spawn(app.stop());
        // Release the request only once shutdown has begun, i.e. the listener is closed.
        let mut closed = false;
        for _ in 0..10_000 {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(closed, "the listener closed after the stop signal");
        assert!(!in_flight.is_finished(), "the request is still in flight during shutdown");
        gate.notify_one();
        let res = in_flight.await.expect("join").expect("the in-flight request completes");
        assert_eq!(res.text().await.expect("body"), "finished");
        stopping.await.expect("join").expect("drained within the grace period");
        assert!(client.get(url).send().await.is_err(), "no longer accepting");
    }
}

/// A body sent in chunks with no declared length.
fn futures_stream(
    body: String,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(256)
        .map(|c| Ok(c.to_vec()))
        .collect();
    tokio_stream_iter(chunks)
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

#[tokio::test]
async fn postgres_without_migrations_is_not_ready() {
    let db = keel_testkit::TestDb::fresh(Backend::Postgres).await;
    let raw = keel_testkit::test_config(&db);
    let app = keel_testkit::spawn_on(db, raw, false, OpenApiRouter::new()).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["database"]["status"], "migrations_pending");
    assert_eq!(body["database"]["migrations_applied"], 0);
    app.store.migrate().await.expect("migrate");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn unreachable_database_is_not_ready() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let db = keel_testkit::TestDb::fresh(Backend::Sqlite).await;
    let mut raw = keel_testkit::test_config(&db);
    raw.database_url = Some(format!("postgres://postgres@127.0.0.1:{port}/keel").into());
    raw.postgres.acquire_timeout_ms = 500;
    let app = keel_testkit::spawn_on(db, raw, false, OpenApiRouter::new()).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["database"]["status"], "unreachable");
}

fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn postgres_counts_its_pool_in_metrics_and_finished_work_needs_no_check() {
    let app = spawn_app(Backend::Postgres).await;
    let read = |text: &str| {
        [
            "keel_postgres_connections_opened_total",
            "keel_postgres_connections_checked_total",
            "keel_postgres_connections_closed_total",
            "keel_postgres_acquire_timeouts_total",
        ]
        .map(|n| counter(text, n).unwrap_or_else(|| panic!("{n} in {text}")))
    };
    let before = read(&app.get("/metrics").await.text().await.expect("text"));
    app.owner_with_tokens("pool-counts").await;
    let after = read(&app.get("/metrics").await.text().await.expect("text"));
    assert!(after[0] >= 1, "a connection was opened: {after:?}");
    // Sign-up, login and token work all ran to their end: no connection needed a check.
    assert_eq!(after[1], before[1], "{before:?} -> {after:?}");
    assert_eq!(after[2..], before[2..], "{before:?} -> {after:?}");
}

#[tokio::test]
async fn sqlite_counts_its_statements_transactions_and_commits_in_metrics() {
    let app = spawn_app(Backend::Sqlite).await;
    let read = |text: &str| {
        [
            "keel_sqlite_statements_total",
            "keel_sqlite_write_transactions_total",
            "keel_sqlite_commits_total",
        ]
        .map(|n| counter(text, n).unwrap_or_else(|| panic!("{n} in {text}")))
    };
    let before = read(&app.get("/metrics").await.text().await.expect("text"));
    // One shop with its owner: write transactions, each with its statements.
    app.owner_with_tokens("metrics-counts").await;
    let after = read(&app.get("/metrics").await.text().await.expect("text"));
    assert!(after[0] > before[0], "statements {before:?} -> {after:?}");
    assert!(after[1] > before[1], "transactions {before:?} -> {after:?}");
    assert!(after[2] > before[2], "commits {before:?} -> {after:?}");
    // Group commit never needs more commits than transactions, and every statement of a
    // transaction is counted (at least SAVEPOINT and RELEASE per transaction).
    assert!(
        after[2] - before[2] <= after[1] - before[1],
        "{before:?} -> {after:?}"
    );
    assert!(
        after[0] - before[0] >= 2 * (after[1] - before[1]),
        "{before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn postgres_has_no_sqlite_counters() {
    let app = spawn_app(Backend::Postgres).await;
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(!text.contains("keel_sqlite_"), "{text}");
}
