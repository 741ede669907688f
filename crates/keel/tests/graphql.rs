//! GraphQL over real HTTP, once per backend (ADR 0040): the admin and storefront schemas
//! over the same services as REST, field-level security from one table for every role and
//! key scope, no N+1 (statements counted), exact limits refused before anything runs, and
//! tenant isolation through every query and node id.

use keel_identity::domain::access::{Permission, Role};
use keel_testkit::{
    Backend, TestApp, backend_tests,
    shop::{self, Shop, admin, created, json},
    spawn_app_with,
};
use reqwest::Method;
use serde_json::{Value, json};

async fn app(backend: Backend, configure: impl FnOnce(&mut keel::config::RawConfig)) -> TestApp {
    spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
        // Many orders per shopper and per address in these tests.
        raw.unpaid_orders_per_customer = 1000;
        raw.unpaid_orders_per_email = 1000;
        raw.unpaid_orders_per_address = 1000;
        configure(raw);
    })
    .await
}

/// A POST to the admin schema.
async fn gql(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let res = app
        .client
        .post(app.url("/v1/admin/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), 200);
    res.json().await.expect("JSON")
}

/// A POST to the storefront schema with the shop's key and maybe a cart secret.
async fn store_gql(app: &TestApp, s: &Shop, secret: Option<&str>, body: Value) -> Value {
    let mut req = app
        .client
        .post(app.url("/v1/store/graphql"))
        .header("keel-publishable-key", &s.pk)
        .json(&body);
    if let Some(secret) = secret {
        req = req.header("keel-cart-secret", secret);
    }
    let res = req.send().await.expect("answer");
    assert_eq!(res.status(), 200);
    res.json().await.expect("JSON")
}

fn codes(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Signs a customer up at `s`; answers their access token.
async fn customer(app: &TestApp, s: &Shop, email: &str) -> String {
    let res = shop::store(
        app,
        s,
        None,
        Method::POST,
        "/v1/store/customers",
        Some(json!({"email": email, "password": "correct-horse-battery-staple-9"})),
        None,
    )
    .await;
    let body = created(res).await;
    body["tokens"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// A signed-in customer's order over REST (a tee), answers its id.
async fn customer_order(app: &TestApp, s: &Shop, token: &str, key: &str) -> String {
    let call = |method: Method, path: String, body: Option<Value>, key: Option<&str>| {
        let mut req = app
            .client
            .request(method, app.url(&path))
            .header("keel-publishable-key", &s.pk)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        async move {
            let res = req.send().await.expect("answer");
            let status = res.status();
            let body: Value = res.json().await.expect("JSON");
            assert!(status.is_success(), "{status} {body}");
            body
        }
    };
    let cart = call(
        Method::POST,
        "/v1/store/carts".into(),
        Some(json!({"currency": "USD"})),
        None,
    )
    .await;
    let id = cart["cart"]["id"].as_str().expect("cart id").to_owned();
    call(
        Method::POST,
        format!("/v1/store/carts/{id}/items"),
        Some(json!({"variant_id": s.tee, "quantity": 1})),
        None,
    )
    .await;
    call(
        Method::PUT,
        format!("/v1/store/carts/{id}/shipping-address"),
        Some(shop::ny()),
        None,
    )
    .await;
    call(
        Method::PUT,
        format!("/v1/store/carts/{id}/shipping-option"),
        Some(json!({"shipping_option_id": s.us_shipping})),
        None,
    )
    .await;
    let order = call(
        Method::POST,
        format!("/v1/store/carts/{id}/checkout"),
        None,
        Some(key),
    )
    .await;
    order["id"].as_str().expect("order id").to_owned()
}

/// Statements one admin GraphQL request costs, the least of three runs (the background
/// loops sleep for an hour in these tests and reads do not wake them; the least discards a
/// late relay of the setup's own writes).
async fn statements(app: &TestApp, token: &str, query: &str, variables: Value) -> (u64, Value) {
    let mut least = u64::MAX;
    let mut answer = Value::Null;
    for _ in 0..3 {
        let before = app.store.statements_run();
        answer = gql(app, token, query, variables.clone()).await;
        least = least.min(app.store.statements_run() - before);
    }
    (least, answer)
}

fn quiet(raw: &mut keel::config::RawConfig) {
    raw.webhooks.relay_interval_ms = 3_600_000;
    raw.webhooks.delivery_interval_ms = 3_600_000;
    raw.maintenance_interval_s = 3_600;
}

const ORDERS: &str = "query($n: Int) { orders(first: $n) { edges { cursor node { id number status email \
    shippingAddress { city } customer { id email } lines { sku quantity unitPrice { amount currency } total { amount currency } } \
    payments { amount { amount } status } totals { total { amount currency } } } } pageInfo { hasNextPage endCursor } } }";

backend_tests! {
    async fn admin_and_storefront_read_and_write_through_the_same_services(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "gql-basic", 10).await;
        let token = &s.owner.access_token;
        let id = shop::placed_order(&app, &s, "gql-basic-1").await;
        let paid = shop::pay(&app, &s, &shop::Cart { id: String::new(), secret: String::new() }, &id, "gql-pay").await;
        assert_eq!(paid.status(), 201);

        let a = gql(&app, token, ORDERS, json!({"n": 10})).await;
        assert_eq!(a["errors"], Value::Null, "{a}");
        let node = &a["data"]["orders"]["edges"][0]["node"];
        assert_eq!(node["id"], id.as_str());
        assert_eq!(node["status"], "paid");
        assert_eq!(node["lines"][0]["unitPrice"], json!({"amount": 1999, "currency": "USD"}));
        assert_eq!(node["payments"][0]["amount"]["amount"], node["totals"]["total"]["amount"]);
        assert_eq!(node["shippingAddress"]["city"], "New York");

        // A mutation, validated as REST: a stale version is refused with REST's code.
        let p = gql(&app, token, "{ products(first: 1) { edges { node { id version title } } } }", json!({})).await;
        let product = &p["data"]["products"]["edges"][0]["node"];
        let m = gql(&app, token, "mutation($id: ID!, $v: Int) { updateProduct(id: $id, input: {title: \"Tee 2\"}, expectedVersion: $v) { title version } }",
            json!({"id": product["id"], "v": product["version"]})).await;
        assert_eq!(m["data"]["updateProduct"]["title"], "Tee 2", "{m}");
        let stale = gql(&app, token, "mutation($id: ID!, $v: Int) { updateProduct(id: $id, input: {title: \"Tee 3\"}, expectedVersion: $v) { title } }",
            json!({"id": product["id"], "v": product["version"]})).await;
        assert_eq!(codes(&stale), ["precondition_failed"], "{stale}");

        // The storefront: products in a currency, exact money.
        let sp = store_gql(&app, &s, None, json!({"query": "{ products(currency: \"USD\", first: 5) { edges { node { title variants { sku price { amount currency } inStock } } } } }"})).await;
        assert_eq!(sp["errors"], Value::Null, "{sp}");
        let variants = &sp["data"]["products"]["edges"][0]["node"]["variants"];
        assert_eq!(variants[0]["price"], json!({"amount": 1999, "currency": "USD"}));
    }

    async fn a_page_of_orders_costs_the_same_statements_for_10_and_for_100(backend: Backend) {
        let app = app(backend, quiet).await;
        let s = shop::shop(&app, "gql-n1", 200).await;
        let (ann, bob) = (customer(&app, &s, "ann@n1.test").await, customer(&app, &s, "bob@n1.test").await);
        for i in 0..100 {
            let token = if i % 2 == 0 { &ann } else { &bob };
            customer_order(&app, &s, token, &format!("n1-{i}")).await;
        }
        let token = &s.owner.access_token;
        gql(&app, token, "{ __typename }", json!({})).await;
        let (ten, a) = statements(&app, token, ORDERS, json!({"n": 10})).await;
        let (hundred, b) = statements(&app, token, ORDERS, json!({"n": 100})).await;
        assert_eq!(a["data"]["orders"]["edges"].as_array().map(Vec::len), Some(10), "{a}");
        assert_eq!(b["data"]["orders"]["edges"].as_array().map(Vec::len), Some(100));
        assert_eq!(b["data"]["orders"]["edges"][99]["node"]["customer"]["email"], "ann@n1.test");
        assert_eq!(b["data"]["orders"]["edges"][0]["node"]["customer"]["email"], "bob@n1.test");
        assert_eq!(ten, hundred, "statements per page do not grow with the page");
        // Products with every variant's stock: a fixed number too.
        let products = "query($n: Int) { products(first: $n) { edges { node { id variants { sku available } } } } }";
        let (p1, _) = statements(&app, token, products, json!({"n": 1})).await;
        let (p2, pb) = statements(&app, token, products, json!({"n": 2})).await;
        assert_eq!(pb["data"]["products"]["edges"][0]["node"]["variants"][0]["available"], 100, "{pb}");
        assert_eq!(p1, p2);
    }

    async fn limits_refuse_with_their_code_before_anything_runs(backend: Backend) {
        let app = app(backend, |raw| {
            quiet(raw);
            raw.graphql.max_depth = 5;
            raw.graphql.max_complexity = 300;
            raw.graphql.max_aliases = 3;
            raw.graphql.max_query_bytes = 600;
        })
        .await;
        let (_, owner) = app.owner_with_tokens("gql-limits").await;
        let token = &owner.access_token;
        // What authenticating the caller alone costs: a refusal costs nothing more.
        gql(&app, token, "{ __typename }", json!({})).await;
        let (baseline, _) = statements(&app, token, "{ __typename }", json!({})).await;
        let deep = "{ orders(first: 1) { edges { node { lines { unitPrice { amount } } } } } }";
        let complex = "{ orders(first: 100) { edges { node { customer { id } lines { sku } } } } }";
        let aliased = "{ a: __typename b: __typename c: __typename d: __typename }";
        let large = format!("{{ __typename }} # {}", "x".repeat(600));
        for (query, code) in [
            (deep, "query_too_deep"),
            (complex, "query_too_complex"),
            (aliased, "too_many_aliases"),
            (large.as_str(), "query_too_large"),
        ] {
            let (n, answer) = statements(&app, token, query, json!({})).await;
            assert_eq!(codes(&answer), [code], "{answer}");
            assert_eq!(answer["data"], Value::Null);
            assert_eq!(n, baseline, "{code}: nothing runs");
        }
    }

    async fn the_storefront_takes_only_shipped_queries_when_persisted_only(backend: Backend) {
        let dir = tempfile::tempdir().expect("temp dir");
        let query = "{ products(currency: \"USD\", first: 1) { edges { node { title } } } }";
        let hash = keel_graphql::sha256_hex(query);
        let file = dir.path().join("persisted.json");
        std::fs::write(&file, json!({ &hash: query }).to_string()).expect("write");
        let path = file.to_string_lossy().into_owned();
        let app = app(backend, move |raw| {
            raw.graphql.persisted_queries_file = Some(path);
            raw.graphql.store_persisted_only = true;
        })
        .await;
        let s = shop::shop(&app, "gql-pq", 1).await;
        let text = store_gql(&app, &s, None, json!({"query": query})).await;
        assert_eq!(codes(&text), ["persisted_query_required"], "{text}");
        let unknown = store_gql(&app, &s, None, json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "00".repeat(32)}}})).await;
        assert_eq!(codes(&unknown), ["PERSISTED_QUERY_NOT_FOUND"]);
        let shipped = store_gql(&app, &s, None, json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
        assert_eq!(shipped["data"]["products"]["edges"][0]["node"]["title"], "Tee", "{shipped}");
    }

    async fn automatic_persisted_queries_register_by_hash_and_check_it(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "gql-apq", 1).await;
        let query = "{ products(currency: \"USD\", first: 1) { edges { node { handle } } } }";
        let hash = keel_graphql::sha256_hex(query);
        let by_hash = json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        assert_eq!(codes(&store_gql(&app, &s, None, by_hash.clone()).await), ["PERSISTED_QUERY_NOT_FOUND"]);
        let wrong = store_gql(&app, &s, None, json!({"query": "{ __typename }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
        assert_eq!(codes(&wrong), ["persisted_query_mismatch"]);
        let first = store_gql(&app, &s, None, json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
        assert_eq!(first["data"]["products"]["edges"][0]["node"]["handle"], "tee");
        let again = store_gql(&app, &s, None, by_hash).await;
        assert_eq!(again, first, "the hash alone now runs the query");
        let intro = store_gql(&app, &s, None, json!({"query": "{ __schema { types { name } } }"})).await;
        assert_eq!(intro["data"]["__schema"], Value::Null, "introspection is off on the storefront: {intro}");
    }

    async fn every_guarded_field_follows_the_table_for_every_role_and_key_scope(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "gql-matrix", 10).await;
        let owner = &s.owner.access_token;
        shop::placed_order(&app, &s, "matrix-1").await;
        // One query touching every guarded read of the admin schema.
        let query = "{ products(first: 1) { edges { node { id variants { available } } } } \
            orders(first: 1) { edges { node { id email shippingAddress { city } customer { id } } } } \
            events(first: 1) { edges { node { id } } } order(id: \"ord_00000000000000000000000000\") { id } \
            product(id: \"prod_00000000000000000000000000\") { id } }";
        let mut principals: Vec<(String, String, Vec<Permission>)> = Vec::new();
        for role in Role::ALL {
            let token = if role == Role::Owner {
                owner.clone()
            } else {
                let (_, t) = app.member(&s.owner, &format!("{}@matrix.test", role.as_str()), role.as_str()).await;
                t.access_token
            };
            principals.push((role.as_str().to_owned(), token, Permission::ALL.into_iter().filter(|p| role.can(*p)).collect()));
        }
        for scopes in [vec!["catalog:read"], vec!["orders:read"], vec!["orders:read", "customers:read"], vec!["audit:read"]] {
            let key = json(admin(&app, owner, Method::POST, "/v1/admin/api-keys", Some(json!({"name": "matrix", "scopes": scopes})), None).await).await;
            let secret = key["secret"].as_str().expect("secret").to_owned();
            principals.push((format!("key {scopes:?}"), secret, scopes.iter().filter_map(|s| Permission::parse(s)).collect()));
        }
        for (who, token, can) in principals {
            let a = gql(&app, &token, query, json!({})).await;
            let forbidden: Vec<String> = a["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["extensions"]["code"] == "forbidden")
                .map(|e| e["path"].as_array().expect("path").iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join("."))
                .collect();
            for (field, need) in keel_graphql::FIELDS {
                let keel_graphql::Need::Permission(p) = need else { continue };
                let path = match *field {
                    "Query.products" => "products",
                    "Query.orders" => "orders",
                    "Query.events" => "events",
                    "Query.order" => "order",
                    "Query.product" => "product",
                    "Variant.available" => "products.edges.node.variants.available",
                    "Order.email" => "orders.edges.node.email",
                    "Order.shippingAddress" => "orders.edges.node.shippingAddress",
                    "Order.customer" => "orders.edges.node.customer",
                    _ => continue,
                };
                // A field under a refused parent is not reached at all.
                let parent_refused = forbidden.iter().any(|f| path.starts_with(f.as_str()) && f != path);
                if parent_refused {
                    continue;
                }
                let refused = forbidden.iter().any(|f| f == path);
                assert_eq!(refused, !can.contains(p), "{who}: {field} (needs {p}): {a}");
            }
            if can.contains(&Permission::OrdersRead) {
                assert!(a["data"]["orders"]["edges"][0]["node"]["id"].is_string(), "{who}: {a}");
            } else {
                assert_eq!(a["data"]["orders"], Value::Null, "{who}");
            }
        }
    }

    async fn another_shop_sees_nothing_through_any_query_or_node_id(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let a = shop::shop(&app, "gql-iso-a", 10).await;
        let b = shop::shop(&app, "gql-iso-b", 10).await;
        let order_a = shop::placed_order(&app, &a, "iso-1").await;
        let pa = json(app.get_as("/v1/admin/products?limit=1", &a.owner.access_token).await).await;
        let product_a = pa["data"][0]["id"].as_str().expect("id").to_owned();
        let token_b = &b.owner.access_token;
        for (query, field) in [
            (format!("{{ order(id: \"{order_a}\") {{ id }} }}"), "order"),
            (format!("{{ product(id: \"{product_a}\") {{ id }} }}"), "product"),
            (format!("{{ node(id: \"{order_a}\") {{ id }} }}"), "node"),
            (format!("{{ node(id: \"{product_a}\") {{ id }} }}"), "node"),
        ] {
            let answer = gql(&app, token_b, &query, json!({})).await;
            assert_eq!(answer["data"][field], Value::Null, "{answer}");
            assert_eq!(answer["errors"], Value::Null, "as REST's 404: null, no hint: {answer}");
        }
        let orders = gql(&app, token_b, "{ orders(first: 100) { edges { node { id } } } }", json!({})).await;
        assert!(!orders.to_string().contains(&order_a));
        let own = gql(&app, &a.owner.access_token, &format!("{{ node(id: \"{order_a}\") {{ id }} }}"), json!({})).await;
        assert_eq!(own["data"]["node"]["id"], order_a.as_str());
        // On the storefront a shopper sees their own order only: another shopper's secret,
        // or another shop's key, finds nothing.
        let (cart, _) = shop::ready_cart(&app, &a, "USD", &[(&a.tee, 1)], shop::ny(), &a.us_shipping, None).await;
        let mine = created(shop::checkout(&app, &a, &cart, "iso-mine").await).await;
        let mine = mine["id"].as_str().expect("id").to_owned();
        let read = json!({"query": "query($o: ID!) { order(id: $o) { id email } }", "variables": {"o": mine}});
        let own = store_gql(&app, &a, Some(&cart.secret), read.clone()).await;
        assert_eq!(own["data"]["order"]["id"], mine.as_str(), "{own}");
        assert_eq!(own["data"]["order"]["email"], "guest@example.test", "a shopper sees their own details");
        let (other, _) = shop::ready_cart(&app, &a, "USD", &[(&a.mug, 1)], shop::ny(), &a.us_shipping, None).await;
        let theirs = store_gql(&app, &a, Some(&other.secret), read.clone()).await;
        assert_eq!(theirs["data"]["order"], Value::Null, "{theirs}");
        let cross = store_gql(&app, &b, Some(&cart.secret), read).await;
        assert_eq!(cross["data"]["order"], Value::Null, "{cross}");
    }

    async fn checkout_over_graphql_shares_the_idempotency_key_with_rest(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "gql-idem", 10).await;
        let (cart, _) = shop::ready_cart(&app, &s, "USD", &[(&s.tee, 2)], shop::ny(), &s.us_shipping, None).await;
        let checkout = json!({"query": "mutation($c: ID!, $k: String!) { checkout(cartId: $c, idempotencyKey: $k) { id totals { total { amount currency } } } }",
            "variables": {"c": cart.id, "k": "same-key"}});
        let first = store_gql(&app, &s, Some(&cart.secret), checkout.clone()).await;
        let id = first["data"]["checkout"]["id"].as_str().expect("order id").to_owned();
        let again = store_gql(&app, &s, Some(&cart.secret), checkout).await;
        assert_eq!(again["data"]["checkout"]["id"], id.as_str(), "a retry answers the same order");
        let rest = shop::checkout(&app, &s, &cart, "same-key").await;
        assert_eq!(rest.status(), 201);
        assert_eq!(json(rest).await["id"], id.as_str(), "the same key over REST is the same checkout");
        let total = &first["data"]["checkout"]["totals"]["total"];
        assert_eq!(total["currency"], "USD");
        assert!(total["amount"].is_i64(), "money is an integer of minor units: {total}");
    }

    async fn the_admin_sdl_is_served_as_checked_in(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let (_, owner) = app.owner_with_tokens("gql-sdl").await;
        let res = app.get_as("/v1/admin/graphql/schema.graphql", &owner.access_token).await;
        assert_eq!(res.status(), 200);
        let served = res.text().await.expect("text");
        let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/graphql/admin.graphql")).expect("SDL");
        assert_eq!(served, checked_in);
    }

    async fn refusals_of_the_review_hold_over_http(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let a = shop::shop(&app, "gql-rev-a", 1).await;
        let b = shop::shop(&app, "gql-rev-b", 1).await;
        // The SDL is for admin callers.
        let res = app.get("/v1/admin/graphql/schema.graphql").await;
        assert_eq!(res.status(), 401);
        // A shop's persisted query is its own: another shop cannot run it by hash (nor learn
        // that it was sent).
        let query = "{ products(currency: \"USD\", first: 1) { edges { node { handle } } } }";
        let hash = keel_graphql::sha256_hex(query);
        let first = store_gql(&app, &a, None, json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
        assert_eq!(first["data"]["products"]["edges"][0]["node"]["handle"], "tee");
        let other = store_gql(&app, &b, None, json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
        assert_eq!(codes(&other), ["PERSISTED_QUERY_NOT_FOUND"]);
        // An idempotency key as REST takes it: 1 to 255 visible characters.
        let (cart, _) = shop::ready_cart(&app, &a, "USD", &[(&a.tee, 1)], shop::ny(), &a.us_shipping, None).await;
        for bad in [String::new(), "k".repeat(256)] {
            let answer = store_gql(&app, &a, Some(&cart.secret), json!({"query": "mutation($c: ID!, $k: String!) { checkout(cartId: $c, idempotencyKey: $k) { id } }",
                "variables": {"c": cart.id, "k": bad}})).await;
            assert_eq!(codes(&answer), ["bad_request"], "{answer}");
        }
        // Presence only on the shop's own, existing resources; orders need `orders:read`.
        let token = &a.owner.access_token;
        let enter = "mutation($r: ID!) { enterResource(resource: $r) }";
        let pb = json(app.get_as("/v1/admin/products?limit=1", &b.owner.access_token).await).await;
        let theirs = pb["data"][0]["id"].as_str().expect("id").to_owned();
        let answer = gql(&app, token, enter, json!({"r": theirs})).await;
        assert_eq!(codes(&answer), ["not_found"], "{answer}");
        let key = json(admin(&app, token, Method::POST, "/v1/admin/api-keys", Some(json!({"name": "cat", "scopes": ["catalog:read"]})), None).await).await;
        let order = shop::placed_order(&app, &a, "rev-1").await;
        let answer = gql(&app, key["secret"].as_str().expect("secret"), enter, json!({"r": order})).await;
        assert_eq!(codes(&answer), ["forbidden"], "{answer}");
    }

    async fn graphiql_is_served_from_the_binary_under_the_docs_policy(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let res = app.client.get(app.url("/v1/admin/graphql")).header("accept", "text/html").send().await.expect("answer");
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/graphiql");
        let page = app.get("/graphiql").await;
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"), "{csp}");
        let html = page.text().await.expect("html");
        assert!(html.contains("/graphiql/graphiql.min.js") && !html.contains("http"), "no third-party origin");
        let js = app.get("/graphiql/graphiql.min.js").await;
        assert_eq!(js.status(), 200);
        let vendored = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../keel-graphql/graphiql/graphiql.min.js")).expect("file");
        assert_eq!(js.bytes().await.expect("bytes").as_ref(), vendored.as_slice());
        assert_eq!(app.get("/graphiql/../Cargo.toml").await.status(), 404);
    }

    async fn the_rest_of_reads_and_writes_go_through_the_same_services(backend: Backend) {
        let app = app(backend, keel_testkit::receiver::fast_webhooks).await;
        let s = shop::shop(&app, "gql-rest", 10).await;
        let token = &s.owner.access_token;
        let ok = |a: &Value| assert_eq!(a["errors"], Value::Null, "{a}");
        // Variants: add, change, delete; then the product.
        let p = gql(&app, token, "{ products(first: 1) { edges { node { id version } } } }", json!({})).await;
        let product = p["data"]["products"]["edges"][0]["node"]["id"].clone();
        let added = gql(&app, token, "mutation($p: ID!) { addVariant(productId: $p, input: {sku: \"TEE-L\", prices: [{amount: 2099, currency: \"USD\"}]}) { version variants { id sku } } }", json!({"p": product})).await;
        ok(&added);
        let variants = added["data"]["addVariant"]["variants"].as_array().expect("variants").clone();
        let large = variants.iter().find(|v| v["sku"] == "TEE-L").expect("added")["id"].clone();
        let changed = gql(&app, token, "mutation($p: ID!, $v: ID!) { updateVariant(productId: $p, variantId: $v, input: {title: \"Large\"}) { variants { sku title } } }", json!({"p": product, "v": large})).await;
        ok(&changed);
        assert!(changed.to_string().contains("Large"));
        let deleted = gql(&app, token, "mutation($p: ID!, $v: ID!) { deleteVariant(productId: $p, variantId: $v) { variants { sku } } }", json!({"p": product, "v": large})).await;
        ok(&deleted);
        assert!(!deleted.to_string().contains("TEE-L"));
        let created = gql(&app, token, "mutation { createProduct(input: {title: \"Gone\", handle: \"gone\", variants: [{sku: \"GONE\", prices: [{amount: 1, currency: \"USD\"}]}]}) { id } }", json!({})).await;
        let gone = created["data"]["createProduct"]["id"].clone();
        ok(&gql(&app, token, "mutation($p: ID!) { deleteProduct(id: $p) }", json!({"p": gone})).await);
        assert_eq!(gql(&app, token, "query($p: ID!) { product(id: $p) { id } }", json!({"p": gone})).await["data"]["product"], Value::Null);

        // An order's life: paid once per key, not shippable before fulfilment, then delivered.
        let mut rx = keel_testkit::receiver::receiver(Vec::new()).await;
        let hook = shop::json(shop::admin(&app, token, Method::POST, "/v1/admin/webhook-endpoints", Some(json!({"url": rx.url, "event_types": ["order.*"]})), None).await).await;
        let endpoint = hook["endpoint"]["id"].clone();
        let id = shop::placed_order(&app, &s, "rest-1").await;
        let pay = "mutation($o: ID!) { recordPayment(id: $o, idempotencyKey: \"pay-1\") { status version } }";
        let paid = gql(&app, token, pay, json!({"o": id})).await;
        assert_eq!(paid["data"]["recordPayment"]["status"], "paid", "{paid}");
        assert_eq!(gql(&app, token, pay, json!({"o": id})).await, paid, "the same key answers the same order");
        let early = gql(&app, token, "mutation($o: ID!) { shipOrder(id: $o, carrier: \"UPS\", trackingNumber: \"1Z\") { status } }", json!({"o": id})).await;
        assert_eq!(codes(&early), ["order_not_shippable"], "{early}");
        let order = gql(&app, token, "query($o: ID!) { order(id: $o) { lines { id quantity } } }", json!({"o": id})).await;
        let line = order["data"]["order"]["lines"][0]["id"].clone();
        ok(&gql(&app, token, "mutation($o: ID!, $l: ID!) { fulfilOrder(id: $o, lines: [{lineId: $l, quantity: 1}], idempotencyKey: \"ff-1\") { status } }", json!({"o": id, "l": line})).await);
        let shipped = gql(&app, token, "mutation($o: ID!) { shipOrder(id: $o, carrier: \"UPS\", trackingNumber: \"1Z\") { status } }", json!({"o": id})).await;
        assert_eq!(shipped["data"]["shipOrder"]["status"], "shipped", "{shipped}");
        let delivered = gql(&app, token, "mutation($o: ID!) { deliverOrder(id: $o) { status } }", json!({"o": id})).await;
        assert_eq!(delivered["data"]["deliverOrder"]["status"], "delivered", "{delivered}");
        // The endpoint's messages (bodies never shown).
        rx.next().await;
        let messages = gql(&app, token, "query($e: ID!) { webhookMessages(endpointId: $e, first: 50) { edges { node { eventType status attempts } } } }", json!({"e": endpoint})).await;
        ok(&messages);
        assert!(messages.to_string().contains("order.placed"), "{messages}");

        // The storefront's cart edits.
        let (cart, _) = shop::ready_cart(&app, &s, "USD", &[(&s.tee, 1), (&s.mug, 1)], shop::ny(), &s.us_shipping, None).await;
        let read = store_gql(&app, &s, Some(&cart.secret), json!({"query": "query($c: ID!) { cart(id: $c) { lines { id sku } } }", "variables": {"c": cart.id}})).await;
        let lines = read["data"]["cart"]["lines"].as_array().expect("lines").clone();
        let set = store_gql(&app, &s, Some(&cart.secret), json!({"query": "mutation($c: ID!, $l: ID!) { setCartItemQuantity(cartId: $c, lineId: $l, quantity: 3) { lines { quantity } } }", "variables": {"c": cart.id, "l": lines[0]["id"]}})).await;
        assert!(set.to_string().contains("\"quantity\":3"), "{set}");
        let removed = store_gql(&app, &s, Some(&cart.secret), json!({"query": "mutation($c: ID!, $l: ID!) { removeCartItem(cartId: $c, lineId: $l) { lines { sku } } }", "variables": {"c": cart.id, "l": lines[1]["id"]}})).await;
        assert_eq!(removed["data"]["removeCartItem"]["lines"].as_array().map(Vec::len), Some(1), "{removed}");
        let promoted = store_gql(&app, &s, Some(&cart.secret), json!({"query": "mutation($c: ID!) { applyPromotion(cartId: $c, code: \"SAVE10\") { discount { amount } } }", "variables": {"c": cart.id}})).await;
        assert!(promoted["data"]["applyPromotion"]["discount"]["amount"].as_i64().is_some_and(|d| d > 0), "{promoted}");
        let unpromoted = store_gql(&app, &s, Some(&cart.secret), json!({"query": "mutation($c: ID!) { removePromotion(cartId: $c, code: \"SAVE10\") { discount { amount } } }", "variables": {"c": cart.id}})).await;
        assert_eq!(unpromoted["data"]["removePromotion"]["discount"]["amount"], 0, "{unpromoted}");
    }
}
