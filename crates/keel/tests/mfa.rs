//! TOTP MFA over real HTTP, once per backend, for staff and for customers at the storefront.
//! Codes come from an independent implementation (`totp-rs`), not from Keel's own.

use keel_testkit::{
    Authenticator, Backend, OWNER_PASSWORD, TestApp, Tokens, assert_problem, backend_tests,
    spawn_app,
};

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
            serde_json::json!({"password": OWNER_PASSWORD}),
        )
        .await,
    )
    .await;
    let uri = begun["otpauth_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{begun}"));
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

const SHOPPER_PASSWORD: &str = "saffron-glacier-tulip-8832";

/// A signed-up customer of a fresh shop who has enrolled in MFA: the owner's tokens, the
/// storefront key, the customer's email, authenticator, backup codes and first tokens.
struct EnrolledShopper {
    owner: Tokens,
    pk: String,
    email: String,
    auth: Authenticator,
    backup: Vec<String>,
    tokens: Tokens,
}

async fn enrolled_shopper(app: &TestApp, prefix: &str) -> EnrolledShopper {
    let (owner, pk) = app.shop_with_storefront(prefix).await;
    let email = format!("ann@{prefix}.test");
    let res = app
        .store_post(
            &pk,
            "/v1/store/customers",
            serde_json::json!({"email": email, "password": SHOPPER_PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let tokens: Tokens = serde_json::from_value(json(res).await["tokens"].clone()).expect("tokens");
    let store_as = |path: &'static str, body: serde_json::Value| {
        app.store_request(
            reqwest::Method::POST,
            &pk,
            path,
            Some(&tokens.access_token),
            Some(body),
        )
    };
    let begun = json(
        store_as(
            "/v1/store/me/mfa/totp",
            serde_json::json!({"password": SHOPPER_PASSWORD}),
        )
        .await,
    )
    .await;
    let uri = begun["otpauth_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{begun}"));
    assert!(
        uri.contains("ann%40") || uri.contains("ann@"),
        "labelled with the customer's email: {uri}"
    );
    let auth = Authenticator::new(begun["secret"].as_str().expect("secret"));
    let early = app
        .store_post(
            &pk,
            "/v1/store/auth/login",
            serde_json::json!({"email": email, "password": SHOPPER_PASSWORD}),
        )
        .await;
    assert!(
        json(early).await["access_token"].is_string(),
        "no second factor before confirmation"
    );
    let wrong = store_as(
        "/v1/store/me/mfa/totp/confirm",
        serde_json::json!({"code": "000000"}),
    )
    .await;
    assert_problem(wrong, 401, "invalid_mfa_code").await;
    let confirmed = store_as(
        "/v1/store/me/mfa/totp/confirm",
        serde_json::json!({"code": auth.code(0)}),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let backup: Vec<String> = json(confirmed).await["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(backup.len(), 10);
    EnrolledShopper {
        owner,
        pk,
        email,
        auth,
        backup,
        tokens,
    }
}

/// The customer's password step: answers the MFA challenge's token.
async fn shopper_password_step(app: &TestApp, s: &EnrolledShopper) -> String {
    let res = app
        .store_post(
            &s.pk,
            "/v1/store/auth/login",
            serde_json::json!({"email": s.email, "password": SHOPPER_PASSWORD}),
        )
        .await;
    let body = json(res).await;
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(
        body.get("access_token").is_none(),
        "no tokens before the second factor"
    );
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
        let begun = json(post_as(&app, "/v1/me/mfa/totp", &tokens.access_token, serde_json::json!({"password": OWNER_PASSWORD})).await).await;
        let auth = Authenticator::new(begun["secret"].as_str().expect("secret"));
        let wrong = post_as(&app, "/v1/me/mfa/totp/confirm", &tokens.access_token, serde_json::json!({"code": "000000"})).await;
        assert_problem(wrong, 401, "invalid_mfa_code").await;
        // Until confirmed, login needs no second factor.
        let plain = json(app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD})).await).await;
        assert!(plain["access_token"].is_string(), "{plain}");
        assert_eq!(post_as(&app, "/v1/me/mfa/totp/confirm", &tokens.access_token, serde_json::json!({"code": auth.code(0)})).await.status(), 200);
        assert_problem(post_as(&app, "/v1/me/mfa/totp", &tokens.access_token, serde_json::json!({"password": OWNER_PASSWORD})).await, 409, "mfa_already_enabled").await;
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
        let begun = json(post_as(&app, "/v1/me/mfa/totp", &owner.access_token, serde_json::json!({"password": OWNER_PASSWORD})).await).await;
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

    async fn a_customer_with_totp_logs_in_with_a_code_once_and_a_backup_code_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let shopper = enrolled_shopper(&app, "cus-mfa").await;
        let mfa_token = shopper_password_step(&app, &shopper).await;
        let code = shopper.auth.code(1);
        let ok = app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": mfa_token, "code": code})).await;
        assert_eq!(ok.status(), 200);
        let tokens: Tokens = ok.json().await.expect("tokens");
        let me = app.store_request(reqwest::Method::GET, &shopper.pk, "/v1/store/me", Some(&tokens.access_token), None).await;
        assert_eq!(json(me).await["email"], shopper.email.as_str());
        let again = shopper_password_step(&app, &shopper).await;
        let replay = app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": again, "code": code})).await;
        assert_problem(replay, 401, "invalid_mfa_code").await;
        let with_backup = app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": again, "backup_code": shopper.backup[0]})).await;
        assert_eq!(with_backup.status(), 200);
        let third = shopper_password_step(&app, &shopper).await;
        let reused = app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": third, "backup_code": shopper.backup[0]})).await;
        assert_problem(reused, 401, "invalid_mfa_code").await;
        // The shop's security log names the customer, not a staff user.
        let events = json(app.get_as("/v1/admin/events?type=security.", &shopper.owner.access_token).await).await;
        let data = events["data"].as_array().expect("data");
        let of = |t: &str| data.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
        let enabled = of("security.mfa_enabled");
        assert_eq!(enabled.len(), 1);
        assert!(enabled[0]["data"]["customer_id"].as_str().is_some_and(|id| id.starts_with("cus_")), "{}", enabled[0]);
        assert_eq!(of("security.mfa_failed").len(), 2, "the replayed code and the reused backup code");
        let logins = of("security.customer_login_succeeded");
        assert!(logins.iter().any(|e| e["data"]["mfa"] == "totp") && logins.iter().any(|e| e["data"]["mfa"] == "backup_code"), "{logins:?}");
    }

    async fn customer_mfa_tokens_answer_only_at_their_own_storefront(backend: Backend) {
        let app = spawn_app(backend).await;
        let shopper = enrolled_shopper(&app, "cus-side").await;
        let (_, other_pk) = app.shop_with_storefront("cus-side-b").await;
        let mfa_token = shopper_password_step(&app, &shopper).await;
        let body = |code: String| serde_json::json!({"mfa_token": mfa_token, "code": code});
        // Asked at the admin API or another shop's storefront, the token is unknown there and
        // is not spent or counted.
        assert_problem(app.post_json("/v1/auth/mfa", &body(shopper.auth.code(1))).await, 400, "invalid_token").await;
        assert_problem(app.store_post(&other_pk, "/v1/store/auth/mfa", body(shopper.auth.code(1))).await, 400, "invalid_token").await;
        assert_problem(app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": mfa_token})).await, 401, "invalid_mfa_code").await;
        assert_eq!(app.store_post(&shopper.pk, "/v1/store/auth/mfa", body(shopper.auth.code(1))).await.status(), 200);
        // A staff MFA token is no good at a storefront either.
        let (_, _, owner, _) = enrolled(&app).await;
        let staff_token = password_step(&app, &owner).await;
        let staff_at_store = app.store_post(&shopper.pk, "/v1/store/auth/mfa", serde_json::json!({"mfa_token": staff_token, "backup_code": "irrelevant"})).await;
        assert_problem(staff_at_store, 400, "invalid_token").await;
        // MFA routes of /me need a customer token, not a staff one.
        let (_, staff_tokens) = app.owner_with_tokens("cus-side-staff").await;
        let staff_enrol = app.store_request(reqwest::Method::POST, &shopper.pk, "/v1/store/me/mfa/totp", Some(&staff_tokens.access_token), Some(serde_json::json!({"password": OWNER_PASSWORD}))).await;
        assert_problem(staff_enrol, 401, "unauthorized").await;
    }

    async fn a_customer_turns_mfa_off_with_password_and_code_and_can_replace_backup_codes(backend: Backend) {
        let app = spawn_app(backend).await;
        let shopper = enrolled_shopper(&app, "cus-off").await;
        let call = |method: reqwest::Method, path: &'static str, body: serde_json::Value| {
            app.store_request(method, &shopper.pk, path, Some(&shopper.tokens.access_token), Some(body))
        };
        let fresh = call(reqwest::Method::POST, "/v1/store/me/mfa/backup-codes", serde_json::json!({"code": shopper.auth.code(1)})).await;
        assert_eq!(fresh.status(), 200);
        let codes = json(fresh).await["backup_codes"].as_array().expect("codes").clone();
        assert!(codes.iter().all(|c| !shopper.backup.iter().any(|old| c == old.as_str())));
        let wrong_password = call(reqwest::Method::DELETE, "/v1/store/me/mfa/totp", serde_json::json!({"password": "not-my-password-at-all", "backup_code": codes[0]})).await;
        assert_problem(wrong_password, 403, "reauthentication_failed").await;
        let old_code = call(reqwest::Method::DELETE, "/v1/store/me/mfa/totp", serde_json::json!({"password": SHOPPER_PASSWORD, "backup_code": shopper.backup[1]})).await;
        assert_problem(old_code, 403, "reauthentication_failed").await;
        let off = call(reqwest::Method::DELETE, "/v1/store/me/mfa/totp", serde_json::json!({"password": SHOPPER_PASSWORD, "backup_code": codes[1]})).await;
        assert_eq!(off.status(), 204);
        let login = app.store_post(&shopper.pk, "/v1/store/auth/login", serde_json::json!({"email": shopper.email, "password": SHOPPER_PASSWORD})).await;
        assert!(json(login).await["access_token"].is_string(), "MFA is off");
        let events = json(app.get_as("/v1/admin/events?type=security.mfa_disabled", &shopper.owner.access_token).await).await;
        assert_eq!(events["data"].as_array().expect("data").len(), 1);
    }
}
