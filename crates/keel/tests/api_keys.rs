//! API keys over real HTTP (once per backend), and the rotation overlap to the microsecond.

use std::sync::Arc;

use keel_identity::{
    domain::access::{Permission, Role},
    domain::api_key::KeyKind,
    domain::staff::{SessionId, UserId},
    services::api_keys::ApiKeyService,
    services::auth::{AuthError, StaffPrincipal},
};
use keel_kernel::clock::{Clock as _, ManualClock};
use keel_testkit::{Backend, TestApp, assert_problem, backend_tests, spawn_app};
use time::{Duration, macros::datetime};

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

async fn create_key(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/admin/api-keys"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

backend_tests! {
    async fn a_secret_key_works_within_its_scopes_and_stops_when_revoked(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("keys").await;
        let created = create_key(&app, &owner.access_token, serde_json::json!({"name": "reporting", "scopes": ["audit:read"]})).await;
        assert_eq!(created.status(), 201);
        let created = json(created).await;
        let secret = created["secret"].as_str().expect("secret").to_owned();
        let lookup = created["key"]["lookup"].as_str().expect("lookup");
        assert!(secret.starts_with(&format!("sk_{lookup}_")));
        let listed = json(app.get_as("/v1/admin/api-keys", &owner.access_token).await).await;
        assert!(!listed.to_string().contains(&secret), "listings never show the key");
        assert!(listed["data"][0]["last_used_at"].is_null());

        assert_eq!(app.get_as("/v1/admin/events", &secret).await.status(), 200, "within scope");
        assert!(json(app.get_as("/v1/admin/api-keys", &owner.access_token).await).await["data"][0]["last_used_at"].is_string());
        assert_problem(app.get_as("/v1/admin/users", &secret).await, 403, "forbidden").await;
        assert_problem(app.get_as("/v1/admin/api-keys", &secret).await, 403, "forbidden").await;
        let narrow = json(create_key(&app, &owner.access_token, serde_json::json!({"name": "orders", "scopes": ["orders:read"]})).await).await;
        let narrow_secret = narrow["secret"].as_str().expect("secret");
        assert_problem(app.get_as("/v1/admin/events", narrow_secret).await, 403, "forbidden").await;

        let id = created["key"]["id"].as_str().expect("id");
        let revoked = app.client.delete(app.url(&format!("/v1/admin/api-keys/{id}"))).bearer_auth(&owner.access_token).send().await.expect("send");
        assert_eq!(revoked.status(), 204);
        assert_problem(app.get_as("/v1/admin/events", &secret).await, 401, "unauthorized").await;
        let mut tampered = narrow_secret.to_owned();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        assert_problem(app.get_as("/v1/admin/events", &tampered).await, 401, "unauthorized").await;
    }

    async fn rotation_issues_a_new_key_and_keeps_the_old_one_for_the_overlap(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("rotate").await;
        let created = json(create_key(&app, &owner.access_token, serde_json::json!({"name": "ci", "scopes": ["audit:read"]})).await).await;
        let old = created["secret"].as_str().expect("secret").to_owned();
        let id = created["key"]["id"].as_str().expect("id");
        let before = time::OffsetDateTime::now_utc();
        let rotated = app.client.post(app.url(&format!("/v1/admin/api-keys/{id}/rotate"))).bearer_auth(&owner.access_token).send().await.expect("send");
        assert_eq!(rotated.status(), 201);
        let rotated = json(rotated).await;
        let new = rotated["secret"].as_str().expect("secret");
        assert_ne!(new, old);
        assert_eq!(rotated["key"]["scopes"], serde_json::json!(["audit:read"]));
        let until = time::OffsetDateTime::parse(rotated["previous_key_expires_at"].as_str().expect("until"), &time::format_description::well_known::Rfc3339).expect("time");
        let overlap = until - before;
        assert!(overlap > Duration::seconds(86_399) && overlap <= Duration::seconds(86_401), "{overlap}");
        assert_eq!(app.get_as("/v1/admin/events", new).await.status(), 200);
        assert_eq!(app.get_as("/v1/admin/events", &old).await.status(), 200, "the old key works during the overlap");
    }

    async fn publishable_keys_and_bad_requests_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, owner) = app.owner_with_tokens("pk").await;
        let pk = json(create_key(&app, &owner.access_token, serde_json::json!({"name": "storefront", "kind": "publishable"})).await).await;
        let pk = pk["secret"].as_str().expect("pk");
        assert!(pk.starts_with("pk_"));
        assert_problem(app.get_as("/v1/admin/events", pk).await, 401, "unauthorized").await;
        for (body, pointer) in [
            (serde_json::json!({"name": "x", "kind": "publishable", "scopes": ["orders:read"]}), "/scopes"),
            (serde_json::json!({"name": "x", "scopes": ["users:manage"]}), "/scopes"),
            (serde_json::json!({"name": "x", "scopes": ["api_keys:manage"]}), "/scopes"),
            (serde_json::json!({"name": "x"}), "/scopes"),
            (serde_json::json!({"name": "", "scopes": ["orders:read"]}), "/name"),
            (serde_json::json!({"name": "x", "kind": "root", "scopes": ["orders:read"]}), "/kind"),
        ] {
            let res = create_key(&app, &owner.access_token, body).await;
            assert_eq!(assert_problem(res, 422, "validation_failed").await["errors"][0]["pointer"], pointer);
        }
    }

    async fn keys_belong_to_their_tenant(backend: Backend) {
        let app = spawn_app(backend).await;
        let (_, a) = app.owner_with_tokens("kt-a").await;
        let (_, b) = app.owner_with_tokens("kt-b").await;
        let b_key = json(create_key(&app, &b.access_token, serde_json::json!({"name": "b", "scopes": ["audit:read"]})).await).await;
        let b_id = b_key["key"]["id"].as_str().expect("id");
        let del = app.client.delete(app.url(&format!("/v1/admin/api-keys/{b_id}"))).bearer_auth(&a.access_token).send().await.expect("send");
        assert_problem(del, 404, "not_found").await;
        let rot = app.client.post(app.url(&format!("/v1/admin/api-keys/{b_id}/rotate"))).bearer_auth(&a.access_token).send().await.expect("send");
        assert_problem(rot, 404, "not_found").await;
        // B's key reads B's log only.
        let events = json(app.get_as("/v1/admin/events", b_key["secret"].as_str().expect("secret")).await).await;
        let b_me = json(app.get_as("/v1/me", &b.access_token).await).await;
        assert!(events["data"].as_array().expect("data").iter().all(|e| e["data"]["tenant_id"].is_null() || e["data"]["tenant_id"] == b_me["tenant_id"]));
        assert!(json(app.get_as("/v1/admin/api-keys", &a.access_token).await).await["data"].as_array().expect("data").is_empty());
    }
}

