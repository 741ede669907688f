//! Carts, checkout and orders over real HTTP, once per backend: a hand-computed end-to-end
//! flow in USD (8.875 % tax) and JPY (no minor unit), idempotency, concurrency without
//! oversell or over-redemption, illegal transitions, and the expiry of unpaid orders.

use std::{collections::HashSet, sync::Arc};

use keel_kernel::{TenantId, clock::ManualClock};
use keel_orders::{
    cart::CartId, ports::PricingSettings, pricing::Breakdown, service::ShopperAccess,
};
use keel_testkit::{
    Backend, assert_problem, backend_tests,
    shop::{
        admin, cart_call, checkout, created, json, level, new_cart, ny, pay, ready_cart, shop,
        store, tokyo,
    },
    spawn_app, spawn_app_with,
};
use reqwest::{Method, StatusCode};

fn amount(v: &serde_json::Value) -> i64 {
    v["amount"]
        .as_i64()
        .unwrap_or_else(|| panic!("an amount: {v}"))
}

fn totals(body: &serde_json::Value) -> [i64; 6] {
    let t = &body["totals"];
    [
        amount(&t["subtotal"]),
        amount(&t["discount"]),
        amount(&t["shipping"]),
        amount(&t["shipping_tax"]),
        amount(&t["tax"]),
        amount(&t["total"]),
    ]
}

fn of(b: &Breakdown) -> [i64; 6] {
    [
        b.subtotal,
        b.discount,
        b.shipping,
        b.shipping_tax,
        b.tax,
        b.total,
    ]
}

/// Unpaid-order caps no test here reaches (its shoppers share the test's address and email).
fn uncapped(raw: &mut keel::config::RawConfig) {
    raw.unpaid_orders_per_address = 1_000;
    raw.unpaid_orders_per_email = 1_000;
    raw.unpaid_orders_per_customer = 1_000;
}

