//! Finding 5: unpaid checkouts cannot hoard stock or burn limited promotions. Open unpaid
//! orders are capped per customer account, per guest email and per client address (3 each by
//! default); a cancelled or expired unpaid order gives its promotion use back; a guest's
//! per-customer promotion limit counts by email, never by cart; idle carts expire and are
//! deleted.

use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{Cart, Shop, admin, cart_call, created, fill_cart, new_cart_for, ny, shop},
    spawn_app_with,
};
use reqwest::Method;

/// Keel trusts the test client as a proxy, so each request can claim its client address.
fn behind_a_proxy(raw: &mut keel::config::RawConfig) {
    raw.trusted_proxies = "127.0.0.1/32,::1/128".into();
}

/// A guest cart for `email` with one tee, a New York address and standard shipping, and maybe
/// a promotion code.
async fn cart(app: &TestApp, shop: &Shop, email: &str, code: Option<&str>) -> Cart {
    let cart = new_cart_for(app, shop, "USD", email).await;
    fill_cart(
        app,
        shop,
        &cart,
        &[(&shop.tee, 1)],
        ny(),
        &shop.us_shipping,
        code,
    )
    .await;
    cart
}

/// Checks `cart` out from client address `from`.
async fn checkout_from(app: &TestApp, shop: &Shop, cart: &Cart, from: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/store/carts/{}/checkout", cart.id)))
        .header("keel-publishable-key", &shop.pk)
        .header("keel-cart-secret", &cart.secret)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .header("x-forwarded-for", from)
        .send()
        .await
        .expect("checkout reaches the server")
}