/// A migrated SQLite store with one tenant, and its owner as an actor (keep the database
/// handle: dropping it removes the files).
async fn store_with_tenant(slug: &str) -> (keel_testkit::TestDb, keel::Store, StaffPrincipal) {
    let db = keel_testkit::TestDb::fresh(Backend::Sqlite).await;
    let settings = keel::Settings::from_raw(keel_testkit::test_config(&db)).expect("settings");
    let store = keel::Store::open(&settings.database).await.expect("open");
    store.migrate().await.expect("migrate");
    let tenant = keel_kernel::TenantId::new();
    let t = keel_identity::Tenant {
        id: tenant,
        slug: keel_identity::TenantSlug::parse(slug).expect("slug"),
        name: keel_identity::TenantName::parse("Keys").expect("name"),
        created_at: datetime!(2026-11-21 0:00 UTC),
    };
    store.tenants().create(&t, &[]).await.expect("tenant");
    let actor = StaffPrincipal {
        tenant_id: tenant,
        user_id: UserId::new(),
        role: Role::Owner,
        session_id: SessionId::new(),
        mfa_pending: false,
    };
    (db, store, actor)
}

#[tokio::test]
async fn a_rotated_key_works_until_exactly_the_end_of_the_overlap() {
    let (_db, store, actor) = store_with_tenant("overlap").await;
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 12:00 UTC)));
    let overlap = Duration::seconds(86_400);
    let keys = ApiKeyService::new(store.api_keys(), clock.clone(), overlap);
    let old = keys
        .create(
            &actor,
            KeyKind::Secret,
            "ci".into(),
            vec![Permission::AuditRead],
            vec![],
            None,
        )
        .await
        .expect("create");
    clock.advance(Duration::minutes(5));
    let rotated_at = clock.now();
    let (new, until) = keys.rotate(&actor, old.key.id).await.expect("rotate");
    assert_eq!(until, rotated_at + overlap);
    clock.advance(overlap - Duration::microseconds(1));
    assert!(
        keys.authenticate_secret(&old.plaintext).await.is_ok(),
        "one microsecond before the end"
    );
    clock.advance(Duration::microseconds(1));
    assert!(
        matches!(
            keys.authenticate_secret(&old.plaintext).await,
            Err(AuthError::Unauthenticated)
        ),
        "at the end"
    );
    assert!(keys.authenticate_secret(&new.plaintext).await.is_ok());
}

