//! Finding 2: the second factor and every re-authentication count failures per account in an
//! exact window (5 per 900 s by default), claimed before the code or password is checked. A
//! correct password never clears them; at the limit the factor locks (429 + `Retry-After`,
//! `security.mfa_locked`). Enrolling MFA needs the current password.

use futures_util::future::join_all;
use keel_testkit::{Backend, OWNER_PASSWORD, TestApp, assert_problem, backend_tests, spawn_app};

/// The default `KEEL_AUTH__SECOND_FACTOR_MAX`.
const FACTOR_MAX: usize = 5;

async fn mfa_token(app: &TestApp, owner: &keel_testkit::Owner) -> String {
    let body: serde_json::Value = app
        .post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD}))
        .await
        .json()
        .await
        .expect("JSON");
    body["mfa_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// A code that is not the current one (nor one step either side).
fn wrong_code(auth: &keel_testkit::Authenticator) -> String {
    let near: Vec<String> = (-1..=1).map(|o| auth.code(o)).collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .expect("a wrong code exists")
}

async fn mfa(app: &TestApp, token: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/mfa",
        &serde_json::json!({"mfa_token": token, "code": code}),
    )
    .await
}

fn statuses(responses: &[u16]) -> (usize, usize) {
    let evaluated = responses.iter().filter(|s| **s == 401).count();
    let locked = responses.iter().filter(|s| **s == 429).count();
    (evaluated, locked)
}