async fn order_id(res: reqwest::Response) -> String {
    let body = created(res).await;
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

async fn cancel(app: &TestApp, shop: &Shop, order: &str) {
    let res = admin(
        app,
        &shop.owner.access_token,
        Method::POST,
        &format!("/v1/admin/orders/{order}/cancel"),
        Some(serde_json::json!({"reason": "test"})),
        None,
    )
    .await;
    assert_eq!(res.status(), 200, "cancelled");
}

backend_tests! {
    async fn one_guest_email_cannot_hold_more_than_three_unpaid_orders(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "hoard-email", 100).await;
        // Plus-tags and case do not make another buyer; every checkout from its own address.
        let mut placed = Vec::new();
        for (i, email) in ["ann@hoard.test", "Ann+1@hoard.test", "ann+2@HOARD.test"].iter().enumerate() {
            let c = cart(&app, &shop, email, None).await;
            placed.push(order_id(checkout_from(&app, &shop, &c, &format!("203.0.113.{i}")).await).await);
        }
        let fourth = cart(&app, &shop, "ann+3@hoard.test", None).await;
        assert_problem(checkout_from(&app, &shop, &fourth, "203.0.113.9").await, 409, "too_many_unpaid_orders").await;
        // An order that is no longer unpaid frees its place.
        cancel(&app, &shop, &placed[0]).await;
        order_id(checkout_from(&app, &shop, &fourth, "203.0.113.9").await).await;
    }

    async fn one_address_cannot_hoard_stock_with_fresh_emails(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "hoard-addr", 100).await;
        for i in 0..3 {
            let c = cart(&app, &shop, &format!("buyer{i}@hoard.test"), None).await;
            order_id(checkout_from(&app, &shop, &c, "2001:db8:7:7::1").await).await;
        }
        // Another address in the same /64 is the same client.
        let c = cart(&app, &shop, "buyer9@hoard.test", None).await;
        assert_problem(checkout_from(&app, &shop, &c, "2001:db8:7:7:ffff::2").await, 409, "too_many_unpaid_orders").await;
        // Nothing was reserved for the refused checkout.
        let inventory: serde_json::Value = app.get_as(&format!("/v1/admin/inventory?variant={}", shop.tee), &shop.owner.access_token).await.json().await.expect("inventory");
        assert_eq!(inventory["data"][0]["reserved"], 3);
        // Another client checks out.
        order_id(checkout_from(&app, &shop, &c, "2001:db8:7:8::1").await).await;
    }

    async fn one_customer_account_cannot_hold_more_than_three_unpaid_orders(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "hoard-cus", 100).await;
        let signed: serde_json::Value = app.store_post(&shop.pk, "/v1/store/customers", serde_json::json!({"email": "kim@hoard.test", "password": "saffron-glacier-tulip-8832"})).await.json().await.expect("sign-up");
        let token = signed["tokens"]["access_token"].as_str().expect("token").to_owned();
        let customer_call = |method: Method, path: String, body: Option<serde_json::Value>, from: String| {
            let (app, pk, token) = (&app, shop.pk.clone(), token.clone());
            async move {
                let mut req = app.client.request(method, app.url(&path)).header("keel-publishable-key", pk).bearer_auth(token)
                    .header("x-forwarded-for", from).header("idempotency-key", uuid::Uuid::now_v7().to_string());
                if let Some(b) = body {
                    req = req.json(&b);
                }
                req.send().await.expect("request")
            }
        };
        let mut answers = Vec::new();
        for i in 0..4 {
            let c = created(customer_call(Method::POST, "/v1/store/carts".into(), Some(serde_json::json!({"currency": "USD"})), "198.51.100.1".into()).await).await;
            let id = c["cart"]["id"].as_str().expect("id").to_owned();
            for (m, suffix, body) in [
                (Method::POST, "/items", serde_json::json!({"variant_id": shop.tee, "quantity": 1})),
                (Method::PUT, "/shipping-address", ny()),
                (Method::PUT, "/shipping-option", serde_json::json!({"shipping_option_id": shop.us_shipping})),
            ] {
                assert_eq!(customer_call(m, format!("/v1/store/carts/{id}{suffix}"), Some(body), "198.51.100.1".into()).await.status(), 200);
            }
            answers.push(customer_call(Method::POST, format!("/v1/store/carts/{id}/checkout"), None, format!("198.51.100.{}", 10 + i)).await);
        }
        let last = answers.pop().expect("four");
        for a in answers {
            assert_eq!(a.status(), 201);
        }
        assert_problem(last, 409, "too_many_unpaid_orders").await;
    }

    async fn guests_sharing_an_address_do_not_block_a_signed_in_customer(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "nat", 100).await;
        for i in 0..3 {
            let c = cart(&app, &shop, &format!("guest{i}@nat.test"), None).await;
            order_id(checkout_from(&app, &shop, &c, "100.64.0.1").await).await;
        }
        let signed: serde_json::Value = app.store_post(&shop.pk, "/v1/store/customers", serde_json::json!({"email": "lee@nat.test", "password": "saffron-glacier-tulip-8832"})).await.json().await.expect("sign-up");
        let token = signed["tokens"]["access_token"].as_str().expect("token").to_owned();
        let call = |method: Method, path: String, body: Option<serde_json::Value>| {
            let mut req = app.client.request(method, app.url(&path)).header("keel-publishable-key", &shop.pk).bearer_auth(&token)
                .header("x-forwarded-for", "100.64.0.1").header("idempotency-key", uuid::Uuid::now_v7().to_string());
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send()
        };
        let c = created(call(Method::POST, "/v1/store/carts".into(), Some(serde_json::json!({"currency": "USD"}))).await.expect("cart")).await;
        let id = c["cart"]["id"].as_str().expect("id").to_owned();
        for (m, suffix, body) in [
            (Method::POST, "/items", serde_json::json!({"variant_id": shop.tee, "quantity": 1})),
            (Method::PUT, "/shipping-address", ny()),
            (Method::PUT, "/shipping-option", serde_json::json!({"shipping_option_id": shop.us_shipping})),
        ] {
            assert_eq!(call(m, format!("/v1/store/carts/{id}{suffix}"), Some(body)).await.expect("send").status(), 200);
        }
        let placed = call(Method::POST, format!("/v1/store/carts/{id}/checkout"), None).await.expect("send");
        assert_eq!(placed.status(), 201, "the customer is counted by account, not by the shared address");
    }

    async fn an_abandoned_unpaid_checkout_gives_its_promotion_use_back(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "burn", 100).await;
        created(admin(&app, &shop.owner.access_token, Method::POST, "/v1/admin/promotions", Some(serde_json::json!({"code": "ONLY1", "percent": "50", "usage_limit": 1})), None).await).await;
        let first = cart(&app, &shop, "a@burn.test", Some("ONLY1")).await;
        let burned = order_id(checkout_from(&app, &shop, &first, "192.0.2.1").await).await;
        let second = cart(&app, &shop, "b@burn.test", None).await;
        let apply = |c: &Cart| {
            app.client
                .post(app.url(&format!("/v1/store/carts/{}/promotions", c.id)))
                .header("keel-publishable-key", &shop.pk)
                .header("keel-cart-secret", &c.secret)
                .json(&serde_json::json!({"code": "ONLY1"}))
                .send()
        };
        assert_problem(apply(&second).await.expect("apply"), 409, "promotion_exhausted").await;
        // Staff cancel the unpaid order: the code's one use is back.
        cancel(&app, &shop, &burned).await;
        assert_eq!(apply(&second).await.expect("apply").status(), 200);
        let again = order_id(checkout_from(&app, &shop, &second, "192.0.2.2").await).await;
        // That order expires unpaid: the maintenance pass gives the use back again.
        let later = time::OffsetDateTime::now_utc() + app.settings.orders.unpaid_order_ttl + time::Duration::seconds(1);
        let report = keel::maintenance_pass(&app.settings, &app.store, later).await.expect("maintenance");
        assert_eq!(report.expired_orders, 1);
        let order: serde_json::Value = app.get_as(&format!("/v1/admin/orders/{again}"), &shop.owner.access_token).await.json().await.expect("order");
        assert_eq!(order["status"], "cancelled");
        let third = cart(&app, &shop, "c@burn.test", Some("ONLY1")).await;
        order_id(checkout_from(&app, &shop, &third, "192.0.2.3").await).await;
        let promotions: serde_json::Value = app.get_as("/v1/admin/promotions", &shop.owner.access_token).await.json().await.expect("promotions");
        let only1 = promotions["data"].as_array().expect("data").iter().find(|p| p["code"] == "ONLY1").expect("ONLY1").clone();
        assert_eq!(only1["times_used"], 1, "exactly one use held, by the third order");
    }

    async fn a_guest_cannot_reuse_a_once_per_customer_code_with_a_new_cart(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let shop = shop(&app, "once", 100).await;
        created(admin(&app, &shop.owner.access_token, Method::POST, "/v1/admin/promotions", Some(serde_json::json!({"code": "WELCOME", "percent": "20", "per_customer_limit": 1})), None).await).await;
        let first = cart(&app, &shop, "dan@once.test", Some("WELCOME")).await;
        order_id(checkout_from(&app, &shop, &first, "192.0.2.10").await).await;
        // A new cart, a plus-tag, another address: the same guest.
        let second = cart(&app, &shop, "Dan+again@once.test", Some("WELCOME")).await;
        assert_problem(checkout_from(&app, &shop, &second, "192.0.2.11").await, 409, "promotion_customer_limit").await;
        // A guest without an email cannot use a per-customer code at all.
        let anonymous = created(app.store_post(&shop.pk, "/v1/store/carts", serde_json::json!({"currency": "USD"})).await).await;
        let anon = Cart {
            id: anonymous["cart"]["id"].as_str().expect("id").to_owned(),
            secret: anonymous["cart_secret"].as_str().expect("secret").to_owned(),
        };
        cart_call(&app, &shop, &anon, Method::POST, "/items", Some(serde_json::json!({"variant_id": shop.tee, "quantity": 1}))).await;
        cart_call(&app, &shop, &anon, Method::PUT, "/shipping-address", Some(ny())).await;
        cart_call(&app, &shop, &anon, Method::PUT, "/shipping-option", Some(serde_json::json!({"shipping_option_id": shop.us_shipping}))).await;
        cart_call(&app, &shop, &anon, Method::POST, "/promotions", Some(serde_json::json!({"code": "WELCOME"}))).await;
        assert_problem(checkout_from(&app, &shop, &anon, "192.0.2.12").await, 409, "promotion_not_applicable").await;
    }

    async fn an_idle_cart_expires_and_the_maintenance_pass_deletes_it(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| c.cart_idle_ttl_s = 1).await;
        let shop = shop(&app, "idle", 5).await;
        let c = new_cart_for(&app, &shop, "USD", "idle@shop.test").await;
        let path = format!("/v1/store/carts/{}", c.id);
        let get = || app.client.get(app.url(&path)).header("keel-publishable-key", &shop.pk).header("keel-cart-secret", &c.secret).send();
        assert_eq!(get().await.expect("get").status(), 200);
        // Polled until its exact idle time has passed (bounded), then it answers 404.
        let gone = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let res = get().await.expect("get");
                if res.status() == 404 {
                    return res;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the cart expires");
        assert_problem(gone, 404, "not_found").await;
        let report = keel::maintenance_pass(&app.settings, &app.store, time::OffsetDateTime::now_utc()).await.expect("maintenance");
        assert!(report.carts >= 1, "{report:?}");
    }
}
