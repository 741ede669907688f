//! Finding 1: one-time secrets (password-reset and invitation tokens) never enter the event
//! log, an event payload or a webhook body. They reach the shop's own mail system through the
//! account-notification channel, which only owners (`settings:manage`) configure and which no
//! other route shows. Before the fix, an admin (who may not touch owners) or a leaked API key
//! with `audit:read` or `webhooks:manage` read the owner's reset token from the event log and
//! took the account over.

use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, Tokens, backend_tests,
    receiver::{Receiver, fast_webhooks, receiver, verifies},
    spawn_app_with,
};

/// Every scope an API key may hold.
const EVERY_GRANTABLE_SCOPE: [&str; 7] = [
    "orders:read",
    "orders:write",
    "catalog:read",
    "catalog:write",
    "customers:read",
    "webhooks:manage",
    "audit:read",
];

/// The prefixes of Keel's one-time and long-lived secrets.
const SECRET_PREFIXES: [&str; 8] = ["rs_", "it_", "st_", "rt_", "mt_", "sk_", "whsec_", "cs_"];

/// Every secret-looking token in `text`: a known prefix at a word start, followed by at least
/// 20 base64url characters (Keel's secrets carry 43).
fn secret_like(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let body = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut found = Vec::new();
    for prefix in SECRET_PREFIXES {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let boundary = start == 0 || !body(bytes[start - 1]);
            let tail = bytes[start + prefix.len()..]
                .iter()
                .take_while(|b| body(**b))
                .count();
            if boundary && tail >= 20 {
                found.push(text[start..start + prefix.len() + tail].to_owned());
            }
            from = start + prefix.len();
        }
    }
    found
}

async fn call(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    app.send_as(method, path, token, body).await
}

/// Everything `token` can read about events and webhooks: every event page, every webhook
/// endpoint, message and attempt, and the account-notification routes (with their status).
async fn everything_readable(app: &TestApp, token: &str) -> String {
    let mut out = String::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/events?limit=100&cursor={c}"),
            None => "/v1/admin/events?limit=100".to_owned(),
        };
        let page: serde_json::Value = app.get_as(&path, token).await.json().await.expect("events");
        out.push_str(&page.to_string());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let endpoints: serde_json::Value = app
        .get_as("/v1/admin/webhook-endpoints?limit=100", token)
        .await
        .json()
        .await
        .expect("endpoints");
    out.push_str(&endpoints.to_string());
    for e in endpoints["data"].as_array().into_iter().flatten() {
        let id = e["id"].as_str().expect("id");
        let messages: serde_json::Value = app
            .get_as(
                &format!("/v1/admin/webhook-endpoints/{id}/messages?limit=100"),
                token,
            )
            .await
            .json()
            .await
            .expect("messages");
        out.push_str(&messages.to_string());
        for m in messages["data"].as_array().into_iter().flatten() {
            let mid = m["id"].as_str().expect("id");
            let attempts = app
                .get_as(&format!("/v1/admin/webhook-messages/{mid}/attempts"), token)
                .await
                .text()
                .await
                .expect("attempts");
            out.push_str(&attempts);
        }
    }
    for path in [
        "/v1/admin/account-notifications",
        "/v1/admin/account-notifications/messages",
    ] {
        let res = app.get_as(path, token).await;
        out.push_str(path);
        out.push_str(": ");
        out.push_str(res.status().as_str());
        out.push('\n');
        out.push_str(&res.text().await.expect("body"));
    }
    out
}

/// The next request of `event_type` (earlier ones of other types are skipped).
async fn next_of(r: &mut Receiver, event_type: &str) -> keel_testkit::receiver::Received {
    loop {
        let got = r.next().await;
        if got.json()["type"] == event_type {
            return got;
        }
    }
}

/// Delivered webhook bodies, until one of `event_type` arrived.
async fn bodies_until(hooks: &mut Receiver, event_type: &str) -> String {
    let mut out = String::new();
    loop {
        let r = hooks.next().await;
        out.push_str(&r.body);
        out.push('\n');
        if r.json()["type"] == event_type {
            return out;
        }
    }
}

