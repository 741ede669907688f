//! The API contract (issue 20): what `/openapi.json` declares is what the server answers, and
//! an `Idempotency-Key` compares a retry's parameters, not its bytes. Over real HTTP on both
//! backends.

use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{Cart, Shop, admin, checkout, created, json, ny, pay, ready_cart, shop},
    spawn_app,
};
use reqwest::{Method, StatusCode};

/// Sends `body` exactly as written (not re-serialised), with an `Idempotency-Key`.
async fn raw_post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    key: &str,
    body: &'static str,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("request reaches the server")
}

/// A shop with one paid New York order (a tee and a mug); answers the shop, the cart and the
/// order's answer.
async fn paid_order(app: &TestApp, prefix: &str) -> (Shop, Cart, serde_json::Value) {
    let shop = shop(app, prefix, 10).await;
    let (cart, _) = ready_cart(
        app,
        &shop,
        "USD",
        &[(&shop.tee, 2), (&shop.mug, 1)],
        ny(),
        &shop.us_shipping,
        None,
    )
    .await;
    let order = created(checkout(app, &shop, &cart, "contract-checkout").await).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let paid = created(pay(app, &shop, &cart, &id, "contract-pay").await).await;
    (shop, cart, paid)
}

/// The operations of the document: (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op.get("responses").is_some() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Object properties of the components that accept any object at all: a schema that names
/// nothing drifts from the answers unnoticed (as `fulfilments` did).
fn free_form_properties(doc: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        let Some(props) = schema["properties"].as_object() else {
            continue;
        };
        for (prop, s) in props {
            let ty = &s["type"];
            let is_object =
                ty == "object" || ty.as_array().is_some_and(|t| t.contains(&"object".into()));
            if is_object && s.get("properties").is_none() && s.get("additionalProperties").is_none()
            {
                found.push(format!("{name}.{prop}"));
            }
        }
    }
    found.sort();
    found
}

/// `docs/openapi.json` is reviewed like code: a change to the API's contract shows in the diff.
#[test]
fn the_checked_in_document_is_the_one_the_code_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let checked_in = std::fs::read_to_string(path).expect("docs/openapi.json");
    let built = keel_http::openapi_document()
        .to_pretty_json()
        .expect("json")
        + "\n";
    assert!(
        checked_in == built,
        "docs/openapi.json is not the document the code serves: run `cargo run -- openapi > docs/openapi.json`, \
         review the diff, and list any change that breaks existing clients in CHANGELOG.md"
    );
}

