//! Customer accounts at the storefront over real HTTP, once per backend.

use keel_testkit::{
    Backend, TestApp, Tokens, assert_problem, backend_tests, spawn_app, spawn_app_with,
};

const PASSWORD: &str = "saffron-glacier-tulip-8832";
const NEW_PASSWORD: &str = "walnut-comet-harbor-5107";

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

async fn store_me(app: &TestApp, pk: Option<&str>, token: &str) -> reqwest::Response {
    let mut req = app.client.get(app.url("/v1/store/me")).bearer_auth(token);
    if let Some(pk) = pk {
        req = req.header("keel-publishable-key", pk);
    }
    req.send().await.expect("send")
}

async fn sign_up(app: &TestApp, pk: &str, email: &str) -> Tokens {
    let res = app
        .store_post(
            pk,
            "/v1/store/customers",
            serde_json::json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 201, "sign up {email}");
    serde_json::from_value(json(res).await["tokens"].clone()).expect("tokens")
}

async fn confirm(app: &TestApp, pk: &str, token: &str, password: &str) -> reqwest::Response {
    app.store_post(
        pk,
        "/v1/store/auth/password-reset/confirm",
        serde_json::json!({"reset_token": token, "new_password": password}),
    )
    .await
}

backend_tests! {
    async fn a_customer_signs_up_logs_in_refreshes_and_logs_out(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, pk) = app.shop_with_storefront("store").await;
        let first = sign_up(&app, &pk, "Ann@Example.test").await;
        let me = json(store_me(&app, Some(&pk), &first.access_token).await).await;
        assert_eq!(me["email"], "ann@example.test");
        assert!(me["id"].as_str().is_some_and(|id| id.starts_with("cus_")));
        let login = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "ann@example.test", "password": PASSWORD})).await;
        let login: Tokens = login.json().await.expect("tokens");
        let refreshed = app.store_post(&pk, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": login.refresh_token})).await;
        let refreshed: Tokens = refreshed.json().await.expect("tokens");
        assert_eq!(store_me(&app, Some(&pk), &refreshed.access_token).await.status(), 200);
        let reuse = app.store_post(&pk, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": login.refresh_token})).await;
        assert_problem(reuse, 401, "refresh_token_reused").await;
        assert_problem(store_me(&app, Some(&pk), &refreshed.access_token).await, 401, "unauthorized").await;
        let out = app.store_post(&pk, "/v1/store/auth/logout", serde_json::json!({"refresh_token": first.refresh_token})).await;
        assert_eq!(out.status(), 204);
        assert_problem(store_me(&app, Some(&pk), &first.access_token).await, 401, "unauthorized").await;
        let wrong = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "ann@example.test", "password": "not-my-password-123"})).await;
        assert_problem(wrong, 401, "invalid_credentials").await;
    }

    async fn customer_and_staff_tokens_stay_on_their_side(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, pk) = app.shop_with_storefront("sides").await;
        let customer = sign_up(&app, &pk, "bob@example.test").await;
        // A customer token is not an admin credential, and a staff token opens no storefront.
        assert_problem(app.get_as("/v1/admin/events", &customer.access_token).await, 401, "unauthorized").await;
        assert_problem(app.get_as("/v1/me", &customer.access_token).await, 401, "unauthorized").await;
        assert_problem(store_me(&app, Some(&pk), &owner.access_token).await, 401, "unauthorized").await;
        // Refresh tokens answer only on their own side, and asking elsewhere does not spend them.
        let wrong_side = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": customer.refresh_token})).await;
        assert_problem(wrong_side, 401, "invalid_refresh_token").await;
        let staff_at_store = app.store_post(&pk, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": owner.refresh_token})).await;
        assert_problem(staff_at_store, 401, "invalid_refresh_token").await;
        assert_eq!(app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": owner.refresh_token})).await.status(), 200);
        assert_eq!(app.store_post(&pk, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": customer.refresh_token})).await.status(), 200);
        // A publishable key is not an admin credential either.
        assert_problem(app.get_as("/v1/admin/events", &pk).await, 401, "unauthorized").await;
    }

    async fn storefronts_are_bound_to_their_shop(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, pk_a) = app.shop_with_storefront("bound-a").await;
        let (owner_b, pk_b) = app.shop_with_storefront("bound-b").await;
        let ann = sign_up(&app, &pk_a, "ann@example.test").await;
        assert_problem(store_me(&app, Some(&pk_b), &ann.access_token).await, 401, "unauthorized").await;
        assert_problem(store_me(&app, None, &ann.access_token).await, 401, "unauthorized").await;
        let b_refresh = app.store_post(&pk_b, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": ann.refresh_token})).await;
        assert_problem(b_refresh, 401, "invalid_refresh_token").await;
        // The same email is a different account in another shop; logins do not cross shops.
        sign_up(&app, &pk_b, "ann@example.test").await;
        let wrong_shop = app.store_post(&pk_b, "/v1/store/auth/login", serde_json::json!({"email": "nobody@example.test", "password": PASSWORD})).await;
        assert_problem(wrong_shop, 401, "invalid_credentials").await;
        // A revoked publishable key closes the storefront.
        let keys = json(app.get_as("/v1/admin/api-keys", &owner_b.access_token).await).await;
        let id = keys["data"][0]["id"].as_str().expect("key id");
        app.client.delete(app.url(&format!("/v1/admin/api-keys/{id}"))).bearer_auth(&owner_b.access_token).send().await.expect("revoke");
        let closed = app.store_post(&pk_b, "/v1/store/auth/login", serde_json::json!({"email": "ann@example.test", "password": PASSWORD})).await;
        assert_problem(closed, 401, "unauthorized").await;
    }

    async fn sign_up_validates_and_refuses_duplicates(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, pk) = app.shop_with_storefront("signup").await;
        sign_up(&app, &pk, "dup@example.test").await;
        let dup = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "DUP@example.test", "password": PASSWORD})).await;
        assert_problem(dup, 409, "email_taken").await;
        let weak = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "w@example.test", "password": "password1234"})).await;
        assert_eq!(assert_problem(weak, 422, "validation_failed").await["errors"][0]["pointer"], "/password");
        let bad = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "nope", "password": PASSWORD})).await;
        assert_eq!(assert_problem(bad, 422, "validation_failed").await["errors"][0]["pointer"], "/email");
        let no_key = app.post_json("/v1/store/customers", &serde_json::json!({"email": "k@example.test", "password": PASSWORD})).await;
        assert_problem(no_key, 401, "unauthorized").await;
    }

    async fn a_customer_changes_the_password_and_their_other_sessions_end(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, pk) = app.shop_with_storefront("cus-pw").await;
        let here = sign_up(&app, &pk, "pat@example.test").await;
        let there: Tokens = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "pat@example.test", "password": PASSWORD})).await.json().await.expect("tokens");
        let change = |current: &str, new: &str| {
            app.store_request(reqwest::Method::POST, &pk, "/v1/store/me/password", Some(&here.access_token), Some(serde_json::json!({"current_password": current, "new_password": new})))
        };
        assert_problem(change("not-my-password-123", NEW_PASSWORD).await, 403, "reauthentication_failed").await;
        let weak = assert_problem(change(PASSWORD, "password1234").await, 422, "validation_failed").await;
        assert_eq!(weak["errors"][0]["pointer"], "/new_password");
        assert_eq!(change(PASSWORD, NEW_PASSWORD).await.status(), 204);
        assert_eq!(store_me(&app, Some(&pk), &here.access_token).await.status(), 200, "this session stays");
        assert_problem(store_me(&app, Some(&pk), &there.access_token).await, 401, "unauthorized").await;
        assert_problem(app.store_post(&pk, "/v1/store/auth/refresh", serde_json::json!({"refresh_token": there.refresh_token})).await, 401, "invalid_refresh_token").await;
        let old = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "pat@example.test", "password": PASSWORD})).await;
        assert_problem(old, 401, "invalid_credentials").await;
        let new = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "pat@example.test", "password": NEW_PASSWORD})).await;
        assert_eq!(new.status(), 200);
    }

    async fn a_customer_reset_token_goes_to_the_shops_mail_system_and_works_once_at_its_shop(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), keel_testkit::receiver::fast_webhooks).await;
        let (owner, pk) = app.shop_with_storefront("cus-reset").await;
        let (_, other_pk) = app.shop_with_storefront("cus-reset-b").await;
        let (mut mail, secret) = app.account_channel(&owner.access_token).await;
        let session = sign_up(&app, &pk, "rey@example.test").await;
        let events = || async {
            let body = json(app.get_as("/v1/admin/events?type=customer.password_reset_requested", &owner.access_token).await).await;
            body["data"].as_array().expect("data").clone()
        };
        let unknown = app.store_post(&pk, "/v1/store/auth/password-reset", serde_json::json!({"email": "nobody@example.test"})).await;
        assert_eq!(unknown.status(), 202, "the same answer for unknown accounts");
        assert!(events().await.is_empty());
        let known = app.store_post(&pk, "/v1/store/auth/password-reset", serde_json::json!({"email": "REY@example.test"})).await;
        assert_eq!(known.status(), 202);
        let recorded = events().await;
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0]["data"]["expires_in"], 3600);
        assert!(recorded[0]["data"].get("reset_token").is_none(), "the event carries no token");
        let notice = mail.next().await;
        assert!(keel_testkit::receiver::verifies(&secret, &notice));
        let body = notice.json();
        assert_eq!(body["type"], "customer.password_reset_requested");
        assert_eq!(body["data"]["email"], "rey@example.test");
        let token = body["data"]["reset_token"].as_str().expect("token").to_owned();
        // Another shop's storefront and the staff API do not know it, and do not spend it.
        assert_problem(confirm(&app, &other_pk, &token, NEW_PASSWORD).await, 400, "invalid_token").await;
        let at_admin = app.post_json("/v1/auth/password-reset/confirm", &serde_json::json!({"reset_token": token, "new_password": NEW_PASSWORD})).await;
        assert_problem(at_admin, 400, "invalid_token").await;
        assert_eq!(confirm(&app, &pk, &token, NEW_PASSWORD).await.status(), 204);
        assert_problem(confirm(&app, &pk, &token, "another-fine-passphrase-991").await, 400, "invalid_token").await;
        assert_problem(store_me(&app, Some(&pk), &session.access_token).await, 401, "unauthorized").await;
        let new = app.store_post(&pk, "/v1/store/auth/login", serde_json::json!({"email": "rey@example.test", "password": NEW_PASSWORD})).await;
        assert_eq!(new.status(), 200);
    }
}
