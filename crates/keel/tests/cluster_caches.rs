//! Caches across nodes (issue 25, ADR 0041): two nodes on one PostgreSQL database and one
//! NATS server. A write through node A reaches node B's caches through the bus on the next
//! request after B applied the announcement (not at a time bound: the bounds here are 60 s);
//! with NATS stopped, the exact time bounds still hold.

use std::time::{Duration, Instant};

use keel_testkit::{Backend, TestApp, shop, spawn_app_with};
use reqwest::Method;

/// Settings of both nodes: the bus, and the caches' time bounds.
fn node(
    nats: &str,
    tag: &str,
    cache_age_s: u64,
    key_cache_ms: u64,
) -> impl Fn(&mut keel::config::RawConfig) + Clone {
    let (nats, tag) = (nats.to_owned(), tag.to_owned());
    move |raw| {
        raw.nats_url = Some(nats.clone().into());
        raw.nats.stream = format!("KEEL_TEST_{tag}");
        raw.nats.subject_prefix = format!("keel.test.{tag}");
        raw.nats.changes_subject = format!("keel.test-changes.{tag}");
        raw.store_cache_max_age_s = cache_age_s;
        raw.auth.publishable_key_cache_ms = key_cache_ms;
    }
}

async fn two_nodes(configure: impl Fn(&mut keel::config::RawConfig) + Clone) -> (TestApp, TestApp) {
    let a = spawn_app_with(
        Backend::Postgres,
        utoipa_axum::router::OpenApiRouter::new(),
        configure.clone(),
    )
    .await;
    let (url, secret) = (a.db.url(), a.settings.secret_key.clone());
    let b = spawn_app_with(
        Backend::Postgres,
        utoipa_axum::router::OpenApiRouter::new(),
        move |raw| {
            configure(raw);
            raw.database_url = Some(url.into());
            raw.secret_key = secret;
        },
    )
    .await;
    (a, b)
}

async fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until B has applied every change A announced.
async fn settled(a: &TestApp, b: &TestApp) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let sent = counter(a, "keel_cluster_changes_announced_total").await;
            let got = counter(b, "keel_cluster_changes_received_total").await;
            if sent > 0 && got == sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("B applies A's announcements");
}

/// A's announced count moved past `before` (its publishing task sent the write's change).
async fn announced_after(a: &TestApp, before: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while counter(a, "keel_cluster_changes_announced_total").await <= before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("A announces its write");
}

async fn products(app: &TestApp, pk: &str) -> reqwest::Response {
    app.store_request(
        Method::GET,
        pk,
        "/v1/store/products?currency=USD",
        None,
        None,
    )
    .await
}

async fn title(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 200);
    let body = shop::json(res).await;
    body["data"][0]["title"].as_str().expect("title").to_owned()
}

async fn storefront_key_id(app: &TestApp, token: &str) -> String {
    let keys = shop::json(app.get_as("/v1/admin/api-keys", token).await).await;
    keys["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kind"] == "publishable")
        .and_then(|k| k["id"].as_str())
        .expect("the storefront key")
        .to_owned()
}

