//! One behaviour suite for every storage port, run against every adapter.
//!
//! Each behaviour is a plain `async fn` taking a [`Stores`] (fresh, migrated, empty). The
//! [`conformance_tests!`] macro expands the whole list into named `#[tokio::test]`s inside an
//! adapter crate, so `cargo nextest` shows `tenant_b_cannot_read_tenant_a_events` once per
//! backend and the list of behaviours lives in exactly one place (this file).
#![forbid(unsafe_code)]

use std::sync::Arc;

use keel_identity::{Tenant, TenantName, TenantSlug, TenantStore, ports::TENANT_SLUG_CONSTRAINT};
use keel_kernel::{
    StoreError, TenantId,
    clock::{Clock, SystemClock},
    event::{EventId, EventLog, NewEvent},
    health::StoreHealth,
    page::{Limit, Page, PageRequest},
};

/// The ports of one backend, as the application holds them.
#[derive(Debug, Clone)]
pub struct Stores {
    pub tenants: Arc<dyn TenantStore>,
    pub events: Arc<dyn EventLog>,
    pub health: Arc<dyn StoreHealth>,
}

impl Stores {
    /// Wraps one adapter value that implements every port.
    pub fn from_backend<S>(store: S) -> Self
    where
        S: TenantStore + EventLog + StoreHealth + 'static,
    {
        let store = Arc::new(store);
        Self {
            tenants: store.clone(),
            events: store.clone(),
            health: store,
        }
    }
}

/// Expands every behaviour into a named test. `$fresh` is an async expression giving a
/// `(guard, Stores)` pair for a fresh, migrated database; the guard keeps it alive.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:expr) => {
        $crate::conformance_tests!(@expand $fresh;
            schema_is_current_after_migration,
            created_tenant_is_readable_by_id_and_by_slug,
            missing_tenant_is_not_found,
            duplicate_slug_is_a_conflict_on_the_named_constraint,
            failed_create_writes_no_event,
            tenant_created_event_is_written_with_the_tenant,
            tenants_list_pages_without_gaps_or_duplicates,
            tenant_list_cursor_survives_concurrent_inserts,
            tenant_b_cannot_read_tenant_a_events,
            event_list_pages_within_one_tenant,
            timestamps_round_trip_to_the_microsecond,
            concurrent_writes_all_commit,
        );
    };
    (@expand $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, stores) = $fresh.await;
                $crate::$name(&stores).await;
            }
        )*
    };
}

fn tenant(slug: &str) -> Tenant {
    Tenant {
        id: TenantId::new(),
        slug: TenantSlug::parse(slug).expect("valid test slug"),
        name: TenantName::parse(&format!("Tenant {slug}")).expect("valid test name"),
        created_at: SystemClock.now(),
    }
}

fn created_event(t: &Tenant) -> NewEvent {
    NewEvent::new(
        t.id,
        "tenant.created",
        &serde_json::json!({"slug": t.slug.as_str()}),
        t.created_at,
    )
    .expect("serializable payload")
}

async fn create(stores: &Stores, slug: &str) -> (Tenant, NewEvent) {
    let t = tenant(slug);
    let e = created_event(&t);
    stores
        .tenants
        .create(&t, std::slice::from_ref(&e))
        .await
        .expect("create tenant");
    (t, e)
}

fn unique_slug(prefix: &str) -> String {
    // Slugs are global; the random tail of a fresh id keeps behaviours independent.
    let id = TenantId::new().to_string();
    format!("{prefix}-{}", &id[id.len() - 10..])
}

fn limit(n: u32) -> Limit {
    Limit::new(n).expect("valid test limit")
}

async fn all_tenant_pages(stores: &Stores, n: u32) -> Vec<Page<Tenant>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = stores
            .tenants
            .list(PageRequest {
                limit: limit(n),
                after,
            })
            .await
            .expect("list tenants");
        after = page.next_cursor;
        pages.push(page);
        if after.is_none() {
            return pages;
        }
    }
}

pub async fn schema_is_current_after_migration(stores: &Stores) {
    let status = stores.health.schema_status().await.expect("schema status");
    assert!(status.is_current(), "{status:?}");
    assert!(status.expected >= 1);
}

pub async fn created_tenant_is_readable_by_id_and_by_slug(stores: &Stores) {
    let (t, _) = create(stores, &unique_slug("acme")).await;
    assert_eq!(stores.tenants.get(t.id).await.expect("by id"), t);
    assert_eq!(
        stores.tenants.get_by_slug(&t.slug).await.expect("by slug"),
        t
    );
}