backend_tests! {
    async fn fifty_parallel_wrong_codes_on_one_mfa_token_are_checked_at_most_five_times(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, tokens) = app.owner_with_tokens("brute").await;
        let (auth, _) = app.enrol_staff_totp(&tokens.access_token, OWNER_PASSWORD).await;
        let token = mfa_token(&app, &owner).await;
        let wrong = wrong_code(&auth);
        let answers = join_all((0..50).map(|_| mfa(&app, &token, &wrong))).await;
        let codes: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        let (evaluated, _) = statuses(&codes);
        assert!(evaluated <= FACTOR_MAX, "{codes:?}");
        assert!(codes.iter().all(|c| [400, 401, 429].contains(c)), "{codes:?}");
        let failed = app.events_of(&tokens.access_token, "security.mfa_failed").await;
        assert!(failed.len() <= FACTOR_MAX, "at most five codes were checked: {}", failed.len());
        assert_eq!(app.events_of(&tokens.access_token, "security.mfa_locked").await.len(), 1);
        // The account's factor is locked: even the right code on a fresh token is not checked.
        let fresh = mfa_token(&app, &owner).await;
        let res = mfa(&app, &fresh, &auth.code(0)).await;
        assert!(res.headers().get("retry-after").is_some());
        assert_problem(res, 429, "too_many_attempts").await;
    }

    async fn fresh_mfa_tokens_from_fresh_password_logins_share_one_count(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, tokens) = app.owner_with_tokens("fresh").await;
        let (auth, _) = app.enrol_staff_totp(&tokens.access_token, OWNER_PASSWORD).await;
        let wrong = wrong_code(&auth);
        // Each guess on its own token, each token from a correct password (which clears the
        // login throttle, never the factor's count); the guesses go in parallel.
        let mut fresh = Vec::new();
        for _ in 0..12 {
            fresh.push(mfa_token(&app, &owner).await);
        }
        let codes: Vec<u16> = join_all(fresh.iter().map(|t| mfa(&app, t, &wrong)))
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
        let (evaluated, locked) = statuses(&codes);
        assert_eq!(evaluated, FACTOR_MAX, "{codes:?}");
        assert_eq!(locked, 12 - FACTOR_MAX, "{codes:?}");
        assert_eq!(app.events_of(&tokens.access_token, "security.mfa_failed").await.len(), FACTOR_MAX);
        let res = mfa(&app, &mfa_token(&app, &owner).await, &auth.code(0)).await;
        assert_problem(res, 429, "too_many_attempts").await;
    }

    async fn a_stolen_access_token_cannot_guess_through_reauthentication(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, tokens) = app.owner_with_tokens("reauth").await;
        let (auth, _) = app.enrol_staff_totp(&tokens.access_token, OWNER_PASSWORD).await;
        let wrong = wrong_code(&auth);
        let post = |path: &'static str, body: serde_json::Value| {
            app.client.post(app.url(path)).bearer_auth(&tokens.access_token).json(&body).send()
        };
        // Backup-code regeneration, MFA disabling and password change all count against one
        // limit: five wrong answers across them lock the account's factor.
        for _ in 0..3 {
            assert_problem(post("/v1/me/mfa/backup-codes", serde_json::json!({"code": wrong})).await.expect("send"), 401, "invalid_mfa_code").await;
        }
        let disable = app.client.delete(app.url("/v1/me/mfa/totp")).bearer_auth(&tokens.access_token)
            .json(&serde_json::json!({"password": "not-the-password-at-all", "code": auth.code(0)})).send().await.expect("send");
        assert_problem(disable, 403, "reauthentication_failed").await;
        let change = post("/v1/me/password", serde_json::json!({"current_password": "not-the-password-at-all", "new_password": "orchid-tundra-harbor-5521"})).await.expect("send");
        assert_problem(change, 403, "reauthentication_failed").await;
        // Locked: the right password is not even checked.
        let right = post("/v1/me/password", serde_json::json!({"current_password": OWNER_PASSWORD, "new_password": "orchid-tundra-harbor-5521"})).await.expect("send");
        assert_problem(right, 429, "too_many_attempts").await;
        let regen = post("/v1/me/mfa/backup-codes", serde_json::json!({"code": auth.code(0)})).await.expect("send");
        assert_problem(regen, 429, "too_many_attempts").await;
        assert_eq!(app.events_of(&tokens.access_token, "security.mfa_locked").await.len(), 1);
    }

    async fn knowing_the_password_buys_no_more_guesses_at_the_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, tokens) = app.owner_with_tokens("reset-count").await;
        let (auth, _) = app.enrol_staff_totp(&tokens.access_token, OWNER_PASSWORD).await;
        let wrong = wrong_code(&auth);
        let post = |path: &'static str, body: serde_json::Value| {
            app.client.post(app.url(path)).bearer_auth(&tokens.access_token).json(&body).send()
        };
        // Four wrong codes, then the right password (re-authentication at enrolment), then one
        // more wrong code: the password did not clear the count, so the factor is locked.
        for _ in 0..4 {
            assert_problem(post("/v1/me/mfa/backup-codes", serde_json::json!({"code": wrong})).await.expect("send"), 401, "invalid_mfa_code").await;
        }
        let enrol = post("/v1/me/mfa/totp", serde_json::json!({"password": OWNER_PASSWORD})).await.expect("send");
        assert_problem(enrol, 409, "mfa_already_enabled").await;
        assert_problem(post("/v1/me/mfa/backup-codes", serde_json::json!({"code": wrong})).await.expect("send"), 401, "invalid_mfa_code").await;
        let locked = post("/v1/me/mfa/backup-codes", serde_json::json!({"code": auth.code(1)})).await.expect("send");
        assert_problem(locked, 429, "too_many_attempts").await;
    }

    async fn guesses_at_confirming_an_enrolment_are_counted(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, tokens) = app.owner_with_tokens("confirm-count").await;
        let begun: serde_json::Value = app.client.post(app.url("/v1/me/mfa/totp")).bearer_auth(&tokens.access_token)
            .json(&serde_json::json!({"password": OWNER_PASSWORD})).send().await.expect("send").json().await.expect("JSON");
        let auth = keel_testkit::Authenticator::new(begun["secret"].as_str().expect("secret"));
        let wrong = wrong_code(&auth);
        let confirm = |code: String| {
            app.client.post(app.url("/v1/me/mfa/totp/confirm")).bearer_auth(&tokens.access_token)
                .json(&serde_json::json!({"code": code})).send()
        };
        let codes: Vec<u16> = join_all((0..20).map(|_| confirm(wrong.clone())))
            .await
            .into_iter()
            .map(|r| r.expect("send").status().as_u16())
            .collect();
        assert_eq!(codes.iter().filter(|c| **c == 401).count(), FACTOR_MAX, "{codes:?}");
        assert_problem(confirm(auth.code(0)).await.expect("send"), 429, "too_many_attempts").await;
    }

    async fn an_access_token_alone_cannot_enrol_mfa(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, tokens) = app.owner_with_tokens("enrol").await;
        let begin = |body: serde_json::Value| app.client.post(app.url("/v1/me/mfa/totp")).bearer_auth(&tokens.access_token).json(&body).send();
        let none = begin(serde_json::json!({})).await.expect("send");
        assert_problem(none, 422, "validation_failed").await;
        let wrong = begin(serde_json::json!({"password": "not-the-password-at-all"})).await.expect("send");
        assert_problem(wrong, 403, "reauthentication_failed").await;
        let right = begin(serde_json::json!({"password": OWNER_PASSWORD})).await.expect("send");
        assert_eq!(right.status(), 200);
    }

    async fn parallel_wrong_codes_at_a_storefront_mfa_step_are_checked_at_most_five_times(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, pk) = app.shop_with_storefront("shop-brute").await;
        let password = "saffron-glacier-tulip-8832";
        let signed: serde_json::Value = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "ann@brute.test", "password": password})).await.json().await.expect("JSON");
        let access = signed["tokens"]["access_token"].as_str().expect("token").to_owned();
        let store = |path: &'static str, token: Option<String>, body: serde_json::Value| {
            let (app, pk) = (&app, pk.clone());
            async move { app.store_request(reqwest::Method::POST, &pk, path, token.as_deref(), Some(body)).await }
        };
        let begun: serde_json::Value = store("/v1/store/me/mfa/totp", Some(access.clone()), serde_json::json!({"password": password})).await.json().await.expect("JSON");
        let auth = keel_testkit::Authenticator::new(begun["secret"].as_str().expect("secret"));
        assert_eq!(store("/v1/store/me/mfa/totp/confirm", Some(access.clone()), serde_json::json!({"code": auth.code(0)})).await.status(), 200);
        let login: serde_json::Value = store("/v1/store/auth/login", None, serde_json::json!({"email": "ann@brute.test", "password": password})).await.json().await.expect("JSON");
        let token = login["mfa_token"].as_str().expect("mfa token").to_owned();
        let wrong = wrong_code(&auth);
        let answers = join_all((0..50).map(|_| store("/v1/store/auth/mfa", None, serde_json::json!({"mfa_token": token, "code": wrong})))).await;
        let codes: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert!(statuses(&codes).0 <= FACTOR_MAX, "{codes:?}");
        let failed = app.events_of(&owner.access_token, "security.mfa_failed").await;
        assert!(failed.len() <= FACTOR_MAX, "{}", failed.len());
        assert_eq!(app.events_of(&owner.access_token, "security.mfa_locked").await.len(), 1);
    }
}