async fn rename(app: &TestApp, s: &shop::Shop, product: &str, title: &str) {
    let res = shop::admin(
        app,
        &s.owner.access_token,
        Method::PATCH,
        &format!("/v1/admin/products/{product}"),
        Some(serde_json::json!({"title": title})),
        None,
    )
    .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

async fn revoke(app: &TestApp, s: &shop::Shop) {
    let id = storefront_key_id(app, &s.owner.access_token).await;
    let res = shop::admin(
        app,
        &s.owner.access_token,
        Method::DELETE,
        &format!("/v1/admin/api-keys/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
}

async fn product_id(app: &TestApp, s: &shop::Shop) -> String {
    let body = shop::json(
        app.get_as("/v1/admin/products", &s.owner.access_token)
            .await,
    )
    .await;
    body["data"][0]["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_write_through_one_node_reaches_the_others_caches_through_the_bus() {
    let nats = keel_testdb::nats().await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    // Bounds of 60 s: only the announcement can explain B seeing a change within the test.
    let (a, b) = two_nodes(node(&nats.url, &tag, 60, 60_000)).await;
    let s = shop::shop(&a, "changes", 10).await;
    let product = product_id(&a, &s).await;
    settled(&a, &b).await;
    // B caches its storefront answer (the second read is a hit: it carries `age`).
    assert_eq!(title(products(&b, &s.pk).await).await, "Tee");
    let hit = products(&b, &s.pk).await;
    assert!(hit.headers().contains_key("age"), "served from B's cache");
    // A product change through A: B's next read after the announcement is fresh.
    let before = counter(&a, "keel_cluster_changes_announced_total").await;
    rename(&a, &s, &product, "Tee, renamed").await;
    announced_after(&a, before).await;
    settled(&a, &b).await;
    assert_eq!(title(products(&b, &s.pk).await).await, "Tee, renamed");
    // B caches again; the key revoked through A is refused by B on the next request.
    assert!(products(&b, &s.pk).await.headers().contains_key("age"));
    let before = counter(&a, "keel_cluster_changes_announced_total").await;
    revoke(&a, &s).await;
    announced_after(&a, before).await;
    settled(&a, &b).await;
    keel_testkit::assert_problem(products(&b, &s.pk).await, 401, "unauthorized").await;
    // `keel keys rotate` (another process) announces the new signing key: B publishes it
    // at once (its key set cache is 60 s).
    let keys = |app: &TestApp| {
        let url = app.url("/.well-known/jwks.json");
        async move {
            let jwks = shop::json(reqwest::get(url).await.expect("jwks")).await;
            jwks["keys"].as_array().expect("keys").len()
        }
    };
    let (published, received) = (
        keys(&b).await,
        counter(&b, "keel_cluster_changes_received_total").await,
    );
    let secret = a.settings.secret_key.as_ref().expect("set");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["keys", "rotate"])
        .env_clear()
        .env("KEEL_DATABASE_URL", a.db.url())
        .env(
            "KEEL_SECRET_KEY",
            secrecy::ExposeSecret::expose_secret(secret),
        )
        .env("KEEL_NATS_URL", &nats.url)
        .env("KEEL_NATS__STREAM", format!("KEEL_TEST_{tag}"))
        .env("KEEL_NATS__SUBJECT_PREFIX", format!("keel.test.{tag}"))
        .env(
            "KEEL_NATS__CHANGES_SUBJECT",
            format!("keel.test-changes.{tag}"),
        )
        .output()
        .await
        .expect("keel keys rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while counter(&b, "keel_cluster_changes_received_total").await <= received {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("B hears of the rotation");
    assert_eq!(
        keys(&b).await,
        published + 1,
        "B publishes the new key at once"
    );
    let bus = keel::event_bus(&a.settings)
        .await
        .expect("bus")
        .expect("set");
    bus.delete_stream()
        .await
        .expect("the test's stream is removed");
}

/// With NATS stopped, nothing is announced: B's copies go at their exact bounds (a storefront
/// answer after its max age, a revoked key after the key cache time), never later.
#[tokio::test]
async fn with_the_bus_down_the_exact_time_bounds_still_hold() {
    let nats = keel_testdb::nats_of_its_own().await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (cache_age, key_cache) = (Duration::from_secs(2), Duration::from_secs(1));
    let (a, b) = two_nodes(node(&nats.url, &tag, 2, 1000)).await;
    let s = shop::shop(&a, "bus-down", 10).await;
    let product = product_id(&a, &s).await;
    drop(nats);
    assert_eq!(title(products(&b, &s.pk).await).await, "Tee");
    rename(&a, &s, &product, "Tee, renamed").await;
    let changed = Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if title(products(&b, &s.pk).await).await == "Tee, renamed" {
                return changed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("B sees the change");
    assert!(
        seen <= cache_age + Duration::from_millis(500),
        "within the storefront cache's max age: {seen:?}"
    );
    revoke(&a, &s).await;
    let revoked = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if products(&b, &s.pk).await.status() == 401 {
                return revoked.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("B refuses the revoked key");
    assert!(
        refused <= key_cache + Duration::from_millis(500),
        "within the publishable key cache's time, whatever the storefront cache holds: {refused:?}"
    );
}
