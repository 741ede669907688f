//! Password change and reset over real HTTP, once per backend.

use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, assert_problem, backend_tests, spawn_app, spawn_app_with,
};

const NEW_PASSWORD: &str = "orchid-tundra-harbor-5521";

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

async fn login(app: &TestApp, owner: &keel_testkit::Owner, password: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/login",
        &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": password}),
    )
    .await
}

backend_tests! {
    async fn changing_the_password_ends_every_other_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, first) = app.owner_with_tokens("pw").await;
        let second: keel_testkit::Tokens = login(&app, &owner, OWNER_PASSWORD).await.json().await.expect("tokens");
        let change = |current: &str, new: &str| {
            app.client
                .post(app.url("/v1/me/password"))
                .bearer_auth(&second.access_token)
                .json(&serde_json::json!({"current_password": current, "new_password": new}))
                .send()
        };
        assert_problem(change("wrong-current-password", NEW_PASSWORD).await.expect("send"), 403, "reauthentication_failed").await;
        let weak = assert_problem(change(OWNER_PASSWORD, "password1234").await.expect("send"), 422, "validation_failed").await;
        assert_eq!(weak["errors"][0]["pointer"], "/new_password");
        assert_eq!(change(OWNER_PASSWORD, NEW_PASSWORD).await.expect("send").status(), 204);
        assert_eq!(app.get_as("/v1/me", &second.access_token).await.status(), 200, "this session stays");
        assert_problem(app.get_as("/v1/me", &first.access_token).await, 401, "unauthorized").await;
        assert_eq!(login(&app, &owner, OWNER_PASSWORD).await.status(), 401);
        assert_eq!(login(&app, &owner, NEW_PASSWORD).await.status(), 200);
    }

    async fn a_reset_token_goes_to_the_shops_mail_system_and_works_once(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), keel_testkit::receiver::fast_webhooks).await;
        let (owner, tokens) = app.owner_with_tokens("reset").await;
        let (mut mail, secret) = app.account_channel(&tokens.access_token).await;
        let asked = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
        assert_eq!(asked.status(), 202);
        let nobody = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": "nobody@nowhere.test"})).await;
        assert_eq!(nobody.status(), 202, "same answer for unknown accounts");
        let events = json(app.get_as("/v1/admin/events?type=staff_user.password_reset_requested", &tokens.access_token).await).await;
        let data = events["data"].as_array().expect("data");
        assert_eq!(data.len(), 1, "one request for the real account, none for the unknown one");
        assert_eq!(data[0]["data"]["expires_in"], 3_600);
        assert!(data[0]["data"].get("reset_token").is_none(), "the event carries no token");
        let notice = mail.next().await;
        assert!(keel_testkit::receiver::verifies(&secret, &notice), "signed with the channel's own secret");
        let body = notice.json();
        assert_eq!(body["type"], "staff_user.password_reset_requested");
        assert_eq!(body["data"]["email"], owner.email);
        assert_eq!(body["data"]["expires_in"], 3_600);
        let reset_token = body["data"]["reset_token"].as_str().expect("token").to_owned();
        let confirm = |token: &str, password: &str| {
            let body = serde_json::json!({"reset_token": token, "new_password": password});
            let app = &app;
            async move { app.post_json("/v1/auth/password-reset/confirm", &body).await }
        };
        assert_eq!(assert_problem(confirm(&reset_token, "short").await, 422, "validation_failed").await["errors"][0]["pointer"], "/new_password");
        assert_eq!(confirm(&reset_token, NEW_PASSWORD).await.status(), 204);
        assert_problem(confirm(&reset_token, NEW_PASSWORD).await, 400, "invalid_token").await;
        assert_problem(app.get_as("/v1/me", &tokens.access_token).await, 401, "unauthorized").await;
        assert_eq!(login(&app, &owner, NEW_PASSWORD).await.status(), 200);
    }
}
