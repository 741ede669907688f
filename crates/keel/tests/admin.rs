//! Staff administration and authorization over real HTTP, once per backend.

use keel_identity::domain::access::{Permission, Role};
use keel_testkit::{Backend, OWNER_PASSWORD, TestApp, assert_problem, backend_tests, spawn_app};

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request reaches the server")
}

backend_tests! {
    async fn invite_redeem_list_get_and_conflicts(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, owner_tokens) = app.owner_with_tokens("team").await;
        let (admin_id, admin_tokens) = app.member(&owner_tokens, "admin@team.test", "admin").await;
        let me = json(app.get_as("/v1/me", &admin_tokens.access_token).await).await;
        assert_eq!((me["role"].as_str(), me["status"].as_str()), (Some("admin"), Some("active")));
        let page = json(app.get_as("/v1/admin/users?limit=1", &owner_tokens.access_token).await).await;
        assert_eq!(page["data"][0]["id"], owner.user_id.as_str());
        let cursor = page["next_cursor"].as_str().expect("more");
        let rest = json(app.get_as(&format!("/v1/admin/users?limit=1&cursor={cursor}"), &owner_tokens.access_token).await).await;
        assert_eq!(rest["data"][0]["id"], admin_id.as_str());
        assert!(rest["next_cursor"].is_null());
        let one = json(app.get_as(&format!("/v1/admin/users/{admin_id}"), &owner_tokens.access_token).await).await;
        assert_eq!(one["email"], "admin@team.test");
        let dup = send(&app, reqwest::Method::POST, "/v1/admin/users", &owner_tokens.access_token, Some(serde_json::json!({"email": "ADMIN@team.test", "role": "staff"}))).await;
        assert_problem(dup, 409, "email_taken").await;
        let bad = send(&app, reqwest::Method::POST, "/v1/admin/users", &owner_tokens.access_token, Some(serde_json::json!({"email": "x@team.test", "role": "root"}))).await;
        assert_eq!(assert_problem(bad, 422, "validation_failed").await["errors"][0]["pointer"], "/role");
        let bad = send(&app, reqwest::Method::POST, "/v1/admin/users", &owner_tokens.access_token, Some(serde_json::json!({"email": "nope", "role": "staff"}))).await;
        assert_eq!(assert_problem(bad, 422, "validation_failed").await["errors"][0]["pointer"], "/email");
        assert_problem(app.get_as("/v1/admin/users?limit=0", &owner_tokens.access_token).await, 400, "bad_request").await;
        assert_problem(app.get_as("/v1/admin/users?cursor=forged", &owner_tokens.access_token).await, 400, "bad_request").await;
        // Another shop's user, from this shop's owner: not found.
        let (_, other_tokens) = app.owner_with_tokens("team-b").await;
        let (other_id, _) = app.member(&other_tokens, "staff@team-b.test", "staff").await;
        assert_problem(app.get_as(&format!("/v1/admin/users/{other_id}"), &owner_tokens.access_token).await, 404, "not_found").await;
        let patch = send(&app, reqwest::Method::PATCH, &format!("/v1/admin/users/{other_id}"), &owner_tokens.access_token, Some(serde_json::json!({"role": "viewer"}))).await;
        assert_problem(patch, 404, "not_found").await;
    }

    async fn every_role_reaches_exactly_the_routes_its_permissions_allow(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("matrix").await;
        let mut tokens = vec![(Role::Owner, owner.clone())];
        for (role, name) in [(Role::Admin, "admin"), (Role::Staff, "staff"), (Role::Viewer, "viewer")] {
            tokens.push((role, app.member(&owner, &format!("{name}@matrix.test"), name).await.1));
        }
        let routes = [
            ("/v1/admin/users", Permission::UsersManage),
            ("/v1/admin/events", Permission::AuditRead),
            ("/v1/admin/products", Permission::CatalogRead),
            ("/v1/admin/stock-locations", Permission::CatalogRead),
            ("/v1/admin/inventory", Permission::CatalogRead),
        ];
        for (role, t) in &tokens {
            for (path, needs) in routes {
                let res = app.get_as(path, &t.access_token).await;
                let expected = if role.can(needs) { 200 } else { 403 };
                assert_eq!(res.status().as_u16(), expected, "{role} on {path}");
                if expected == 403 {
                    assert_problem(res, 403, "forbidden").await;
                }
            }
        }
        for (path, _) in routes {
            assert_problem(app.get(path).await, 401, "unauthorized").await;
        }
    }

    async fn owner_rules_hold_over_http(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, owner_tokens) = app.owner_with_tokens("rules").await;
        let (admin_id, admin) = app.member(&owner_tokens, "admin@rules.test", "admin").await;
        let demote_owner = send(&app, reqwest::Method::PATCH, &format!("/v1/admin/users/{}", owner.user_id), &admin.access_token, Some(serde_json::json!({"role": "staff"}))).await;
        assert_problem(demote_owner, 403, "forbidden").await;
        let invite_owner = send(&app, reqwest::Method::POST, "/v1/admin/users", &admin.access_token, Some(serde_json::json!({"email": "o2@rules.test", "role": "owner"}))).await;
        assert_problem(invite_owner, 403, "forbidden").await;
        let self_demote = send(&app, reqwest::Method::PATCH, &format!("/v1/admin/users/{}", owner.user_id), &owner_tokens.access_token, Some(serde_json::json!({"role": "admin"}))).await;
        assert_problem(self_demote, 409, "last_owner").await;
        let promote = send(&app, reqwest::Method::PATCH, &format!("/v1/admin/users/{admin_id}"), &owner_tokens.access_token, Some(serde_json::json!({"role": "owner"}))).await;
        assert_eq!(json(promote).await["role"], "owner");
        // With two owners, the new one may demote the first; the role applies at once.
        let demote = send(&app, reqwest::Method::PATCH, &format!("/v1/admin/users/{}", owner.user_id), &admin.access_token, Some(serde_json::json!({"role": "viewer"}))).await;
        assert_eq!(json(demote).await["role"], "viewer");
        assert_problem(app.get_as("/v1/admin/users", &owner_tokens.access_token).await, 403, "forbidden").await;
        let types: Vec<String> = json(app.get_as("/v1/admin/events?type=security.role_changed", &admin.access_token).await).await["data"]
            .as_array().expect("data").iter().map(|e| e["type"].as_str().expect("type").to_owned()).collect();
        assert_eq!(types, ["security.role_changed", "security.role_changed"]);
    }

    async fn disabling_a_user_ends_their_sessions_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("off").await;
        let (staff_id, staff) = app.member(&owner, "staff@off.test", "staff").await;
        assert_eq!(app.get_as("/v1/me", &staff.access_token).await.status(), 200);
        let off = send(&app, reqwest::Method::POST, &format!("/v1/admin/users/{staff_id}/disable"), &owner.access_token, None).await;
        assert_eq!(json(off).await["status"], "disabled");
        assert_problem(app.get_as("/v1/me", &staff.access_token).await, 401, "unauthorized").await;
        let refresh = app.post_json("/v1/auth/refresh", &serde_json::json!({"refresh_token": staff.refresh_token})).await;
        assert_problem(refresh, 401, "invalid_refresh_token").await;
        let me = json(app.get_as("/v1/me", &owner.access_token).await).await;
        let login = app.post_json("/v1/auth/login", &serde_json::json!({"tenant": me["tenant_id"], "email": "staff@off.test", "password": OWNER_PASSWORD})).await;
        assert_eq!(login.status(), 401);
    }

    async fn the_event_log_pages_and_filters_by_type(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("log").await;
        let all = json(app.get_as("/v1/admin/events", &owner.access_token).await).await;
        let types: Vec<&str> = all["data"].as_array().expect("data").iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types, ["tenant.created", "staff_user.invited", "staff_user.activated"]);
        let first = json(app.get_as("/v1/admin/events?limit=2", &owner.access_token).await).await;
        let cursor = first["next_cursor"].as_str().expect("more");
        let next = json(app.get_as(&format!("/v1/admin/events?limit=2&cursor={cursor}"), &owner.access_token).await).await;
        assert_eq!(next["data"][0]["type"], "staff_user.activated");
        app.post_json("/v1/auth/login", &serde_json::json!({"tenant": "log-x", "email": "a@b.test", "password": "whatever-long-pw"})).await;
        let security = json(app.get_as("/v1/admin/events?type=staff_user.*", &owner.access_token).await).await;
        assert_eq!(security["data"].as_array().expect("data").len(), 2);
        assert_problem(app.get_as("/v1/admin/events?type=%25", &owner.access_token).await, 400, "bad_request").await;
    }
}