pub async fn missing_tenant_is_not_found(stores: &Stores) {
    assert!(matches!(
        stores.tenants.get(TenantId::new()).await,
        Err(StoreError::NotFound)
    ));
    let slug = TenantSlug::parse("nobody-here").expect("valid");
    assert!(matches!(
        stores.tenants.get_by_slug(&slug).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn duplicate_slug_is_a_conflict_on_the_named_constraint(stores: &Stores) {
    let slug = unique_slug("dup");
    let (first, _) = create(stores, &slug).await;
    let second = tenant(&slug);
    let err = stores
        .tenants
        .create(&second, &[created_event(&second)])
        .await
        .expect_err("a second tenant with the same slug");
    assert!(err.is_conflict_on(TENANT_SLUG_CONSTRAINT), "{err:?}");
    assert_eq!(
        stores
            .tenants
            .get_by_slug(&first.slug)
            .await
            .expect("first")
            .id,
        first.id
    );
    assert!(matches!(
        stores.tenants.get(second.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn failed_create_writes_no_event(stores: &Stores) {
    let slug = unique_slug("atomic");
    create(stores, &slug).await;
    let second = tenant(&slug);
    let event = created_event(&second);
    assert!(
        stores
            .tenants
            .create(&second, std::slice::from_ref(&event))
            .await
            .is_err()
    );
    let page = stores
        .events
        .list(second.id, PageRequest::default())
        .await
        .expect("list");
    assert!(page.items.is_empty(), "{page:?}");
    assert!(matches!(
        stores.events.get(second.id, event.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn tenant_created_event_is_written_with_the_tenant(stores: &Stores) {
    let (t, e) = create(stores, &unique_slug("outbox")).await;
    let got = stores.events.get(t.id, e.id).await.expect("event");
    assert_eq!(got.id, e.id);
    assert_eq!(got.tenant_id, t.id);
    assert_eq!(got.event_type, "tenant.created");
    assert_eq!(got.payload, e.payload);
    assert_eq!(got.occurred_at, e.occurred_at);
}

pub async fn tenants_list_pages_without_gaps_or_duplicates(stores: &Stores) {
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(create(stores, &unique_slug(&format!("list{i}"))).await.0.id);
    }
    let pages = all_tenant_pages(stores, 3).await;
    assert_eq!(
        pages.iter().map(|p| p.items.len()).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    let seen: Vec<TenantId> = pages
        .into_iter()
        .flat_map(|p| p.items)
        .map(|t| t.id)
        .collect();
    assert_eq!(seen, created);
}

pub async fn tenant_list_cursor_survives_concurrent_inserts(stores: &Stores) {
    let mut expected = Vec::new();
    for i in 0..4 {
        expected.push(create(stores, &unique_slug(&format!("c{i}"))).await.0.id);
    }
    let first = stores
        .tenants
        .list(PageRequest::first(limit(2)))
        .await
        .expect("page 1");
    // Rows inserted between page requests appear after the existing ones, never twice.
    for i in 0..3 {
        expected.push(create(stores, &unique_slug(&format!("late{i}"))).await.0.id);
    }
    let mut seen: Vec<TenantId> = first.items.iter().map(|t| t.id).collect();
    let mut after = first.next_cursor;
    while let Some(cursor) = after {
        let page = stores
            .tenants
            .list(PageRequest {
                limit: limit(2),
                after: Some(cursor),
            })
            .await
            .expect("next page");
        seen.extend(page.items.iter().map(|t| t.id));
        after = page.next_cursor;
    }
    assert_eq!(seen, expected);
}

pub async fn tenant_b_cannot_read_tenant_a_events(stores: &Stores) {
    let (a, a_event) = create(stores, &unique_slug("tenant-a")).await;
    let (b, b_event) = create(stores, &unique_slug("tenant-b")).await;
    assert!(matches!(
        stores.events.get(b.id, a_event.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores.events.get(a.id, b_event.id).await,
        Err(StoreError::NotFound)
    ));
    let b_log = stores
        .events
        .list(b.id, PageRequest::default())
        .await
        .expect("b's log");
    assert_eq!(
        b_log.items.iter().map(|e| e.id).collect::<Vec<EventId>>(),
        vec![b_event.id]
    );
    assert!(b_log.items.iter().all(|e| e.tenant_id == b.id));
}

pub async fn event_list_pages_within_one_tenant(stores: &Stores) {
    let (a, first) = create(stores, &unique_slug("paged")).await;
    let (_, other) = create(stores, &unique_slug("other")).await;
    let mut expected = vec![first.id];
    // More events for tenant a, written the only way events are written: with a state change.
    // Tenants are the only state so far, so the extra events ride on other tenants' creation
    // but belong to tenant a.
    for i in 0..4 {
        let t = tenant(&unique_slug(&format!("carrier{i}")));
        let e = NewEvent::new(
            a.id,
            "test.happened",
            &serde_json::json!({"n": i}),
            t.created_at,
        )
        .expect("payload");
        expected.push(e.id);
        stores
            .tenants
            .create(&t, &[e])
            .await
            .expect("create carrier");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = stores
            .events
            .list(
                a.id,
                PageRequest {
                    limit: limit(2),
                    after,
                },
            )
            .await
            .expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|e| e.id));
        after = page.next_cursor;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, expected);
    assert!(!seen.contains(&other.id));
}

pub async fn timestamps_round_trip_to_the_microsecond(stores: &Stores) {
    let mut t = tenant(&unique_slug("time"));
    t.created_at = time::macros::datetime!(2026-11-21 10:11:12.123_456 UTC);
    stores.tenants.create(&t, &[]).await.expect("create");
    assert_eq!(
        stores.tenants.get(t.id).await.expect("get").created_at,
        t.created_at
    );
}

/// Writes from many concurrent requests queue and all commit: none fails with a lock error
/// (on SQLite, the single writer serialises them in-process instead of `SQLITE_BUSY`).
pub async fn concurrent_writes_all_commit(stores: &Stores) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let tenants = stores.tenants.clone();
        tasks.spawn(async move {
            let t = tenant(&unique_slug(&format!("load{i}")));
            let e = created_event(&t);
            tenants.create(&t, &[e]).await.map(|()| t.id)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        created.push(
            joined
                .expect("task")
                .expect("every concurrent write commits"),
        );
    }
    let listed: Vec<TenantId> = all_tenant_pages(stores, 100)
        .await
        .into_iter()
        .flat_map(|p| p.items)
        .map(|t| t.id)
        .collect();
    created.sort();
    assert_eq!(listed, created);
    for id in created {
        let events = stores
            .events
            .list(id, PageRequest::default())
            .await
            .expect("events");
        assert_eq!(events.items.len(), 1, "each write committed with its event");
    }
}
