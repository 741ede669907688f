//! Staff authentication over real HTTP, once per backend.

use keel_identity::domain::jwt::{Claims, PrincipalKind};
use keel_kernel::{TenantId, page::PageRequest};
use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, Tokens, assert_problem, backend_tests, spawn_app,
};

async fn tokens(res: reqwest::Response) -> Tokens {
    assert_eq!(res.status(), 200, "expected tokens");
    res.json().await.expect("token JSON")
}

async fn event_types(app: &TestApp, tenant: &str) -> Vec<String> {
    let tenant: TenantId = tenant.parse().expect("tenant id");
    app.store
        .events()
        .list(tenant, PageRequest::default(), None)
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn login(app: &TestApp, tenant: &str, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/login",
        &serde_json::json!({"tenant": tenant, "email": email, "password": password}),
    )
    .await
}

backend_tests! {
    async fn owner_setup_login_me_refresh_logout(backend: Backend) {
        let app = spawn_app(backend).await;
        let owner = app.create_owner("flow").await;
        let setup = tokens(app.post_json("/v1/auth/setup", &serde_json::json!({"setup_token": owner.setup_token, "password": OWNER_PASSWORD})).await).await;
        assert_eq!((setup.token_type.as_str(), setup.expires_in, setup.refresh_expires_in), ("Bearer", 900, 2_592_000));
        // The setup token is single use.
        let again = app.post_json("/v1/auth/setup", &serde_json::json!({"setup_token": owner.setup_token, "password": OWNER_PASSWORD})).await;
        assert_problem(again, 400, "invalid_token").await;

        let me: serde_json::Value = app.get_as("/v1/me", &setup.access_token).await.json().await.expect("json");
        assert_eq!(me["id"], owner.user_id.as_str());
        assert_eq!(me["tenant_id"], owner.tenant_id.as_str());
        assert_eq!((me["email"].as_str(), me["role"].as_str(), me["status"].as_str()), (Some(owner.email.as_str()), Some("owner"), Some("active")));
        assert!(me["permissions"].as_array().is_some_and(|p| p.iter().any(|x| x == "settings:manage")));

        let login = tokens(app.post_json("/v1/auth/login", &serde_json::json!({"tenant": owner.slug, "email": owner.email.to_uppercase(), "password": OWNER_PASSWORD})).await).await;
        let sessions: serde_json::Value = app.get_as("/v1/me/sessions", &login.access_token).await.json().await.expect("json");
        let list = sessions["data"].as_array().expect("data");
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
        assert!(sessions["next_cursor"].is_null());

        let refreshed = tokens(app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": login.refresh_token})).await).await;
        assert_ne!(refreshed.refresh_token, login.refresh_token);
        assert_eq!(app.get_as("/v1/me", &refreshed.access_token).await.status(), 200);

        let out = app.post_json("/v1/auth/logout", &serde_json::json!({"refresh_token": refreshed.refresh_token})).await;
        assert_eq!(out.status(), 204);
        let after = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": refreshed.refresh_token})).await;
        assert_problem(after, 401, "invalid_refresh_token").await;
        // Access tokens of the ended session stop working at once; the setup session is untouched.
        assert_problem(app.get_as("/v1/me", &refreshed.access_token).await, 401, "unauthorized").await;
        assert_eq!(app.get_as("/v1/me", &setup.access_token).await.status(), 200);
        let types = event_types(&app, &owner.tenant_id).await;
        for t in ["tenant.created", "staff_user.invited", "staff_user.activated", "security.login_succeeded", "security.logout"] {
            assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
        }
    }

    async fn reusing_a_rotated_refresh_token_revokes_the_whole_family(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, first) = app.owner_with_tokens("reuse").await;
        let second = tokens(app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": first.refresh_token})).await).await;
        let reuse = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": first.refresh_token})).await;
        assert_problem(reuse, 401, "refresh_token_reused").await;
        // The newest token of the family is dead too, and so are its access tokens.
        let newest = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": second.refresh_token})).await;
        assert_problem(newest, 401, "invalid_refresh_token").await;
        assert_problem(app.get_as("/v1/me", &second.access_token).await, 401, "unauthorized").await;
        assert!(event_types(&app, &owner.tenant_id).await.iter().any(|t| t == "security.refresh_token_reused"));
    }

    async fn wrong_password_unknown_email_and_unknown_shop_look_the_same(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, _) = app.owner_with_tokens("creds").await;
        let mut details = Vec::new();
        for (tenant, email, password) in [
            (owner.slug.as_str(), owner.email.as_str(), "wrong-password-but-long"),
            (owner.slug.as_str(), "nobody@nowhere.test", OWNER_PASSWORD),
            ("no-such-shop", owner.email.as_str(), OWNER_PASSWORD),
        ] {
            let res = app.post_json("/v1/auth/login", &serde_json::json!({"tenant": tenant, "email": email, "password": password})).await;
            let body = assert_problem(res, 401, "invalid_credentials").await;
            details.push(body["detail"].as_str().unwrap_or_default().to_owned());
        }
        assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
        assert!(event_types(&app, &owner.tenant_id).await.iter().any(|t| t == "security.login_failed"));
    }

    async fn bad_access_tokens_are_refused_with_a_bearer_challenge(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, good) = app.owner_with_tokens("tok").await;
        let missing = app.get("/v1/me").await;
        assert_eq!(header(&missing, "www-authenticate"), "Bearer realm=\"keel\"");
        assert_problem(missing, 401, "unauthorized").await;
        let basic = app.client.get(app.url("/v1/me")).header("authorization", "Basic dXNlcjpwdw==").send().await.expect("send");
        assert_problem(basic, 401, "unauthorized").await;

        let mut parts: Vec<String> = good.access_token.split('.').map(str::to_owned).collect();
        parts[1].insert(4, 'x');
        let tampered = app.get_as("/v1/me", &parts.join(".")).await;
        assert!(header(&tampered, "www-authenticate").contains("invalid_token"));
        assert_problem(tampered, 401, "unauthorized").await;

        // Correctly signed by the server's own key, but wrong in one claim each.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let base = Claims {
            iss: "keel".into(),
            aud: "keel-admin".into(),
            sub: owner.user_id.clone(),
            tid: owner.tenant_id.parse().expect("tenant"),
            kind: PrincipalKind::Staff,
            scope: String::new(),
            sid: "ses_00000000000000000000000000".into(),
            jti: "test".into(),
            iat: now,
            exp: now + 900,
        };
        let me: serde_json::Value = app.get_as("/v1/me/sessions", &good.access_token).await.json().await.expect("json");
        let sid = me["data"][0]["id"].as_str().expect("session id").to_owned();
        let valid = Claims { sid: sid.clone(), ..base.clone() };
        assert_eq!(app.get_as("/v1/me", &app.auth.keys().sign(&valid).await.expect("sign")).await.status(), 200, "the control case passes");
        for (what, claims) in [
            ("expired", Claims { iat: now - 1_000, exp: now - 100, ..valid.clone() }),
            ("wrong audience", Claims { aud: "keel-store".into(), ..valid.clone() }),
            ("wrong issuer", Claims { iss: "evil".into(), ..valid.clone() }),
            ("customer kind", Claims { kind: PrincipalKind::Customer, ..valid.clone() }),
            ("unknown session", base.clone()),
            ("other tenant", Claims { tid: TenantId::new(), ..valid.clone() }),
        ] {
            let token = app.auth.keys().sign(&claims).await.expect("sign");
            assert_eq!(app.get_as("/v1/me", &token).await.status(), 401, "{what}");
        }
        let none = format!("{}.{}.", "eyJhbGciOiJub25lIn0", parts[1]);
        assert_eq!(app.get_as("/v1/me", &none).await.status(), 401, "alg none");
    }

    async fn jwks_publishes_keys_and_rotation_keeps_old_tokens_valid(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, tokens) = app.owner_with_tokens("jwks").await;
        let jwks: serde_json::Value = app.get("/.well-known/jwks.json").await.json().await.expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str(), keys[0]["alg"].as_str()), (Some("OKP"), Some("Ed25519"), Some("EdDSA")));
        let new_kid = app.auth.keys().rotate().await.expect("rotate");
        // Tokens signed with the previous key keep working while it stays published.
        assert_eq!(app.get_as("/v1/me", &tokens.access_token).await.status(), 200);
        let published = app.auth.keys().public_keys().await.expect("keys");
        assert_eq!(published.len(), 2);
        assert_eq!(published[0].kid, new_kid, "the new key signs from now on");
        assert_eq!(published[1].kid, keys[0]["kid"].as_str().expect("kid"));
    }

    async fn a_weak_setup_password_is_refused_and_the_token_stays_usable(backend: Backend) {
        let app = spawn_app(backend).await;
        let owner = app.create_owner("weak").await;
        for (password, fragment) in [("password1234", "guess"), ("short", "12 characters"), (owner.email.as_str(), "email")] {
            let res = app.post_json("/v1/auth/setup", &serde_json::json!({"setup_token": owner.setup_token, "password": password})).await;
            let body = assert_problem(res, 422, "validation_failed").await;
            assert_eq!(body["errors"][0]["pointer"], "/password");
            assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains(fragment)), "{body}");
            assert!(!body.to_string().contains(password), "the password is not echoed");
        }
        let ok = app.post_json("/v1/auth/setup", &serde_json::json!({"setup_token": owner.setup_token, "password": OWNER_PASSWORD})).await;
        assert_eq!(ok.status(), 200);
    }

    async fn sessions_of_other_users_and_tenants_answer_404(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, a) = app.owner_with_tokens("sess-a").await;
        let (_, b) = app.owner_with_tokens("sess-b").await;
        let b_sessions: serde_json::Value = app.get_as("/v1/me/sessions", &b.access_token).await.json().await.expect("json");
        let b_session = b_sessions["data"][0]["id"].as_str().expect("id").to_owned();
        let del = app.client.delete(app.url(&format!("/v1/me/sessions/{b_session}"))).bearer_auth(&a.access_token).send().await.expect("send");
        assert_problem(del, 404, "not_found").await;
        let junk = app.client.delete(app.url("/v1/me/sessions/not-an-id")).bearer_auth(&a.access_token).send().await.expect("send");
        assert_problem(junk, 404, "not_found").await;
        assert_eq!(app.get_as("/v1/me", &b.access_token).await.status(), 200, "b's session untouched");
        let own: serde_json::Value = app.get_as("/v1/me/sessions", &a.access_token).await.json().await.expect("json");
        let a_session = own["data"][0]["id"].as_str().expect("id").to_owned();
        let del = app.client.delete(app.url(&format!("/v1/me/sessions/{a_session}"))).bearer_auth(&a.access_token).send().await.expect("send");
        assert_eq!(del.status(), 204);
        assert_eq!(app.get_as("/v1/me", &a.access_token).await.status(), 401, "revoking the current session ends it");
    }

    async fn the_sixth_wrong_password_is_429_and_locks_out_the_right_one(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, _) = app.owner_with_tokens("lock").await;
        for _ in 0..5 {
            assert_problem(login(&app, &owner.slug, &owner.email, "not-the-password-at-all").await, 401, "invalid_credentials").await;
        }
        let sixth = login(&app, &owner.slug, &owner.email, "not-the-password-at-all").await;
        let retry: i64 = header(&sixth, "retry-after").parse().expect("Retry-After seconds");
        assert!((1..=900).contains(&retry), "{retry}");
        let locked = assert_problem(sixth, 429, "too_many_attempts").await;
        let right = login(&app, &owner.slug, &owner.email, OWNER_PASSWORD).await;
        assert_problem(right, 429, "too_many_attempts").await;
        // An account that does not exist locks the same way, with the same words.
        for _ in 0..5 {
            login(&app, &owner.slug, "ghost@nowhere.test", "not-the-password-at-all").await;
        }
        let ghost = assert_problem(login(&app, &owner.slug, "ghost@nowhere.test", "x-y-z-w-v-u-t").await, 429, "too_many_attempts").await;
        assert_eq!(ghost["detail"], locked["detail"]);
        let types = event_types(&app, &owner.tenant_id).await;
        assert_eq!(types.iter().filter(|t| *t == "security.login_failed").count(), 5);
        assert_eq!(types.iter().filter(|t| *t == "security.login_locked").count(), 1);
    }

    async fn one_address_gets_twenty_failures_across_all_accounts(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, _) = app.owner_with_tokens("addr").await;
        for i in 0..20 {
            let res = login(&app, &owner.slug, &format!("guess{i}@nowhere.test"), "not-the-password-at-all").await;
            assert_eq!(res.status(), 401, "attempt {i}");
        }
        // The owner's own account has no failures, but this address is spent.
        assert_problem(login(&app, &owner.slug, &owner.email, OWNER_PASSWORD).await, 429, "too_many_attempts").await;
    }
}
