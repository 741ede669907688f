//! Finding 6: the client address. Behind trusted proxies it comes from the forwarding header,
//! walked from the right; from anyone else the header is ignored. IPv6 clients count by their
//! /64, and the per-address login limit counts per shop and side, so one shop's attacker
//! cannot lock out logins at another.

use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, assert_problem, backend_tests, spawn_app_with,
};

/// The default per-address limit (`KEEL_AUTH__LOGIN_IP_MAX`).
const IP_MAX: usize = 20;

async fn login_from(
    app: &TestApp,
    slug: &str,
    email: &str,
    password: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&serde_json::json!({"tenant": slug, "email": email, "password": password}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.expect("login reaches the server")
}

/// `IP_MAX` failed logins for distinct (unknown) accounts of `slug`, each claiming to come
/// from `forwarded(i)`: only the address limit can be reached.
async fn fail_logins(app: &TestApp, slug: &str, forwarded: impl Fn(usize) -> Option<String>) {
    for i in 0..IP_MAX {
        let res = login_from(
            app,
            slug,
            &format!("guess{i}@nowhere.test"),
            "wrong-password-123",
            forwarded(i).as_deref(),
        )
        .await;
        assert_problem(res, 401, "invalid_credentials").await;
    }
}

fn proxies(list: &'static str) -> impl FnOnce(&mut keel::config::RawConfig) {
    move |c| c.trusted_proxies = list.into()
}

backend_tests! {
    async fn a_forged_forwarding_header_from_an_untrusted_peer_is_ignored(backend: Backend) {
        // Keel trusts a proxy range the test client is not in.
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), proxies("10.0.0.0/8")).await;
        let (owner, _) = app.owner_with_tokens("forge").await;
        // Each attempt claims another client: if believed, no address would ever fill up.
        fail_logins(&app, &owner.slug, |i| Some(format!("203.0.113.{i}"))).await;
        let res = login_from(&app, &owner.slug, "fresh@nowhere.test", "wrong-password-123", Some("198.51.100.77")).await;
        let body = assert_problem(res, 429, "too_many_attempts").await;
        assert!(body["detail"].is_string());
    }

    async fn behind_a_trusted_proxy_one_client_locking_itself_out_leaves_the_others_in(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), proxies("127.0.0.1/32,::1/128")).await;
        let (owner, _) = app.owner_with_tokens("proxied").await;
        // The client forged a left-hand entry; the proxy appended the address it saw.
        fail_logins(&app, &owner.slug, |_| Some("1.2.3.4, 203.0.113.1".into())).await;
        let locked = login_from(&app, &owner.slug, "fresh@nowhere.test", "wrong-password-123", Some("9.9.9.9, 203.0.113.1")).await;
        assert_problem(locked, 429, "too_many_attempts").await;
        // Another client behind the same balancer logs in.
        let other = login_from(&app, &owner.slug, &owner.email, OWNER_PASSWORD, Some("203.0.113.2")).await;
        assert_eq!(other.status(), 200);
    }

    async fn an_ipv6_client_rotating_through_its_64_still_counts_as_one(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), proxies("127.0.0.1/32,::1/128")).await;
        let (owner, _) = app.owner_with_tokens("six").await;
        fail_logins(&app, &owner.slug, |i| Some(format!("2001:db8:1:2::{:x}", i + 1))).await;
        let rotated = login_from(&app, &owner.slug, "fresh@nowhere.test", "wrong-password-123", Some("2001:db8:1:2:ffff:eeee:dddd:cccc")).await;
        assert_problem(rotated, 429, "too_many_attempts").await;
        let neighbour = login_from(&app, &owner.slug, &owner.email, OWNER_PASSWORD, Some("2001:db8:1:3::1")).await;
        assert_eq!(neighbour.status(), 200, "the next /64 is another client");
    }

    async fn one_shops_attacker_cannot_lock_out_logins_at_another_shop(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |_| {}).await;
        let (victim, _) = app.owner_with_tokens("victim").await;
        let (target, target_tokens) = app.owner_with_tokens("target").await;
        // Everyone shares one address (a NAT, or the test's loopback).
        fail_logins(&app, &target.slug, |_| None).await;
        let at_target = login_from(&app, &target.slug, &target.email, OWNER_PASSWORD, None).await;
        assert_problem(at_target, 429, "too_many_attempts").await;
        // The other shop's staff log in from the same address.
        let at_victim = login_from(&app, &victim.slug, &victim.email, OWNER_PASSWORD, None).await;
        assert_eq!(at_victim.status(), 200);
        // And the storefront side of the attacked shop is counted apart from its staff side.
        let res = app.client.post(app.url("/v1/admin/api-keys")).bearer_auth(&target_tokens.access_token)
            .json(&serde_json::json!({"name": "storefront", "kind": "publishable"})).send().await.expect("key");
        let pk = res.json::<serde_json::Value>().await.expect("key JSON")["secret"].as_str().expect("pk").to_owned();
        let shopper = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "ann@shop.test", "password": "saffron-glacier-tulip-8832"})).await;
        assert_eq!(shopper.status(), 201);
        let store_login = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "ann@shop.test", "password": "saffron-glacier-tulip-8832"})).await;
        assert_eq!(store_login.status(), 200);
    }
}