async fn admin_and_key(app: &TestApp, owner: &Tokens) -> (Tokens, String) {
    let (_, admin) = app.member(owner, "admin@shop.test", "admin").await;
    let res = call(
        app,
        &owner.access_token,
        reqwest::Method::POST,
        "/v1/admin/api-keys",
        Some(serde_json::json!({"name": "everything", "scopes": EVERY_GRANTABLE_SCOPE})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let key: serde_json::Value = res.json().await.expect("key");
    (admin, key["secret"].as_str().expect("sk").to_owned())
}

backend_tests! {
    async fn neither_an_admin_nor_a_key_with_every_scope_can_obtain_a_reset_token(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), fast_webhooks).await;
        let (owner, owner_tokens) = app.owner_with_tokens("takeover").await;
        let (mut mail, mail_secret) = app.account_channel(&owner_tokens.access_token).await;
        let (admin, key) = admin_and_key(&app, &owner_tokens).await;
        // The attacker's webhook receives every event of the shop.
        let mut hooks = receiver(Vec::new()).await;
        let hook = call(&app, &key, reqwest::Method::POST, "/v1/admin/webhook-endpoints", Some(serde_json::json!({"url": hooks.url}))).await;
        assert_eq!(hook.status(), 201);
        // Neither may set up or read the account channel.
        for token in [&admin.access_token, &key] {
            let put = call(&app, token, reqwest::Method::PUT, "/v1/admin/account-notifications", Some(serde_json::json!({"url": hooks.url}))).await;
            keel_testkit::assert_problem(put, 403, "forbidden").await;
        }
        // The attack: ask for the owner's reset, then read everything readable.
        let asked = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
        assert_eq!(asked.status(), 202);
        let notice = next_of(&mut mail, "staff_user.password_reset_requested").await;
        assert!(verifies(&mail_secret, &notice));
        let token = notice.json()["data"]["reset_token"].as_str().expect("the mail system gets the token").to_owned();
        let delivered = bodies_until(&mut hooks, "staff_user.password_reset_requested").await;
        for seen in [
            everything_readable(&app, &admin.access_token).await,
            everything_readable(&app, &key).await,
            delivered,
        ] {
            assert!(!seen.contains(&token), "the token leaked");
            assert!(secret_like(&seen).is_empty(), "{:?}", secret_like(&seen));
            assert!(seen.contains("staff_user.password_reset_requested"), "the redacted event is there");
        }
        // The token the mail system got is the real one.
        let reset = app.post_json("/v1/auth/password-reset/confirm", &serde_json::json!({"reset_token": token, "new_password": "orchid-tundra-harbor-5521"})).await;
        assert_eq!(reset.status(), 204);
    }

    async fn the_event_log_and_webhook_bodies_carry_no_secret_of_any_flow(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), fast_webhooks).await;
        let (owner, tokens) = app.owner_with_tokens("no-secrets").await;
        let mut secrets: Vec<String> = vec![owner.setup_token.clone(), tokens.refresh_token.clone()];
        let (mut mail, _) = app.account_channel(&tokens.access_token).await;
        let mut hooks = receiver(Vec::new()).await;
        let hook: serde_json::Value = call(&app, &tokens.access_token, reqwest::Method::POST, "/v1/admin/webhook-endpoints", Some(serde_json::json!({"url": hooks.url}))).await.json().await.expect("hook");
        secrets.push(hook["secret"].as_str().expect("whsec").to_owned());
        let hook_id = hook["endpoint"]["id"].as_str().expect("id").to_owned();
        let rotated: serde_json::Value = call(&app, &tokens.access_token, reqwest::Method::POST, &format!("/v1/admin/webhook-endpoints/{hook_id}/rotate-secret"), None).await.json().await.expect("rotated");
        secrets.push(rotated["secret"].as_str().expect("whsec").to_owned());
        // Staff: invitation, refresh, MFA login, API keys and their rotation.
        let invite: serde_json::Value = call(&app, &tokens.access_token, reqwest::Method::POST, "/v1/admin/users", Some(serde_json::json!({"email": "ann@shop.test", "role": "staff"}))).await.json().await.expect("invite");
        secrets.push(invite["invite_token"].as_str().expect("it").to_owned());
        let invited = mail.next().await.json();
        assert_eq!(invited["type"], "staff_user.invited");
        assert_eq!(invited["data"]["invite_token"], invite["invite_token"], "the invitee's token reaches the mail system");
        let refreshed: serde_json::Value = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": tokens.refresh_token})).await.json().await.expect("refresh");
        secrets.push(refreshed["refresh_token"].as_str().unwrap_or_else(|| panic!("{refreshed}")).to_owned());
        let access = refreshed["access_token"].as_str().expect("access").to_owned();
        let (auth, codes) = app.enrol_staff_totp(&access, OWNER_PASSWORD).await;
        secrets.extend(codes);
        let login: serde_json::Value = app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD})).await.json().await.expect("login");
        let mfa_token = login["mfa_token"].as_str().expect("mt").to_owned();
        secrets.push(mfa_token.clone());
        let done: serde_json::Value = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "code": auth.code(1)})).await.json().await.expect("mfa");
        secrets.push(done["refresh_token"].as_str().unwrap_or_else(|| panic!("{done}")).to_owned());
        let key: serde_json::Value = call(&app, &access, reqwest::Method::POST, "/v1/admin/api-keys", Some(serde_json::json!({"name": "k", "scopes": ["audit:read"]}))).await.json().await.expect("key");
        secrets.push(key["secret"].as_str().expect("sk").to_owned());
        let key_id = key["key"]["id"].as_str().expect("id").to_owned();
        let rotated_key: serde_json::Value = call(&app, &access, reqwest::Method::POST, &format!("/v1/admin/api-keys/{key_id}/rotate"), None).await.json().await.expect("rotated key");
        secrets.push(rotated_key["secret"].as_str().expect("sk").to_owned());
        let reset = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
        assert_eq!(reset.status(), 202);
        let reset_notice = mail.next().await.json();
        secrets.push(reset_notice["data"]["reset_token"].as_str().expect("rs").to_owned());
        // Customers and a guest cart at the storefront.
        let pk_res: serde_json::Value = call(&app, &access, reqwest::Method::POST, "/v1/admin/api-keys", Some(serde_json::json!({"name": "store", "kind": "publishable"}))).await.json().await.expect("pk");
        let pk = pk_res["secret"].as_str().expect("pk").to_owned();
        let signed: serde_json::Value = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "rey@shop.test", "password": "saffron-glacier-tulip-8832"})).await.json().await.expect("sign-up");
        secrets.push(signed["tokens"]["refresh_token"].as_str().expect("rt").to_owned());
        let creset = app.store_post(&pk, "/v1/store/auth/password-reset", serde_json::json!({"email": "rey@shop.test"})).await;
        assert_eq!(creset.status(), 202);
        let customer_notice = mail.next().await.json();
        assert_eq!(customer_notice["type"], "customer.password_reset_requested");
        secrets.push(customer_notice["data"]["reset_token"].as_str().expect("rs").to_owned());
        let cart: serde_json::Value = app.store_post(&pk, "/v1/store/carts", serde_json::json!({"currency": "USD", "email": "rey@shop.test"})).await.json().await.expect("cart");
        secrets.push(cart["cart_secret"].as_str().expect("cs").to_owned());
        // Wait until the last flow's event has been delivered to the catch-all webhook.
        let delivered = bodies_until(&mut hooks, "cart.created").await;
        let readable = everything_readable(&app, &access).await;
        for seen in [&readable, &delivered] {
            for s in &secrets {
                assert!(!seen.contains(s.as_str()), "a secret leaked into events or webhooks");
            }
            assert!(secret_like(seen).is_empty(), "{:?}", secret_like(seen));
        }
        // The flows did record their (redacted) events.
        for kind in ["staff_user.invited", "staff_user.password_reset_requested", "customer.password_reset_requested", "security.login_succeeded", "security.api_key_created", "cart.created"] {
            assert!(readable.contains(kind), "{kind} was recorded");
        }
    }

    async fn turning_the_account_endpoint_off_gives_up_its_waiting_secrets(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            fast_webhooks(c);
            // One failed attempt, then a retry far away: the notice waits.
            c.webhooks.retry_schedule = "3600s".into();
        })
        .await;
        let (owner, tokens) = app.owner_with_tokens("off").await;
        let mut failing = keel_testkit::receiver::receiver(vec![500]).await;
        let put = |body: serde_json::Value| call(&app, &tokens.access_token, reqwest::Method::PUT, "/v1/admin/account-notifications", Some(body));
        assert_eq!(put(serde_json::json!({"url": failing.url})).await.status(), 201);
        let asked = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
        assert_eq!(asked.status(), 202);
        failing.next().await;
        let messages = || async {
            let body: serde_json::Value = call(&app, &tokens.access_token, reqwest::Method::GET, "/v1/admin/account-notifications/messages", None).await.json().await.expect("messages");
            body["data"].as_array().expect("data").clone()
        };
        let waiting = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                let m = messages().await;
                if m.first().is_some_and(|m| m["attempts"] == 1) {
                    return m;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the failed attempt is recorded");
        assert_eq!(waiting[0]["status"], "pending");
        assert_eq!(put(serde_json::json!({"url": failing.url, "enabled": false})).await.status(), 200);
        let after = messages().await;
        assert_eq!(after[0]["status"], "failed", "given up when the endpoint was turned off");
        // The event log has the endpoint, not the mail system's address.
        let created = app.events_of(&tokens.access_token, "account_notifications.created").await;
        assert_eq!(created.len(), 1);
        assert!(created[0]["data"].get("url").is_none(), "{}", created[0]);
    }
}
