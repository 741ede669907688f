//! TOTP MFA over real HTTP, once per backend. Codes come from an independent implementation
//! (`totp-rs`), not from Keel's own.

use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, Tokens, assert_problem, backend_tests, spawn_app,
};

/// Codes for the secret an enrolment returned, at `now + offset_steps * 30 s`.
struct Authenticator(totp_rs::Totp);

impl Authenticator {
    fn new(base32: &str) -> Self {
        let secret = totp_rs::Secret::try_from_base32(base32).expect("base32 secret");
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(secret)
            .build()
            .expect("TOTP parameters");
        Self(totp)
    }

    fn code(&self, offset_steps: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() + offset_steps * 30;
        self.0
            .generate(u64::try_from(now).expect("after 1970"))
            .to_string()
    }
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

async fn post_as(
    app: &TestApp,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Enrols the owner; returns the authenticator, the backup codes and the owner's login data.
async fn enrolled(app: &TestApp) -> (Authenticator, Vec<String>, keel_testkit::Owner, Tokens) {
    let (owner, tokens) = app.owner_with_tokens("mfa").await;
    let begun = json(
        post_as(
            app,
            "/v1/me/mfa/totp",
            &tokens.access_token,
            serde_json::json!({}),
        )
        .await,
    )
    .await;
    let uri = begun["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains("algorithm=SHA1&digits=6&period=30"),
        "{uri}"
    );
    let auth = Authenticator::new(begun["secret"].as_str().expect("secret"));
    let confirmed = post_as(
        app,
        "/v1/me/mfa/totp/confirm",
        &tokens.access_token,
        serde_json::json!({"code": auth.code(0)}),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let codes: Vec<String> = json(confirmed).await["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (auth, codes, owner, tokens)
}

async fn password_step(app: &TestApp, owner: &keel_testkit::Owner) -> String {
    let res = app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD})).await;
    let body = json(res).await;
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(
        body.get("access_token").is_none(),
        "no tokens before the second factor"
    );
    assert_eq!(body["expires_in"], 300);
    body["mfa_token"].as_str().expect("mfa token").to_owned()
}

backend_tests! {
    async fn a_totp_code_completes_login_once_and_a_backup_code_works_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let (auth, backup, owner, _) = enrolled(&app).await;
        // The confirming code's step is spent; the next step's code (within the ±1 window) works.
        let mfa_token = password_step(&app, &owner).await;
        let code = auth.code(1);
        let ok = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "code": code})).await;
        assert_eq!(ok.status(), 200);
        let tokens: Tokens = ok.json().await.expect("tokens");
        assert_eq!(app.get_as("/v1/me", &tokens.access_token).await.status(), 200);
        // The same code a second time, on a fresh MFA token: refused.
        let again = password_step(&app, &owner).await;
        let replay = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": again, "code": code})).await;
        assert_problem(replay, 401, "invalid_mfa_code").await;
        // A backup code works once (typed loosely), then never again.
        let with_backup = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": again, "backup_code": backup[0].to_uppercase().replace('-', " ")})).await;
        assert_eq!(with_backup.status(), 200);
        let third = password_step(&app, &owner).await;
        let reused = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": third, "backup_code": backup[0]})).await;
        assert_problem(reused, 401, "invalid_mfa_code").await;
    }

    async fn five_wrong_codes_kill_the_mfa_token(backend: Backend) {
        let app = spawn_app(backend).await;
        let (auth, _, owner, tokens) = enrolled(&app).await;
        let mfa_token = password_step(&app, &owner).await;
        for _ in 0..5 {
            let res = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "code": "000000"})).await;
            assert_problem(res, 401, "invalid_mfa_code").await;
        }
        let dead = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "code": auth.code(1)})).await;
        assert_problem(dead, 400, "invalid_token").await;
        let events = json(app.get_as("/v1/admin/events?type=security.mfa_*", &tokens.access_token).await).await;
        let types: Vec<&str> = events["data"].as_array().expect("data").iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.iter().filter(|t| **t == "security.mfa_failed").count(), 5);
        assert!(types.contains(&"security.mfa_enabled"));
    }

    async fn enrolment_rules_and_disabling_needs_password_and_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, tokens) = app.owner_with_tokens("mfa-rules").await;
        let confirm_early = post_as(&app, "/v1/me/mfa/totp/confirm", &tokens.access_token, serde_json::json!({"code": "123456"})).await;
        assert_problem(confirm_early, 409, "mfa_not_pending").await;
        let begun = json(post_as(&app, "/v1/me/mfa/totp", &tokens.access_token, serde_json::json!({})).await).await;
        let auth = Authenticator::new(begun["secret"].as_str().expect("secret"));
        let wrong = post_as(&app, "/v1/me/mfa/totp/confirm", &tokens.access_token, serde_json::json!({"code": "000000"})).await;
        assert_problem(wrong, 401, "invalid_mfa_code").await;
        // Until confirmed, login needs no second factor.
        let plain = json(app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD})).await).await;
        assert!(plain["access_token"].is_string(), "{plain}");
        assert_eq!(post_as(&app, "/v1/me/mfa/totp/confirm", &tokens.access_token, serde_json::json!({"code": auth.code(0)})).await.status(), 200);
        assert_problem(post_as(&app, "/v1/me/mfa/totp", &tokens.access_token, serde_json::json!({})).await, 409, "mfa_already_enabled").await;
        let del = |body: serde_json::Value| app.client.delete(app.url("/v1/me/mfa/totp")).bearer_auth(&tokens.access_token).json(&body).send();
        assert_problem(del(serde_json::json!({"password": "not-my-password-at-all", "code": auth.code(1)})).await.expect("send"), 403, "reauthentication_failed").await;
        assert_problem(del(serde_json::json!({"password": OWNER_PASSWORD, "code": "000000"})).await.expect("send"), 403, "reauthentication_failed").await;
        assert_eq!(del(serde_json::json!({"password": OWNER_PASSWORD, "code": auth.code(1)})).await.expect("send").status(), 204);
        let after = json(app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD})).await).await;
        assert!(after["access_token"].is_string(), "MFA is off again: {after}");
    }

    async fn backup_codes_can_be_replaced_with_a_current_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let (auth, old_codes, owner, tokens) = enrolled(&app).await;
        let wrong = post_as(&app, "/v1/me/mfa/backup-codes", &tokens.access_token, serde_json::json!({"code": "000000"})).await;
        assert_problem(wrong, 401, "invalid_mfa_code").await;
        let fresh = post_as(&app, "/v1/me/mfa/backup-codes", &tokens.access_token, serde_json::json!({"code": auth.code(1)})).await;
        assert_eq!(fresh.status(), 200);
        let new_codes: Vec<String> = json(fresh).await["backup_codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("code").to_owned()).collect();
        assert_eq!(new_codes.len(), 10);
        assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
        let mfa_token = password_step(&app, &owner).await;
        let old = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "backup_code": old_codes[1]})).await;
        assert_problem(old, 401, "invalid_mfa_code").await;
        let new = app.post_json("/v1/auth/mfa", &serde_json::json!({"mfa_token": mfa_token, "backup_code": new_codes[0]})).await;
        assert_eq!(new.status(), 200);
    }

    async fn a_shop_requirement_confines_unenrolled_staff_to_enrolment(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("must-mfa").await;
        let invite = app.client.post(app.url("/v1/admin/users")).bearer_auth(&owner.access_token)
            .json(&serde_json::json!({"email": "admin@must.test", "role": "admin"})).send().await.expect("send");
        let invite_token = json(invite).await["invite_token"].as_str().expect("token").to_owned();
        let admin: Tokens = app.post_json("/v1/auth/setup", &serde_json::json!({"setup_token": invite_token, "password": OWNER_PASSWORD})).await.json().await.expect("tokens");
        let settings = |token: &str, body: Option<serde_json::Value>| {
            let req = match body {
                Some(b) => app.client.patch(app.url("/v1/admin/settings")).json(&b),
                None => app.client.get(app.url("/v1/admin/settings")),
            };
            req.bearer_auth(token.to_owned()).send()
        };
        assert_problem(settings(&admin.access_token, None).await.expect("send"), 403, "forbidden").await;
        let on = settings(&owner.access_token, Some(serde_json::json!({"require_staff_mfa": true}))).await.expect("send");
        assert_eq!(json(on).await["require_staff_mfa"], true);
        // Neither the owner nor the admin has MFA: both may only see themselves and enrol.
        for t in [&owner, &admin] {
            assert_problem(app.get_as("/v1/admin/events", &t.access_token).await, 403, "mfa_enrollment_required").await;
            assert_problem(app.get_as("/v1/me/sessions", &t.access_token).await, 403, "mfa_enrollment_required").await;
            assert_eq!(app.get_as("/v1/me", &t.access_token).await.status(), 200);
        }
        let begun = json(post_as(&app, "/v1/me/mfa/totp", &owner.access_token, serde_json::json!({})).await).await;
        let auth = Authenticator::new(begun["secret"].as_str().expect("secret"));
        assert_eq!(post_as(&app, "/v1/me/mfa/totp/confirm", &owner.access_token, serde_json::json!({"code": auth.code(0)})).await.status(), 200);
        // Enrolled: the same token now reaches everything the role allows.
        assert_eq!(app.get_as("/v1/admin/events", &owner.access_token).await.status(), 200);
        let off_mfa = app.client.delete(app.url("/v1/me/mfa/totp")).bearer_auth(&owner.access_token)
            .json(&serde_json::json!({"password": OWNER_PASSWORD, "code": auth.code(1)})).send().await.expect("send");
        assert_problem(off_mfa, 409, "mfa_required_by_shop").await;
        assert_problem(app.get_as("/v1/admin/events", &admin.access_token).await, 403, "mfa_enrollment_required").await;
        let off = settings(&owner.access_token, Some(serde_json::json!({"require_staff_mfa": false}))).await.expect("send");
        assert_eq!(json(off).await["require_staff_mfa"], false);
        assert_eq!(app.get_as("/v1/admin/events", &admin.access_token).await.status(), 200, "no longer required");
    }
}
