//! Payments through the provider over real HTTP, once per backend, against localstripe (PyPI,
//! a stateful Stripe API simulator written by others; ADR 0034): the shopper's flow from
//! checkout to `paid` through the provider's own signed webhook, the inbox under replays and
//! forgeries, reconciliation when webhooks are lost, the exact-amount rule, compensation of a
//! payment for an expired order, and refunds through the provider capped by Keel.

use std::{sync::Arc, time::Duration};

use keel_faults::localstripe::{self, LocalStripe, SECRET, pay_as_the_browser};
use keel_kernel::clock::ManualClock;
use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{Shop, admin, checkout, created, json, ny, ready_cart, shop, shop as shop_fn, store},
    spawn_app_with,
};
use reqwest::{Method, StatusCode};

const WEBHOOK_SECRET: &str = "whsec_keel_payments_test";

/// The app against the provider at `base`, with `configure` on top; the app's own
/// reconciliation job stays out of the way (the tests run passes themselves, at the times
/// they choose).
async fn app_on_provider(
    backend: Backend,
    base: String,
    configure: impl FnOnce(&mut keel::config::RawConfig) + Send + 'static,
) -> TestApp {
    spawn_app_with(
        backend,
        utoipa_axum::router::OpenApiRouter::new(),
        move |raw| {
            raw.payments.stripe.api_base = base;
            raw.payments.reconcile_interval_ms = 3_600_000;
            configure(raw);
        },
    )
    .await
}

/// The app against its own localstripe.
async fn app_with_stripe(backend: Backend) -> (TestApp, LocalStripe) {
    let stripe = localstripe::start().await;
    let app = app_on_provider(backend, stripe.base.clone(), |_| {}).await;
    (app, stripe)
}

/// The shop takes Stripe payments (the key localstripe accepts, one webhook secret).
async fn enable_stripe(app: &TestApp, shop: &Shop) -> serde_json::Value {
    let res = admin(
        app,
        &shop.owner.access_token,
        Method::PUT,
        "/v1/admin/payment-providers/stripe",
        Some(serde_json::json!({"enabled": true, "secret_key": SECRET, "webhook_secrets": [WEBHOOK_SECRET]})),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    json(res).await
}

/// Where the shop's provider sends its webhooks (the shop's id from `/v1/me`).
async fn hook_url(app: &TestApp, shop: &Shop) -> String {
    let me = json(app.get_as("/v1/me", &shop.owner.access_token).await).await;
    let tenant = me["tenant_id"].as_str().expect("tenant id");
    app.url(&format!("/v1/hooks/payments/stripe/{tenant}"))
}

/// A checked-out order (two tees to New York) and its cart.
async fn place_order(
    app: &TestApp,
    shop: &Shop,
    tag: &str,
) -> (keel_testkit::shop::Cart, serde_json::Value) {
    let (cart, _) = ready_cart(
        app,
        shop,
        "USD",
        &[(&shop.tee, 2)],
        ny(),
        &shop.us_shipping,
        None,
    )
    .await;
    let order = created(checkout(app, shop, &cart, &format!("{tag}-checkout")).await).await;
    (cart, order)
}

/// A shop that takes Stripe payments (`prefix`), and one of its checked-out orders (`tag`):
/// the shop, the order's cart, the order and its id.
async fn stripe_shop_order(
    app: &TestApp,
    prefix: &str,
    tag: &str,
) -> (Shop, keel_testkit::shop::Cart, serde_json::Value, String) {
    let shop = shop(app, prefix, 10).await;
    enable_stripe(app, &shop).await;
    let (cart, order) = place_order(app, &shop, tag).await;
    let id = order["id"].as_str().expect("id").to_owned();
    (shop, cart, order, id)
}

async fn open_session(
    app: &TestApp,
    shop: &Shop,
    cart: &keel_testkit::shop::Cart,
    order_id: &str,
) -> reqwest::Response {
    store(
        app,
        shop,
        Some(&cart.secret),
        Method::POST,
        &format!("/v1/store/orders/{order_id}/payment-sessions"),
        None,
        None,
    )
    .await
}

async fn staff_order(app: &TestApp, shop: &Shop, id: &str) -> serde_json::Value {
    json(
        app.get_as(&format!("/v1/admin/orders/{id}"), &shop.owner.access_token)
            .await,
    )
    .await
}

fn count_events(order: &serde_json::Value, kind: &str) -> usize {
    order["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

/// Polls the staff view of an order until `done` holds, for at most 30 s (localstripe sends
/// its webhooks one second after the event).
async fn until(
    app: &TestApp,
    shop: &Shop,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let order = staff_order(app, shop, id).await;
        if done(&order) {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order never reached the state: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A payments service over the app's store at a chosen time (reconciliation's clock).
fn payments_at(app: &TestApp, at: time::OffsetDateTime) -> keel_payments::service::PaymentsService {
    let master = Arc::new(keel::secrets::master_key(&app.settings).expect("master key"));
    keel::payments_service(
        &app.settings,
        &app.store,
        master,
        Arc::new(ManualClock::new(at)),
    )
    .expect("service")
}

fn signed(body: &[u8], secret: &str, at: i64) -> String {
    keel_payments::signature::header(secret.as_bytes(), at, body)
}

/// A `payment_intent.succeeded` event as Stripe shapes it.
fn succeeded_event(id: &str, intent: &str, amount: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": intent, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": "usd", "status": "succeeded", "metadata": {}}}
    }))
    .expect("json")
}