/// The SQLite statements this process has run so far.
fn statements(store: &keel::Store) -> u64 {
    store
        .health()
        .counters()
        .iter()
        .find(|c| c.name == "keel_sqlite_statements_total")
        .expect("SQLite counts its statements")
        .value
}

/// A publishable key named `shop`, made by `keys` as `actor`.
async fn publishable(
    keys: &ApiKeyService,
    actor: &keel_identity::services::auth::StaffPrincipal,
) -> keel_identity::services::api_keys::IssuedKey {
    keys.create(
        actor,
        KeyKind::Publishable,
        "shop".into(),
        vec![],
        vec![],
        None,
    )
    .await
    .expect("create")
}

#[tokio::test]
async fn a_cached_publishable_key_is_checked_in_full_without_reading_the_store() {
    let (_db, store, actor) = store_with_tenant("cached").await;
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 12:00 UTC)));
    let keys = ApiKeyService::new(store.api_keys(), clock.clone(), Duration::seconds(60))
        .with_publishable_cache(Duration::seconds(1));
    let key = publishable(&keys, &actor).await;
    assert_eq!(
        keys.authenticate_publishable(&key.plaintext).await.ok(),
        Some(actor.tenant_id)
    );
    let before = statements(&store);
    assert_eq!(
        keys.authenticate_publishable(&key.plaintext).await.ok(),
        Some(actor.tenant_id)
    );
    assert_eq!(statements(&store), before, "answered from the cache");
    let mut tampered = key.plaintext.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(
        matches!(
            keys.authenticate_publishable(&tampered).await,
            Err(AuthError::Unauthenticated)
        ),
        "a cached lookup with the wrong secret"
    );
    assert!(
        keys.authenticate_secret(&key.plaintext).await.is_err(),
        "a publishable key is no secret key, cached or not"
    );
    clock.advance(Duration::seconds(1));
    let before = statements(&store);
    assert!(keys.authenticate_publishable(&key.plaintext).await.is_ok());
    assert!(
        statements(&store) > before,
        "read again once its time is up"
    );
}

#[tokio::test]
async fn a_publishable_key_revoked_through_another_node_stops_within_exactly_the_cache_time() {
    let (_db, store, actor) = store_with_tenant("revoked").await;
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 12:00 UTC)));
    let ttl = Duration::milliseconds(1_000);
    let node = |ttl| {
        ApiKeyService::new(store.api_keys(), clock.clone(), Duration::seconds(60))
            .with_publishable_cache(ttl)
    };
    let (here, there, uncached) = (node(ttl), node(ttl), node(Duration::ZERO));
    let key = publishable(&here, &actor).await;
    for n in [&here, &there, &uncached] {
        assert!(n.authenticate_publishable(&key.plaintext).await.is_ok());
    }
    clock.advance(Duration::milliseconds(100));
    here.revoke(&actor, key.key.id).await.expect("revoke");
    let refused = |n: &ApiKeyService| {
        let n = n.clone();
        let plaintext = key.plaintext.clone();
        async move {
            matches!(
                n.authenticate_publishable(&plaintext).await,
                Err(AuthError::Unauthenticated)
            )
        }
    };
    assert!(
        refused(&here).await,
        "the node that revoked it refuses at once"
    );
    assert!(
        refused(&uncached).await,
        "a node without the cache refuses at once"
    );
    clock.advance(ttl - Duration::milliseconds(100) - Duration::microseconds(1));
    assert!(
        !refused(&there).await,
        "another node trusts its read until its time is up"
    );
    clock.advance(Duration::microseconds(1));
    assert!(refused(&there).await, "and refuses from then on");
}