backend_tests! {
    async fn every_error_response_in_the_document_is_a_problem_as_served(backend: Backend) {
        let app = spawn_app(backend).await;
        let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
        let built = serde_json::to_value(keel_http::openapi_document()).expect("json");
        assert!(doc == built, "a node serves the document `keel openapi` prints");
        let mut errors = 0;
        for (method, path, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().expect("responses") {
                // Required by OpenAPI (generators refuse a document without it).
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path} {status} has no description");
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                errors += 1;
                let content = response["content"].as_object().expect("error content");
                assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{method} {path} {status}");
                assert_eq!(content["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem", "{method} {path} {status}");
            }
        }
        assert!(errors > 100, "the routes declare their errors ({errors})");
        // What any request of its kind can get is declared with it.
        let statuses = |method: &str, path: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"].as_object().expect("responses").keys().cloned().collect()
        };
        let admin_write = statuses("post", "/v1/admin/products");
        for status in ["400", "401", "403", "413", "415", "422", "500", "503"] {
            assert!(admin_write.iter().any(|s| s == status), "POST /v1/admin/products lacks {status}: {admin_write:?}");
        }
        let storefront = statuses("get", "/v1/store/products/{id_or_handle}");
        for status in ["401", "404", "500", "503"] {
            assert!(storefront.iter().any(|s| s == status), "GET /v1/store/products/{{id_or_handle}} lacks {status}: {storefront:?}");
        }
        let probe = statuses("get", "/livez");
        assert!(!probe.iter().any(|s| s == "401" || s == "403"), "a probe takes no credential: {probe:?}");
        // And the server answers errors with that media type.
        let res = app.get("/v1/admin/orders").await;
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_problem(res, 401, "unauthorized").await;
    }

    async fn order_answers_carry_the_array_shapes_the_document_declares(backend: Backend) {
        let app = spawn_app(backend).await;
        let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
        let schemas = &doc["components"]["schemas"];
        for (schema, prop) in [("OrderResponse", "fulfilments"), ("RefundResponse", "lines"), ("FulfilmentResponse", "lines")] {
            assert_eq!(schemas[schema]["properties"][prop]["type"], "array", "{schema}.{prop}");
            assert!(schemas[schema]["properties"][prop]["items"]["$ref"].is_string(), "{schema}.{prop} items are typed");
        }
        // Only event payloads (which differ by event type) are free-form objects.
        assert_eq!(free_form_properties(&doc), ["EventResponse.data", "TimelineEntry.data"]);

        let (shop, _, order) = paid_order(&app, "contract-shapes").await;
        let t = shop.owner.access_token.clone();
        let id = order["id"].as_str().expect("id");
        assert_eq!(order["fulfilments"], serde_json::json!([]), "no fulfilment yet: an empty array");
        let line = order["lines"][0]["id"].clone();
        let path = format!("/v1/admin/orders/{id}");
        let fulfilled = created(admin(&app, &t, Method::POST, &format!("{path}/fulfillments"), Some(serde_json::json!({"lines": [{"line_id": line, "quantity": 1}]})), Some("contract-ful")).await).await;
        let fulfilment = &fulfilled["fulfilments"][0];
        assert_eq!(fulfilment["lines"], serde_json::json!([{"line_id": line, "quantity": 1}]));
        assert!(fulfilment["id"].is_string() && fulfilment["created_at"].is_string(), "{fulfilment}");
        let refunded = created(admin(&app, &t, Method::POST, &format!("{path}/refunds"), Some(serde_json::json!({"amount": 1000})), Some("contract-ref")).await).await;
        let lines = refunded["refunds"][0]["lines"].as_array().expect("refund lines are an array");
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l["line_id"].is_string() && l["quantity"].is_i64() && l["amount"].is_i64()), "{lines:?}");
        let amounts: i64 = lines.iter().map(|l| l["amount"].as_i64().expect("amount")).sum::<i64>()
            + refunded["refunds"][0]["shipping"]["amount"].as_i64().expect("shipping");
        assert_eq!(amounts, 1000, "the refund's lines and shipping reconcile to its amount");
    }

    async fn a_checkout_retried_with_a_body_where_the_first_had_none_is_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "contract-idem", 10).await;
        let (cart, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await;
        let order = created(checkout(&app, &shop, &cart, "K1").await).await;
        let path = format!("/v1/store/carts/{}/checkout", cart.id);
        let headers = [("keel-publishable-key", shop.pk.as_str()), ("keel-cart-secret", cart.secret.as_str())];
        let reused = raw_post(&app, &path, &headers, "K1", r#"{"note":"different"}"#).await;
        assert_problem(reused, 422, "idempotency_key_reused").await;
        // `{}` is a body too: not the request that had none.
        let empty = raw_post(&app, &path, &headers, "K1", "{}").await;
        assert_problem(empty, 422, "idempotency_key_reused").await;
        // The first answer is still what the key replays.
        let replay = checkout(&app, &shop, &cart, "K1").await;
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(json(replay).await["id"], order["id"]);
        // A first request with parameters the route does not take is told which.
        let (other, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await;
        let headers = [("keel-publishable-key", shop.pk.as_str()), ("keel-cart-secret", other.secret.as_str())];
        let path = format!("/v1/store/carts/{}/checkout", other.id);
        let refused = raw_post(&app, &path, &headers, "K2", r#"{"note":"x"}"#).await;
        assert_problem(refused, 422, "validation_failed").await;
        assert_problem(raw_post(&app, &path, &headers, "K3", "[]").await, 422, "validation_failed").await;
        assert_problem(raw_post(&app, &path, &headers, "K4", "{}x").await, 400, "malformed_json").await;
        // None of those checked the cart out: it still can be.
        let placed = raw_post(&app, &path, &headers, "K5", "null").await;
        assert_eq!(placed.status(), StatusCode::CREATED);
    }

    async fn a_retry_with_the_same_json_in_another_form_replays_and_other_values_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let (shop, _, order) = paid_order(&app, "contract-canon").await;
        let t = format!("Bearer {}", shop.owner.access_token);
        let headers = [("authorization", t.as_str())];
        let path = format!("/v1/admin/orders/{}/refunds", order["id"].as_str().expect("id"));
        let first = raw_post(&app, &path, &headers, "R1", r#"{"amount": 100, "reason": "late"}"#).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let first = json(first).await;
        let again = raw_post(&app, &path, &headers, "R1", "{ \"reason\" : \"late\",\n  \"amount\" : 100 }").await;
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(json(again).await, first, "key order and whitespace do not make another request");
        for other in [r#"{"amount": 101, "reason": "late"}"#, r#"{"amount": "100", "reason": "late"}"#, r#"{"amount": 100}"#, r#"{"amount": 100, "reason": "late", "extra": null}"#] {
            let res = raw_post(&app, &path, &headers, "R1", other).await;
            assert_problem(res, 422, "idempotency_key_reused").await;
        }
        // One refund of 1.00 happened, whatever the retries.
        let detail = json(app.get_as(&format!("/v1/admin/orders/{}", order["id"].as_str().expect("id")), &shop.owner.access_token).await).await;
        assert_eq!(detail["refunds"].as_array().expect("refunds").len(), 1);
        assert_eq!(detail["refunded"]["amount"], 100);
    }
}