async fn post_hook(
    app: &TestApp,
    shop: &Shop,
    body: Vec<u8>,
    signature: &str,
) -> reqwest::Response {
    app.client
        .post(hook_url(app, shop).await)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send")
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

backend_tests! {
    /// Acceptance 1: checkout, a payment session, the shopper confirms with the provider, the
    /// provider's signed webhook marks the order paid: `order.paid` exactly once. Secrets are
    /// never shown back.
    async fn a_shopper_pays_through_the_provider_and_its_webhook_marks_the_order_paid(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let shop = shop(&app, "pay-flow", 10).await;
        let (cart, order) = place_order(&app, &shop, "flow").await;
        let id = order["id"].as_str().expect("id").to_owned();
        // Not set up yet: the storefront hears so, and nothing is created.
        assert_problem(open_session(&app, &shop, &cart, &id).await, 409, "payment_provider_not_configured").await;
        let settings = enable_stripe(&app, &shop).await;
        assert_eq!(settings["secret_key_set"], true);
        assert_eq!(settings["webhook_secrets"], 1);
        let shown = app.get_as("/v1/admin/payment-providers", &shop.owner.access_token).await.text().await.expect("body");
        assert!(!shown.contains(SECRET) && !shown.contains(WEBHOOK_SECRET), "{shown}");
        localstripe::register_webhook(&stripe.base, "keel", &hook_url(&app, &shop).await, WEBHOOK_SECRET).await;

        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        assert_eq!(session["amount"], order["totals"]["total"], "exactly the order's total");
        assert_eq!(session["status"], "open");
        assert!(session["client_secret"].as_str().is_some_and(|s| !s.is_empty()));
        let again = created(open_session(&app, &shop, &cart, &id).await).await;
        assert_eq!(again["id"], session["id"], "one session per order");
        assert_eq!(again["provider_reference"], session["provider_reference"]);
        assert_eq!(staff_order(&app, &shop, &id).await["status"], "pending_payment");

        pay_as_the_browser(&stripe.base, session["provider_reference"].as_str().expect("pi")).await;
        let paid = until(&app, &shop, &id, |o| o["status"] == "paid").await;
        assert_eq!(paid["payment_status"], "paid");
        assert_eq!(paid["payments"][0]["provider"], "stripe");
        assert_eq!(paid["payments"][0]["provider_reference"], session["provider_reference"]);
        assert_eq!(paid["captured"], order["totals"]["total"]);
        assert_eq!(count_events(&paid, "order.paid"), 1);
        // Paid: no new session.
        assert_problem(open_session(&app, &shop, &cart, &id).await, 409, "order_not_payable").await;
    }

    /// Acceptance 2: the provider's own delivery replayed five times at once and once more
    /// later changes nothing; a forged signature, a body changed after signing and a
    /// timestamp 301 s old are refused with 400 and change nothing, while the same event
    /// correctly signed would have paid the order.
    async fn replays_have_no_second_effect_and_forgeries_none_at_all(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let shop = shop(&app, "pay-replay", 10).await;
        enable_stripe(&app, &shop).await;
        let mut recorder = keel_faults::Recorder::start().await;
        localstripe::register_webhook(&stripe.base, "keel", &hook_url(&app, &shop).await, WEBHOOK_SECRET).await;
        localstripe::register_webhook(&stripe.base, "copy", &format!("{}/copy", recorder.url), WEBHOOK_SECRET).await;
        let (cart, order) = place_order(&app, &shop, "replay").await;
        let id = order["id"].as_str().expect("id").to_owned();
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        pay_as_the_browser(&stripe.base, session["provider_reference"].as_str().expect("pi")).await;
        until(&app, &shop, &id, |o| o["status"] == "paid").await;
        // The same delivery as localstripe sent it to Keel (its copy, byte for byte).
        let (body, signature) = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let got = recorder.next().await;
                if String::from_utf8_lossy(&got.body).contains("payment_intent.succeeded") {
                    return (got.body.clone(), got.header("stripe-signature").unwrap_or_default().to_owned());
                }
            }
        })
        .await
        .expect("the provider's delivery");
        let replays = (0..5).map(|_| post_hook(&app, &shop, body.clone(), &signature));
        for res in futures_util::future::join_all(replays).await {
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(json(res).await["duplicate"], true);
        }
        let later = post_hook(&app, &shop, body.clone(), &signature).await;
        assert_eq!(json(later).await["duplicate"], true);
        let paid = staff_order(&app, &shop, &id).await;
        assert_eq!(count_events(&paid, "order.paid"), 1, "one state change, one event");
        assert_eq!(paid["payments"].as_array().expect("payments").len(), 1);

        // A second order, with a session, still unpaid.
        let (cart2, order2) = place_order(&app, &shop, "forged").await;
        let id2 = order2["id"].as_str().expect("id").to_owned();
        let session2 = created(open_session(&app, &shop, &cart2, &id2).await).await;
        let total = order2["totals"]["total"]["amount"].as_i64().expect("total");
        let event = succeeded_event("evt_keel_forged", session2["provider_reference"].as_str().expect("pi"), total);
        let before = staff_order(&app, &shop, &id2).await;
        let forged = post_hook(&app, &shop, event.clone(), &signed(&event, "whsec_not_the_shops", now_s())).await;
        assert_problem(forged, 400, "invalid_webhook_signature").await;
        let mut changed = event.clone();
        let at = changed.len() / 2;
        changed[at] ^= 1;
        let tampered = post_hook(&app, &shop, changed, &signed(&event, WEBHOOK_SECRET, now_s())).await;
        assert_problem(tampered, 400, "invalid_webhook_signature").await;
        let stale = post_hook(&app, &shop, event.clone(), &signed(&event, WEBHOOK_SECRET, now_s() - 301)).await;
        assert_problem(stale, 400, "invalid_webhook_signature").await;
        let unknown_shop = app.client.post(app.url("/v1/hooks/payments/stripe/ten_01h00000000000000000000000"))
            .header("stripe-signature", signed(&event, WEBHOOK_SECRET, now_s())).body(event.clone()).send().await.expect("send");
        assert_problem(unknown_shop, 400, "invalid_webhook_signature").await;
        assert_eq!(staff_order(&app, &shop, &id2).await, before, "nothing changed");
        // The control, not the event, refused them: signed by the shop's secret it pays.
        let genuine = post_hook(&app, &shop, event.clone(), &signed(&event, WEBHOOK_SECRET, now_s())).await;
        assert_eq!(json(genuine).await["duplicate"], false, "nothing of the refused ones was stored");
        assert_eq!(staff_order(&app, &shop, &id2).await["status"], "paid");

        // A shop that saved the provider switched off and without secrets is refused the same
        // way (never a 500).
        let other = shop_fn(&app, "pay-replay-off", 1).await;
        let off = admin(&app, &other.owner.access_token, Method::PUT, "/v1/admin/payment-providers/stripe", Some(serde_json::json!({"enabled": false})), None).await;
        assert_eq!(off.status(), StatusCode::OK);
        let to_off = post_hook(&app, &other, event.clone(), &signed(&event, WEBHOOK_SECRET, now_s())).await;
        assert_problem(to_off, 400, "invalid_webhook_signature").await;
    }

    /// Acceptance 3: with no webhook at all (none registered), reconciliation asks the
    /// provider about the session once it is older than the exact age, and the order is paid
    /// by the first pass after that; a pass before it does not ask.
    async fn reconciliation_pays_an_order_whose_webhook_never_came(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let (shop, cart, _order, id) = stripe_shop_order(&app, "pay-recon", "recon").await;
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        pay_as_the_browser(&stripe.base, session["provider_reference"].as_str().expect("pi")).await;
        let opened = time::OffsetDateTime::parse(session["created_at"].as_str().expect("at"), &time::format_description::well_known::Rfc3339).expect("time");
        let after = app.settings.payments.service.reconcile_after;
        let early = payments_at(&app, opened + after - time::Duration::seconds(1)).reconcile(100).await.expect("pass");
        assert_eq!(early.checked, 0, "not due before its age");
        assert_eq!(staff_order(&app, &shop, &id).await["status"], "pending_payment");
        let due = payments_at(&app, opened + after).reconcile(100).await.expect("pass");
        assert_eq!((due.checked, due.settled), (1, 1));
        let paid = staff_order(&app, &shop, &id).await;
        assert_eq!(paid["status"], "paid");
        assert_eq!(count_events(&paid, "order.paid"), 1);
        // Settled: never asked about again.
        let again = payments_at(&app, opened + after * 3).reconcile(100).await.expect("pass");
        assert_eq!(again.checked, 0);
    }

    /// Acceptance 4: a payment one minor unit off the order's total is never a payment of
    /// it: the order stays payable and staff see `payment.mismatch`.
    async fn a_payment_one_minor_unit_off_is_a_mismatch_not_a_payment(backend: Backend) {
        let (app, _stripe) = app_with_stripe(backend).await;
        let (shop, cart, order, id) = stripe_shop_order(&app, "pay-mismatch", "mismatch").await;
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        let total = order["totals"]["total"]["amount"].as_i64().expect("total");
        let event = succeeded_event("evt_keel_short", session["provider_reference"].as_str().expect("pi"), total - 1);
        let res = post_hook(&app, &shop, event.clone(), &signed(&event, WEBHOOK_SECRET, now_s())).await;
        assert_eq!(res.status(), StatusCode::OK);
        let after = staff_order(&app, &shop, &id).await;
        assert_eq!(after["status"], "pending_payment");
        assert_eq!(after["payment_status"], "unpaid");
        assert_eq!(count_events(&after, "payment.mismatch"), 1);
        assert_eq!(count_events(&after, "order.paid"), 0);
    }

    /// Acceptance 5: a payment that succeeds after its order expired (stock released) is
    /// refunded at the provider automatically, recorded on the order, events in order.
    async fn a_payment_for_an_expired_order_is_refunded_at_the_provider(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let shop = shop(&app, "pay-late", 10).await;
        enable_stripe(&app, &shop).await;
        localstripe::register_webhook(&stripe.base, "keel", &hook_url(&app, &shop).await, WEBHOOK_SECRET).await;
        let (cart, order) = place_order(&app, &shop, "late").await;
        let id = order["id"].as_str().expect("id").to_owned();
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        let expires = time::OffsetDateTime::parse(order["expires_at"].as_str().expect("expiry"), &time::format_description::well_known::Rfc3339).expect("time");
        keel::maintenance_pass(&app.settings, &app.store, expires).await.expect("pass");
        assert_eq!(staff_order(&app, &shop, &id).await["status"], "cancelled");
        let intent = session["provider_reference"].as_str().expect("pi").to_owned();
        pay_as_the_browser(&stripe.base, &intent).await;
        let done = until(&app, &shop, &id, |o| o["refunds"][0]["status"] == "succeeded").await;
        assert_eq!(done["status"], "cancelled");
        assert_eq!(done["payment_status"], "refunded");
        assert_eq!(done["captured"], order["totals"]["total"]);
        assert_eq!(done["refunded"], order["totals"]["total"]);
        let kinds: Vec<&str> = done["timeline"].as_array().expect("timeline").iter().map(|e| e["type"].as_str().expect("type")).collect();
        let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k} in {kinds:?}"));
        assert!(pos("order.cancelled") < pos("payment.compensation_started"));
        assert!(pos("payment.compensation_started") < pos("order.refunded"));
        assert_eq!(count_events(&done, "order.paid"), 0, "never counted as paid");
        let refunded = provider_refunds(&stripe, &intent).await;
        assert_eq!(refunded, order["totals"]["total"]["amount"].as_i64().expect("total"), "the provider gave it all back");
    }

    /// Capture mode `manual`: the shopper's confirmation only authorises; the order stays
    /// payable until staff capture, which takes exactly its total and pays it once (the
    /// provider's later `payment_intent.succeeded` changes nothing).
    async fn staff_capture_an_authorised_payment_and_the_order_is_paid_once(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let shop = shop(&app, "pay-capture", 10).await;
        let t = shop.owner.access_token.clone();
        let set = admin(&app, &t, Method::PUT, "/v1/admin/payment-providers/stripe",
            Some(serde_json::json!({"enabled": true, "capture_mode": "manual", "secret_key": SECRET, "webhook_secrets": [WEBHOOK_SECRET]})), None).await;
        assert_eq!(json(set).await["capture_mode"], "manual");
        localstripe::register_webhook(&stripe.base, "keel", &hook_url(&app, &shop).await, WEBHOOK_SECRET).await;
        let mut copy = keel_faults::Recorder::start().await;
        localstripe::register_webhook(&stripe.base, "copy", &format!("{}/copy", copy.url), WEBHOOK_SECRET).await;
        let (cart, order) = place_order(&app, &shop, "capture").await;
        let id = order["id"].as_str().expect("id").to_owned();
        // Nothing authorised yet: nothing to capture.
        assert_problem(admin(&app, &t, Method::POST, &format!("/v1/admin/orders/{id}/capture"), None, None).await, 409, "payment_not_capturable").await;
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        let intent = session["provider_reference"].as_str().expect("pi").to_owned();
        pay_as_the_browser(&stripe.base, &intent).await;
        assert_eq!(staff_order(&app, &shop, &id).await["status"], "pending_payment", "authorised, not paid");
        let captured = admin(&app, &t, Method::POST, &format!("/v1/admin/orders/{id}/capture"), None, None).await;
        assert_eq!(captured.status(), StatusCode::OK);
        let paid = json(captured).await;
        assert_eq!(paid["status"], "paid");
        assert_eq!(paid["captured"], order["totals"]["total"]);
        // The provider's own `payment_intent.succeeded` about the capture (its copy, sent to
        // Keel again whether or not Keel's own delivery came first) changes nothing.
        let (body, signature) = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let got = copy.next().await;
                if String::from_utf8_lossy(&got.body).contains("payment_intent.succeeded") {
                    return (got.body.clone(), got.header("stripe-signature").unwrap_or_default().to_owned());
                }
            }
        })
        .await
        .expect("the provider's event about the capture");
        assert_eq!(post_hook(&app, &shop, body, &signature).await.status(), StatusCode::OK);
        let settled = staff_order(&app, &shop, &id).await;
        assert_eq!(count_events(&settled, "order.paid"), 1);
        assert_eq!(settled["payments"].as_array().expect("payments").len(), 1);
        assert_problem(admin(&app, &t, Method::POST, &format!("/v1/admin/orders/{id}/capture"), None, None).await, 409, "order_not_payable").await;
    }

    /// Acceptance 8: staff refunds go through the provider: partial plus partial up to what was
    /// captured work, one more minor unit is refused, and concurrent refunds never pass what
    /// was captured (the provider's own sum checked).
    async fn refunds_go_through_the_provider_and_never_pass_what_was_captured(backend: Backend) {
        let (app, stripe) = app_with_stripe(backend).await;
        let shop = shop(&app, "pay-refund", 10).await;
        enable_stripe(&app, &shop).await;
        let t = shop.owner.access_token.clone();
        let paid_order = |tag: &'static str| {
            let (app, shop, stripe) = (&app, &shop, &stripe);
            async move {
                let (cart, order) = place_order(app, shop, tag).await;
                let id = order["id"].as_str().expect("id").to_owned();
                let session = created(open_session(app, shop, &cart, &id).await).await;
                let intent = session["provider_reference"].as_str().expect("pi").to_owned();
                pay_as_the_browser(&stripe.base, &intent).await;
                let opened = time::OffsetDateTime::parse(session["created_at"].as_str().expect("at"), &time::format_description::well_known::Rfc3339).expect("time");
                payments_at(app, opened + app.settings.payments.service.reconcile_after).reconcile(100).await.expect("pass");
                let paid = staff_order(app, shop, &id).await;
                assert_eq!(paid["status"], "paid");
                (id, intent, paid["captured"]["amount"].as_i64().expect("captured"))
            }
        };
        let (id, intent, captured) = paid_order("refund-a").await;
        let first = created(refund(&app, &t, &id, 1000, "r-1").await).await;
        assert_eq!(first["refunds"][0]["status"], "pending", "answered as recorded, before the provider");
        created(refund(&app, &t, &id, captured - 1000, "r-2").await).await;
        let done = staff_order(&app, &shop, &id).await;
        assert_eq!(done["payment_status"], "refunded");
        assert!(done["refunds"].as_array().expect("refunds").iter().all(|r| r["status"] == "succeeded"), "{done}");
        assert_problem(refund(&app, &t, &id, 1, "r-3").await, 409, "order_not_refundable").await;
        assert_eq!(provider_refunds(&stripe, &intent).await, captured);

        let (id, intent, captured) = paid_order("refund-b").await;
        let quarter = captured / 4 + 1;
        let keys: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
        let many = keys.iter().map(|k| refund(&app, &t, &id, quarter, k));
        let answers = futures_util::future::join_all(many).await;
        let accepted = answers.iter().filter(|r| r.status() == StatusCode::CREATED).count();
        assert!((1..=3).contains(&accepted), "at most three quarters and a bit fit: {accepted} accepted");
        let at_provider = provider_refunds(&stripe, &intent).await;
        assert!(at_provider <= captured, "the provider refunded {at_provider} of {captured}");
        let order = staff_order(&app, &shop, &id).await;
        assert_eq!(order["refunded"]["amount"].as_i64(), Some(at_provider), "Keel's record is the provider's");
    }

    /// Acceptance 6 over HTTP: with the provider answering 500s, the circuit opens; then a
    /// session request answers 503 `payment_provider_unavailable` with `Retry-After` without
    /// reaching the provider (the proxy counts), the order stays payable, the shop keeps selling,
    /// and `/metrics` shows the open circuit.
    async fn an_unwell_provider_opens_the_circuit_and_the_shop_keeps_selling(backend: Backend) {
        let stripe = localstripe::start().await;
        let proxy = keel_faults::FaultProxy::start(&stripe.base).await;
        let app = app_on_provider(backend, proxy.url.clone(), |raw| {
            raw.payments.stripe.retry_delays = "1ms".into();
            raw.payments.stripe.circuit_open_ms = 3_600_000;
        })
        .await;
        let (shop, cart, _order, id) = stripe_shop_order(&app, "pay-circuit", "circuit").await;
        proxy.always(Some(keel_faults::Fault::Status(500)));
        // Five failed attempts open it (each request tries twice: one retry of 1 ms).
        for _ in 0..3 {
            assert_problem(
                open_session(&app, &shop, &cart, &id).await,
                503,
                "payment_provider_unavailable",
            )
            .await;
        }
        let reached = proxy.arrived();
        assert_eq!(
            reached, 5,
            "the circuit opened at the fifth consecutive failure"
        );
        let refused = open_session(&app, &shop, &cart, &id).await;
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
        assert_problem(refused, 503, "payment_provider_unavailable").await;
        assert_eq!(
            proxy.arrived(),
            reached,
            "refused without reaching the provider"
        );
        assert_eq!(
            staff_order(&app, &shop, &id).await["status"],
            "pending_payment",
            "still payable"
        );
        let products = store(
            &app,
            &shop,
            None,
            Method::GET,
            "/v1/store/products?currency=USD",
            None,
            None,
        )
        .await;
        assert_eq!(
            products.status(),
            StatusCode::OK,
            "nothing else slows down or fails"
        );
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        assert!(
            metrics.contains("keel_circuit_state{dependency=\"stripe\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("keel_circuit_transitions_total{dependency=\"stripe\"} 1"),
            "{metrics}"
        );
        // The third request's retry and the fourth request: two calls that never left.
        assert!(
            metrics.contains("keel_circuit_refused_total{dependency=\"stripe\"} 2"),
            "{metrics}"
        );
    }

    /// A refund the provider answers `pending` (Stripe does when the balance must cover it first):
    /// the order shows it pending, the retry job asks about it by its id and never makes it
    /// again, and when the provider finishes it the order records it. Against the test kit's
    /// Stripe simulator (localstripe refunds at once).
    async fn a_refund_pending_at_the_provider_is_asked_about_never_made_twice(backend: Backend) {
        let sim = keel_faults::stripe_sim::StripeSimulator::start().await;
        let app = app_on_provider(backend, sim.url.clone(), |_| {}).await;
        let (shop, cart, order, id) = stripe_shop_order(&app, "pay-pending", "pending").await;
        let session = created(open_session(&app, &shop, &cart, &id).await).await;
        let intent = session["provider_reference"]
            .as_str()
            .expect("pi")
            .to_owned();
        sim.succeed(&intent);
        let total = order["totals"]["total"]["amount"].as_i64().expect("total");
        let event = succeeded_event("evt_sim_paid", &intent, total);
        post_hook(
            &app,
            &shop,
            event.clone(),
            &signed(&event, WEBHOOK_SECRET, now_s()),
        )
        .await;
        assert_eq!(staff_order(&app, &shop, &id).await["status"], "paid");

        sim.refunds_pending(true);
        let t = shop.owner.access_token.clone();
        created(refund(&app, &t, &id, 500, "pending-1").await).await;
        assert_eq!(sim.refunds(), (1, 1));
        let now = time::OffsetDateTime::now_utc();
        let retry = app.settings.payments.service.refund_retry;
        let early = payments_at(&app, now + retry + time::Duration::seconds(1))
            .retry_refunds(100)
            .await
            .expect("pass");
        assert_eq!((early.refunds_tried, early.refunds_settled), (1, 0));
        assert_eq!(
            staff_order(&app, &shop, &id).await["refunds"][0]["status"],
            "pending"
        );
        sim.finish_refunds();
        let later = payments_at(&app, now + retry * 3)
            .retry_refunds(100)
            .await
            .expect("pass");
        assert_eq!((later.refunds_tried, later.refunds_settled), (1, 1));
        let done = staff_order(&app, &shop, &id).await;
        assert_eq!(done["refunds"][0]["status"], "succeeded");
        assert_eq!(count_events(&done, "order.refunded"), 1);
        assert_eq!(
            sim.refunds(),
            (1, 1),
            "made once, never asked to make it again"
        );
    }

    /// Acceptance 7: with the provider answering after 5 s, 100 concurrent session requests keep
    /// at most 16 provider calls in flight (the proxy's peak); the rest answer 503
    /// `payment_provider_unavailable` once the exact queue wait is spent, and the storefront keeps
    /// answering meanwhile. (Its latency under this load is a benchmark figure, not asserted.)
    async fn a_slow_provider_holds_at_most_the_bulkhead_and_the_rest_fail_fast(backend: Backend) {
        // The test kit's simulator honours idempotency keys as Stripe does, so the calls that get
        // a slot all answer the order's one payment (localstripe would make one per call).
        let stripe = keel_faults::stripe_sim::StripeSimulator::start().await;
        let proxy = keel_faults::FaultProxy::start(&stripe.url).await;
        let app = app_on_provider(backend, proxy.url.clone(), |_| {}).await;
        let (shop, cart, _order, id) = stripe_shop_order(&app, "pay-bulkhead", "bulkhead").await;
        proxy.always(Some(keel_faults::Fault::Delay(Duration::from_secs(5))));
        let sessions = (0..100).map(|_| open_session(&app, &shop, &cart, &id));
        let storefront = async {
            let res = store(
                &app,
                &shop,
                None,
                Method::GET,
                "/v1/store/products?currency=USD",
                None,
                None,
            )
            .await;
            res.status()
        };
        let (answers, browsing) = tokio::join!(futures_util::future::join_all(sessions), storefront);
        assert_eq!(browsing, StatusCode::OK, "the shop keeps answering");
        let max = u64::from(app.settings.payments.stripe.policy.max_concurrent);
        assert_eq!(max, 16);
        assert!(
            proxy.peak_held() <= max,
            "{} provider calls held at once",
            proxy.peak_held()
        );
        assert_eq!(
            proxy.arrived(),
            max,
            "exactly the bulkhead's calls reached the provider"
        );
        let mut created = 0;
        for res in answers {
            match res.status() {
                StatusCode::CREATED => created += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_problem(res, 503, "payment_provider_unavailable").await;
                }
                other => panic!("{other}: {}", res.text().await.unwrap_or_default()),
            }
        }
        assert_eq!(created, max, "the calls that got a slot were answered");
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        assert!(
            metrics.contains(&format!(
                "keel_bulkhead_rejected_total{{dependency=\"stripe\"}} {}",
                100 - max
            )),
            "{metrics}"
        );
    }

    /// A session whose payment the provider no longer knows (the shop changed accounts) does not
    /// leave the order unpayable: the next request closes it and opens a new one (another key, a
    /// new payment); reconciliation closes such a session of a closed order instead of asking
    /// about it forever. Against the test kit's simulator (it can forget a payment).
    async fn a_session_the_provider_forgot_is_replaced_not_a_dead_end(backend: Backend) {
        let sim = keel_faults::stripe_sim::StripeSimulator::start().await;
        let app = app_on_provider(backend, sim.url.clone(), |_| {}).await;
        let (shop, cart, order, id) = stripe_shop_order(&app, "pay-forgot", "forgot").await;
        let first = created(open_session(&app, &shop, &cart, &id).await).await;
        sim.forget(first["provider_reference"].as_str().expect("pi"));
        let second = created(open_session(&app, &shop, &cart, &id).await).await;
        assert_ne!(second["id"], first["id"]);
        assert_ne!(second["provider_reference"], first["provider_reference"]);
        assert_eq!(sim.intents_made(), 2);
        let detail = staff_order(&app, &shop, &id).await;
        assert_eq!(
            count_events(&detail, "payment.canceled"),
            1,
            "the forgotten one closed"
        );

        // Forgotten again, and the order expires: reconciliation closes it for good.
        sim.forget(second["provider_reference"].as_str().expect("pi"));
        let expires = time::OffsetDateTime::parse(
            order["expires_at"].as_str().expect("expiry"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        keel::maintenance_pass(&app.settings, &app.store, expires)
            .await
            .expect("pass");
        let opened = time::OffsetDateTime::parse(
            second["created_at"].as_str().expect("at"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        let at = expires.max(opened + app.settings.payments.service.reconcile_after);
        let pass = payments_at(&app, at).reconcile(100).await.expect("pass");
        assert_eq!((pass.checked, pass.settled), (1, 1));
        let again = payments_at(&app, at + time::Duration::days(1))
            .reconcile(100)
            .await
            .expect("pass");
        assert_eq!(again.checked, 0, "never asked about again");
    }
}

async fn refund(app: &TestApp, token: &str, id: &str, amount: i64, key: &str) -> reqwest::Response {
    admin(
        app,
        token,
        Method::POST,
        &format!("/v1/admin/orders/{id}/refunds"),
        Some(serde_json::json!({"amount": amount})),
        Some(key),
    )
    .await
}

/// What the provider refunded of a payment in all, by its own account.
async fn provider_refunds(stripe: &LocalStripe, intent: &str) -> i64 {
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/refunds?payment_intent={intent}&limit=100",
            stripe.base
        ))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("refunds")
        .json()
        .await
        .expect("json");
    list["data"]
        .as_array()
        .expect("refund list")
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["amount"].as_i64().expect("amount"))
        .sum()
}