backend_tests! {
    async fn a_new_york_order_goes_from_cart_to_partial_refund_with_hand_computed_totals(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "ord-ny", 10).await;
        let (cart, body) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 2), (&shop.mug, 1)], ny(), &shop.us_shipping, Some("save10")).await;
        // 2 × 19.99 + 5.00 = 44.98; 10 % = 4.498 → 4.50, split 4.00 / 0.50 by largest remainder;
        // tax 8.875 % per line: (39.98 - 4.00) → 3.19, (5.00 - 0.50) → 0.40; shipping 7.95 → tax 0.71.
        assert_eq!(totals(&body), [4498, 450, 795, 71, 430, 5273]);
        let lines = body["lines"].as_array().expect("lines");
        assert_eq!((amount(&lines[0]["discount"]), amount(&lines[0]["tax"]), amount(&lines[0]["total"])), (400, 319, 3917));
        assert_eq!((amount(&lines[1]["discount"]), amount(&lines[1]["tax"]), amount(&lines[1]["total"])), (50, 40, 490));
        assert_eq!(body["tax_rate"], "8.875");
        let order = created(checkout(&app, &shop, &cart, "checkout-ny-1").await).await;
        assert_eq!((order["status"].as_str(), order["payment_status"].as_str()), (Some("pending_payment"), Some("unpaid")));
        assert_eq!(order["number"], "#1001", "the shop's first order");
        assert_eq!(totals(&order), [4498, 450, 795, 71, 430, 5273], "totals frozen at checkout");
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 2), "stock reserved with the order");
        let id = order["id"].as_str().expect("id").to_owned();
        let paid = created(pay(&app, &shop, &cart, &id, "pay-ny-1").await).await;
        assert_eq!((paid["status"].as_str(), amount(&paid["captured"])), (Some("paid"), 5273));
        let t = shop.owner.access_token.clone();
        let tee_line = order["lines"][0]["id"].clone();
        let mug_line = order["lines"][1]["id"].clone();
        let path = format!("/v1/admin/orders/{id}");
        let partial = created(admin(&app, &t, Method::POST, &format!("{path}/fulfillments"), Some(serde_json::json!({"lines": [{"line_id": tee_line, "quantity": 1}]})), Some("ful-1")).await).await;
        assert_eq!(partial["status"], "partially_fulfilled");
        assert_eq!(level(&app, &shop, &shop.tee).await, (9, 1), "a fulfilled unit leaves the shelf and the reservation");
        let done = created(admin(&app, &t, Method::POST, &format!("{path}/fulfillments"), Some(serde_json::json!({"lines": [{"line_id": tee_line, "quantity": 1}, {"line_id": mug_line, "quantity": 1}]})), Some("ful-2")).await).await;
        assert_eq!(done["status"], "fulfilled");
        let shipped = created(admin(&app, &t, Method::POST, &format!("{path}/shipments"), Some(serde_json::json!({"carrier": "UPS", "tracking_number": "1Z999"})), None).await).await;
        assert_eq!(shipped["status"], "shipped");
        // 10.00 back, split over what was paid: lines 39.17 / 4.90 and shipping 8.66 (5273 in
        // all) → 7.43 / 0.93 / 1.64 by largest remainder.
        let refunded = created(admin(&app, &t, Method::POST, &format!("{path}/refunds"), Some(serde_json::json!({"amount": 1000, "reason": "late"})), Some("ref-1")).await).await;
        assert_eq!((refunded["payment_status"].as_str(), amount(&refunded["refunded"])), (Some("partially_refunded"), 1000));
        assert_eq!((amount(&refunded["lines"][0]["refunded"]), amount(&refunded["lines"][1]["refunded"]), amount(&refunded["refunds"][0]["shipping"])), (743, 93, 164));
        let detail = json(app.get_as(&path, &t).await).await;
        let timeline: Vec<&str> = detail["timeline"].as_array().expect("timeline").iter().map(|e| e["type"].as_str().expect("type")).collect();
        assert_eq!(timeline, ["order.placed", "order.paid", "order.partially_fulfilled", "order.fulfilled", "order.shipped", "order.refunded"]);
        let listed = json(app.get_as("/v1/admin/orders?status=shipped", &t).await).await;
        assert_eq!(listed["data"].as_array().expect("data").len(), 1);
        let by_number = json(app.get_as(&format!("/v1/admin/orders?q={}", order["number"].as_str().expect("n").replace('#', "%23")), &t).await).await;
        assert_eq!(by_number["data"][0]["id"], id.as_str());
    }

    async fn a_japanese_order_in_whole_yen_with_a_fixed_promotion(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "ord-jp", 10).await;
        let (cart, body) = ready_cart(&app, &shop, "JPY", &[(&shop.tee, 3)], tokyo(), &shop.jp_shipping, Some("YEN500")).await;
        // 3 × ¥2,500 = ¥7,500; ¥500 off; 10 % tax on ¥7,000 = ¥700; EMS ¥1,200, untaxed.
        assert_eq!(totals(&body), [7500, 500, 1200, 0, 700, 8900]);
        assert_eq!(body["totals"]["total"]["currency"], "JPY");
        let order = created(checkout(&app, &shop, &cart, "checkout-jp").await).await;
        assert_eq!(totals(&order), [7500, 500, 1200, 0, 700, 8900]);
        // The key replays the first answer; the same key on another request is refused.
        let replay = checkout(&app, &shop, &cart, "checkout-jp").await;
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(json(replay).await, order, "the whole first answer, stored with the order");
        let id = order["id"].as_str().expect("id");
        // The storefront cannot mark an order paid by any route: only staff record a manual
        // payment, and a provider's payment comes through its signed webhook.
        let shopper_pay = store(&app, &shop, Some(&cart.secret), Method::POST, &format!("/v1/store/orders/{id}/payments"), None, Some("shopper-pay")).await;
        assert_problem(shopper_pay, 404, "not_found").await;
        let t = shop.owner.access_token.clone();
        let no_key = admin(&app, &t, Method::POST, &format!("/v1/admin/orders/{id}/payments"), None, None).await;
        assert_problem(no_key, 400, "idempotency_key_required").await;
        let paid = created(pay(&app, &shop, &cart, id, "pay-jp").await).await;
        assert_eq!(paid["status"], "paid");
        assert_eq!(paid["payments"][0]["provider"], "manual");
        let replay = pay(&app, &shop, &cart, id, "pay-jp").await;
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(json(replay).await, paid, "the payment's answer, stored with the payment");
        let reused = admin(&app, &t, Method::POST, &format!("/v1/admin/orders/{id}/refunds"), Some(serde_json::json!({"amount": 1})), Some("pay-jp")).await;
        assert_problem(reused, 422, "idempotency_key_reused").await;
        // Another shopper's secret cannot see the cart, its order or a payment session for it.
        let stranger = new_cart(&app, &shop, "JPY").await;
        let peek = store(&app, &shop, Some(&stranger.secret), Method::GET, &format!("/v1/store/carts/{}", cart.id), None, None).await;
        assert_problem(peek, 404, "not_found").await;
        let steal = store(&app, &shop, Some(&stranger.secret), Method::POST, &format!("/v1/store/orders/{id}/payment-sessions"), None, None).await;
        assert_problem(steal, 404, "not_found").await;
    }

    async fn illegal_transitions_answer_409_and_change_nothing(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "ord-bad", 10).await;
        let t = shop.owner.access_token.clone();
        let (cart, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 2)], ny(), &shop.us_shipping, None).await;
        let order = created(checkout(&app, &shop, &cart, "bad-1").await).await;
        let id = order["id"].as_str().expect("id").to_owned();
        let path = format!("/v1/admin/orders/{id}");
        let line = order["lines"][0]["id"].clone();
        let version = |o: &serde_json::Value| o["version"].as_i64().expect("version");
        let before = json(app.get_as(&path, &t).await).await;
        let ship_early = admin(&app, &t, Method::POST, &format!("{path}/shipments"), Some(serde_json::json!({"carrier": "UPS", "tracking_number": "1"})), None).await;
        assert_problem(ship_early, 409, "order_not_shippable").await;
        let fulfil_unpaid = admin(&app, &t, Method::POST, &format!("{path}/fulfillments"), Some(serde_json::json!({"lines": [{"line_id": line, "quantity": 1}]})), Some("f-unpaid")).await;
        assert_problem(fulfil_unpaid, 409, "order_not_fulfillable").await;
        let refund_unpaid = admin(&app, &t, Method::POST, &format!("{path}/refunds"), Some(serde_json::json!({"amount": 1})), Some("r-unpaid")).await;
        assert_problem(refund_unpaid, 409, "order_not_refundable").await;
        assert_eq!(version(&json(app.get_as(&path, &t).await).await), version(&before), "nothing changed");
        created(pay(&app, &shop, &cart, &id, "bad-pay").await).await;
        let over = admin(&app, &t, Method::POST, &format!("{path}/fulfillments"), Some(serde_json::json!({"lines": [{"line_id": line, "quantity": 3}]})), Some("f-over")).await;
        assert_problem(over, 409, "over_fulfilment").await;
        let too_much = admin(&app, &t, Method::POST, &format!("{path}/refunds"), Some(serde_json::json!({"amount": 1_000_000})), Some("r-over")).await;
        assert_problem(too_much, 409, "over_refund").await;
        // A NUL in a reason (PostgreSQL stores none) is a validation problem, never a 500.
        let nul = admin(&app, &t, Method::POST, &format!("{path}/refunds"), Some(serde_json::json!({"amount": 1, "reason": "a\u{0}b"})), Some("r-nul")).await;
        assert_problem(nul, 422, "validation_failed").await;
        let nul = admin(&app, &t, Method::POST, &format!("{path}/cancel"), Some(serde_json::json!({"reason": "a\u{0}b"})), None).await;
        assert_problem(nul, 422, "validation_failed").await;
        let paid = json(app.get_as(&path, &t).await).await;
        assert_eq!((paid["status"].as_str(), amount(&paid["refunded"])), (Some("paid"), 0));
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 2), "no stock moved");
        let cancelled = json(admin(&app, &t, Method::POST, &format!("{path}/cancel"), Some(serde_json::json!({"reason": "customer asked"})), None).await).await;
        assert_eq!((cancelled["status"].as_str(), cancelled["payment_status"].as_str()), (Some("cancelled"), Some("refunded")));
        assert_eq!(amount(&cancelled["refunded"]), amount(&cancelled["captured"]), "cancelling refunds what was captured");
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 0), "and releases the stock");
        let pay_cancelled = pay(&app, &shop, &cart, &id, "bad-pay-2").await;
        assert_problem(pay_cancelled, 409, "order_not_payable").await;
        assert_problem(admin(&app, &t, Method::POST, &format!("{path}/cancel"), Some(serde_json::json!({})), None).await, 409, "order_not_cancellable").await;
        assert_eq!(version(&json(app.get_as(&path, &t).await).await), version(&cancelled));
        assert_problem(checkout(&app, &shop, &cart, "bad-again").await, 409, "cart_checked_out").await;
    }

    async fn a_shipping_option_the_shop_withdrew_leaves_the_cart_readable_and_checkout_asks_again(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "ord-ship", 10).await;
        let t = shop.owner.access_token.clone();
        let (cart, chosen) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await;
        assert_eq!(amount(&chosen["totals"]["shipping"]), 795);
        let option = format!("/v1/admin/shipping-options/{}", shop.us_shipping);
        assert_eq!(admin(&app, &t, Method::DELETE, &option, None, None).await.status(), StatusCode::NO_CONTENT);

        let read = cart_call(&app, &shop, &cart, Method::GET, "", None).await;
        assert!(read["shipping_option"].is_null(), "{read}");
        assert_eq!(totals(&read), [1999, 0, 0, 0, 177, 2176], "priced without shipping, tax on the tee alone");
        assert_problem(checkout(&app, &shop, &cart, "ship-gone").await, 409, "shipping_option_unavailable").await;
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 0), "nothing reserved");
        let moved = cart_call(&app, &shop, &cart, Method::PUT, "/shipping-address", Some(ny())).await;
        assert!(moved["shipping_option"].is_null(), "a new address still works, and drops the withdrawn option");

        // An option that loses its price in the cart's currency no longer applies either.
        let yen_only = created(admin(&app, &t, Method::POST, "/v1/admin/shipping-options", Some(serde_json::json!({
            "name": "Express", "country": "US", "amounts": [{"amount": 1500, "currency": "USD"}]})), None).await).await;
        let express = yen_only["id"].as_str().expect("id");
        let chosen = cart_call(&app, &shop, &cart, Method::PUT, "/shipping-option", Some(serde_json::json!({"shipping_option_id": express}))).await;
        assert_eq!(amount(&chosen["totals"]["shipping"]), 1500);
        let path = format!("/v1/admin/shipping-options/{express}");
        let patched = admin(&app, &t, Method::PATCH, &path, Some(serde_json::json!({"amounts": [{"amount": 2000, "currency": "JPY"}]})), None).await;
        assert_eq!(patched.status(), StatusCode::OK);
        let read = cart_call(&app, &shop, &cart, Method::GET, "", None).await;
        assert_eq!((read["shipping_option"].is_null(), amount(&read["totals"]["shipping"])), (true, 0));
        assert_problem(checkout(&app, &shop, &cart, "ship-no-usd").await, 409, "shipping_option_unavailable").await;

        let back = admin(&app, &t, Method::PATCH, &path, Some(serde_json::json!({"amounts": [{"amount": 1500, "currency": "USD"}]})), None).await;
        assert_eq!(back.status(), StatusCode::OK);
        let order = created(checkout(&app, &shop, &cart, "ship-ok").await).await;
        assert_eq!(amount(&order["totals"]["shipping"]), 1500, "checks out with the option that applies again");
    }

    /// ADR 0021. A second node (another orders service over the same database, on a manual
    /// clock) prices cart answers with the setup it read for exactly the configured time; a
    /// change through that node applies to its answers at once; its checkout charges the setup
    /// as it is. The HTTP node, without the cache, changes the setup and gives the fresh
    /// answer to compare with.
    async fn cart_answers_trust_their_pricing_read_for_exactly_the_cache_time_and_checkout_reads_afresh(backend: Backend) {
        let app = spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| raw.pricing_cache_ms = 0).await;
        let shop = shop(&app, "ord-pcache", 10).await;
        let t = shop.owner.access_token.clone();
        let (cart, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await;
        let ttl = time::Duration::milliseconds(1_000);
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let mut settings = app.settings.clone();
        settings.orders.pricing_cache = ttl;
        let there = keel::orders_service(&settings, &app.store, clock.clone());
        let me = json(app.get_as("/v1/me", &t).await).await;
        let tenant: TenantId = me["tenant_id"].as_str().expect("tenant id").parse().expect("tenant id");
        let id: CartId = cart.id.parse().expect("cart id");
        let access = ShopperAccess { customer: None, secret: Some(cart.secret.clone()), client: None };
        let answer = || async { of(&there.get_cart(tenant, id, &access).await.expect("cart").breakdown) };
        let fresh = || async { totals(&cart_call(&app, &shop, &cart, Method::GET, "", None).await) };

        let first = answer().await;
        assert_eq!(first, fresh().await);
        let rates = json(app.get_as("/v1/admin/tax-rates", &t).await).await;
        let ny_rate = rates["data"].as_array().expect("rates").iter()
            .find(|r| r["region"] == "NY").expect("the NY rate")["id"].as_str().expect("id").to_owned();
        let rate = |percent: &'static str| {
            let (app, t, path) = (&app, &t, format!("/v1/admin/tax-rates/{ny_rate}"));
            async move {
                let res = admin(app, t, Method::PATCH, &path, Some(serde_json::json!({"rate": percent})), None).await;
                assert_eq!(res.status(), StatusCode::OK);
            }
        };
        rate("10").await;
        let at_ten = fresh().await;
        assert!(at_ten[4] > first[4], "the HTTP node prices with the new rate at once: {at_ten:?}");
        clock.advance(ttl - time::Duration::microseconds(1));
        assert_eq!(answer().await, first, "the other node trusts its read until its time is up");
        clock.advance(time::Duration::microseconds(1));
        assert_eq!(answer().await, at_ten, "and reads again at the end of it");

        there.set_pricing_settings(tenant, PricingSettings { prices_include_tax: true }).await.expect("settings");
        let inclusive = answer().await;
        assert_ne!(inclusive, at_ten);
        assert_eq!(inclusive, fresh().await, "a change through the node applies to its answers at once");

        rate("12").await;
        let at_twelve = fresh().await;
        assert_ne!(at_twelve, inclusive);
        assert_eq!(answer().await, inclusive, "still inside the time of its last read");
        let order = there.checkout(tenant, id, &access, None).await.expect("checkout");
        assert_eq!(of(&order.totals), at_twelve, "the order is charged the setup as it is");
        let counted: Vec<_> = there.counters().iter().map(|c| (c.name, c.value)).collect();
        assert_eq!(
            counted,
            [("keel_pricing_cache_hits_total", 2), ("keel_pricing_cache_misses_total", 3)],
            "read, trusted, expired, dropped by the write, trusted; checkout is neither"
        );
        let text = app.get("/metrics").await.text().await.expect("metrics");
        for line in ["keel_pricing_cache_hits_total 0\n", "keel_pricing_cache_misses_total 0\n"] {
            assert!(text.contains(line), "the HTTP node, without the cache, counts nothing: {text}");
        }
    }

    async fn fifty_concurrent_checkouts_of_ten_units_make_exactly_ten_orders(backend: Backend) {
        // Fifty guests behind one address: the unpaid-order caps are not what this tests.
        let app = spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), uncapped).await;
        let shop = shop(&app, "ord-race", 10).await;
        let mut carts = Vec::new();
        for _ in 0..50 {
            carts.push(ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await.0);
        }
        let mut tasks = tokio::task::JoinSet::new();
        let app = std::sync::Arc::new(app);
        let shop = std::sync::Arc::new(shop);
        for (i, cart) in carts.into_iter().enumerate() {
            let (app, shop) = (app.clone(), shop.clone());
            tasks.spawn(async move { checkout(&app, &shop, &cart, &format!("race-{i}")).await.status() });
        }
        let mut statuses = Vec::new();
        while let Some(s) = tasks.join_next().await {
            statuses.push(s.expect("task"));
        }
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 10);
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 40);
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 10), "reserved exactly what is on hand");
        let orders = json(app.get_as("/v1/admin/orders?limit=100", &shop.owner.access_token).await).await;
        assert_eq!(orders["data"].as_array().expect("data").len(), 10);
        let numbers: HashSet<&str> = orders["data"].as_array().expect("data").iter().map(|o| o["number"].as_str().expect("n")).collect();
        assert_eq!(numbers.len(), 10, "unique order numbers");
    }

    async fn twenty_concurrent_checkouts_with_one_key_make_one_order(backend: Backend) {
        let app = std::sync::Arc::new(spawn_app(backend).await);
        let shop = std::sync::Arc::new(shop(&app, "ord-key", 10).await);
        let cart = std::sync::Arc::new(ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await.0);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (app, shop, cart) = (app.clone(), shop.clone(), cart.clone());
            tasks.spawn(async move {
                let res = checkout(&app, &shop, &cart, "one-key").await;
                let status = res.status();
                (status, json(res).await)
            });
        }
        let mut ids = HashSet::new();
        while let Some(r) = tasks.join_next().await {
            let (status, body) = r.expect("task");
            match status {
                StatusCode::CREATED => {
                    ids.insert(body["id"].as_str().expect("id").to_owned());
                }
                StatusCode::CONFLICT => assert_eq!(body["code"], "idempotency_request_in_progress", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(ids.len(), 1, "one order, replayed to every winner");
        let orders = json(app.get_as("/v1/admin/orders", &shop.owner.access_token).await).await;
        assert_eq!(orders["data"].as_array().expect("data").len(), 1);
        assert_eq!(level(&app, &shop, &shop.tee).await, (10, 1));
    }

    async fn a_promotion_limited_to_five_uses_discounts_exactly_five_of_thirty_orders(backend: Backend) {
        let app = std::sync::Arc::new(spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), uncapped).await);
        let shop = std::sync::Arc::new(shop(&app, "ord-promo", 100).await);
        created(admin(&app, &shop.owner.access_token, Method::POST, "/v1/admin/promotions", Some(serde_json::json!({"code": "FIRST5", "percent": "50", "usage_limit": 5})), None).await).await;
        let mut carts = Vec::new();
        for _ in 0..30 {
            carts.push(ready_cart(&app, &shop, "USD", &[(&shop.mug, 1)], ny(), &shop.us_shipping, Some("FIRST5")).await.0);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, cart) in carts.into_iter().enumerate() {
            let (app, shop) = (app.clone(), shop.clone());
            tasks.spawn(async move {
                let res = checkout(&app, &shop, &cart, &format!("promo-{i}")).await;
                let status = res.status();
                (status, json(res).await)
            });
        }
        let mut discounted = 0;
        while let Some(r) = tasks.join_next().await {
            let (status, body) = r.expect("task");
            if status == StatusCode::CREATED {
                assert_eq!(amount(&body["totals"]["discount"]), 250);
                discounted += 1;
            } else {
                assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("promotion_exhausted")), "{body}");
            }
        }
        assert_eq!(discounted, 5);
        let promos = json(app.get_as("/v1/admin/promotions", &shop.owner.access_token).await).await;
        let first5 = promos["data"].as_array().expect("data").iter().find(|p| p["code"] == "FIRST5").expect("promo").clone();
        assert_eq!(first5["times_used"], 5);
    }

    async fn setup_validation_and_roles(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("ord-setup").await;
        let t = owner.access_token.as_str();
        for (path, body, pointer) in [
            ("/v1/admin/tax-rates", serde_json::json!({"country": "USA", "rate": "8.875"}), "/country"),
            ("/v1/admin/tax-rates", serde_json::json!({"country": "US", "rate": "8.8755555"}), "/rate"),
            ("/v1/admin/tax-rates", serde_json::json!({"country": "US", "rate": "101"}), "/rate"),
            ("/v1/admin/shipping-options", serde_json::json!({"name": "X", "country": "US", "amounts": [{"amount": -1, "currency": "USD"}]}), "/amounts/0/amount"),
            ("/v1/admin/promotions", serde_json::json!({"code": "BAD CODE", "percent": "10"}), "/code"),
            ("/v1/admin/promotions", serde_json::json!({"code": "BOTH", "percent": "10", "amounts": [{"amount": 1, "currency": "USD"}]}), ""),
        ] {
            let problem = assert_problem(admin(&app, t, Method::POST, path, Some(body), None).await, 422, "validation_failed").await;
            assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        }
        let rate = created(admin(&app, t, Method::POST, "/v1/admin/tax-rates", Some(serde_json::json!({"country": "US", "rate": "7.25"})), None).await).await;
        assert_eq!(rate["rate"], "7.25");
        let dup = admin(&app, t, Method::POST, "/v1/admin/tax-rates", Some(serde_json::json!({"country": "US", "rate": "8"})), None).await;
        assert_problem(dup, 422, "validation_failed").await;
        let path = format!("/v1/admin/tax-rates/{}", rate["id"].as_str().expect("id"));
        let patched = app.client.patch(app.url(&path)).bearer_auth(t).header("if-match", "\"v1\"").json(&serde_json::json!({"rate": "7.5"})).send().await.expect("send");
        assert_eq!(json(patched).await["rate"], "7.5");
        let stale = app.client.patch(app.url(&path)).bearer_auth(t).header("if-match", "\"v1\"").json(&serde_json::json!({"rate": "9"})).send().await.expect("send");
        assert_problem(stale, 412, "precondition_failed").await;
        let (_, viewer) = app.member(&owner, "viewer@ord-setup.test", "viewer").await;
        assert_eq!(app.get_as("/v1/admin/tax-rates", &viewer.access_token).await.status(), 200);
        assert_eq!(app.get_as("/v1/admin/orders", &viewer.access_token).await.status(), 200);
        let write = admin(&app, &viewer.access_token, Method::POST, "/v1/admin/promotions", Some(serde_json::json!({"code": "V", "percent": "1"})), None).await;
        assert_problem(write, 403, "forbidden").await;
        let (_, other) = app.owner_with_tokens("ord-other").await;
        assert_problem(app.get_as(&path, &other.access_token).await, 404, "not_found").await;
    }

    /// The expiry job with a configured expiry of 60 s, run as `serve` runs it but at a chosen
    /// "now" (no sleeping): the unpaid order is cancelled and its stock released; a paid one stays.
    async fn unpaid_orders_expire_and_release_their_stock(backend: Backend) {
        let app = spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| raw.unpaid_order_ttl_s = 60).await;
        let shop = shop(&app, "ord-expiry", 5).await;
        let (unpaid_cart, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 2)], ny(), &shop.us_shipping, None).await;
        let unpaid = created(checkout(&app, &shop, &unpaid_cart, "exp-1").await).await;
        let (paid_cart, _) = ready_cart(&app, &shop, "USD", &[(&shop.tee, 1)], ny(), &shop.us_shipping, None).await;
        let paid = created(checkout(&app, &shop, &paid_cart, "exp-2").await).await;
        created(pay(&app, &shop, &paid_cart, paid["id"].as_str().expect("id"), "exp-pay").await).await;
        assert_eq!(level(&app, &shop, &shop.tee).await, (5, 3));
        let now = time::OffsetDateTime::now_utc();
        keel::maintenance_pass(&app.settings, &app.store, now + time::Duration::seconds(30)).await.expect("pass");
        let path = format!("/v1/admin/orders/{}", unpaid["id"].as_str().expect("id"));
        assert_eq!(json(app.get_as(&path, &shop.owner.access_token).await).await["status"], "pending_payment", "not yet due at 30 s");
        keel::maintenance_pass(&app.settings, &app.store, now + time::Duration::seconds(61)).await.expect("pass");
        let expired = json(app.get_as(&path, &shop.owner.access_token).await).await;
        assert_eq!((expired["status"].as_str(), expired["cancel_reason"].as_str()), (Some("cancelled"), Some("expired unpaid")));
        assert_eq!(level(&app, &shop, &shop.tee).await, (5, 1), "its stock is released; the paid order keeps its unit");
        let still_paid = json(app.get_as(&format!("/v1/admin/orders/{}", paid["id"].as_str().expect("id")), &shop.owner.access_token).await).await;
        assert_eq!(still_paid["status"], "paid");
        assert_problem(pay(&app, &shop, &unpaid_cart, unpaid["id"].as_str().expect("id"), "exp-late").await, 409, "order_not_payable").await;
    }
    async fn customers_order_with_inclusive_prices_and_a_once_per_customer_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, "ord-cus", 10).await;
        let t = shop.owner.access_token.clone();
        let settings = admin(&app, &t, Method::PATCH, "/v1/admin/settings", Some(serde_json::json!({"prices_include_tax": true})), None).await;
        assert_eq!(json(settings).await["prices_include_tax"], true);
        created(admin(&app, &t, Method::POST, "/v1/admin/promotions", Some(serde_json::json!({"code": "ONCE", "percent": "20", "per_customer_limit": 1})), None).await).await;
        let signup = created(store(&app, &shop, None, Method::POST, "/v1/store/customers", Some(serde_json::json!({"email": "cora@example.test", "password": "saffron-glacier-tulip-8832"})), None).await).await;
        let bearer = signup["tokens"]["access_token"].as_str().expect("token").to_owned();
        let as_customer = |method: Method, path: String, body: Option<serde_json::Value>, key: Option<&'static str>| {
            let mut req = app.client.request(method, app.url(&path)).header("keel-publishable-key", &shop.pk).bearer_auth(&bearer);
            if let Some(k) = key {
                req = req.header("idempotency-key", k);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send()
        };
        let mut orders = Vec::new();
        for (round, key) in [(1, "cus-1"), (2, "cus-2")] {
            let cart = created(as_customer(Method::POST, "/v1/store/carts".into(), Some(serde_json::json!({"currency": "JPY"})), None).await.expect("send")).await;
            assert!(cart["cart_secret"].is_null(), "a customer's cart needs no secret");
            let id = cart["cart"]["id"].as_str().expect("id").to_owned();
            for (suffix, method, body) in [
                ("/items", Method::POST, serde_json::json!({"variant_id": shop.tee, "quantity": 2})),
                ("/shipping-address", Method::PUT, tokyo()),
                ("/shipping-option", Method::PUT, serde_json::json!({"shipping_option_id": shop.jp_shipping})),
            ] {
                let res = as_customer(method, format!("/v1/store/carts/{id}{suffix}"), Some(body), None).await.expect("send");
                assert_eq!(res.status(), 200);
            }
            let priced = json(as_customer(Method::POST, format!("/v1/store/carts/{id}/promotions"), Some(serde_json::json!({"code": "once"})), None).await.expect("send")).await;
            // ¥5,000 − 20 % = ¥4,000 with 10 % tax inside: ¥4,000 × 10 / 110 = ¥363.6 → ¥364;
            // shipping ¥1,200 is untaxed in Japan. Inclusive: the total adds no tax.
            assert_eq!(totals(&priced), [5000, 1000, 1200, 0, 364, 5200]);
            assert_eq!(priced["totals"]["tax_inclusive"], true);
            let res = as_customer(Method::POST, format!("/v1/store/carts/{id}/checkout"), None, Some(key)).await.expect("send");
            if round == 1 {
                orders.push(created(res).await["id"].as_str().expect("id").to_owned());
            } else {
                assert_problem(res, 409, "promotion_customer_limit").await;
            }
        }
        // A guest cannot see the customer's cart; the customer lists their orders.
        let mine = json(as_customer(Method::GET, "/v1/store/me/orders".into(), None, None).await.expect("send")).await;
        let ids: Vec<&str> = mine["data"].as_array().expect("data").iter().map(|o| o["id"].as_str().expect("id")).collect();
        assert_eq!(ids, orders.iter().map(String::as_str).collect::<Vec<_>>());
        let guest = new_cart(&app, &shop, "JPY").await;
        let peek = store(&app, &shop, Some(&guest.secret), Method::GET, &format!("/v1/store/orders/{}", orders[0]), None, None).await;
        assert_problem(peek, 404, "not_found").await;
    }
}
