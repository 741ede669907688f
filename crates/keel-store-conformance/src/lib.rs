//! One behaviour suite for every storage port, run against every adapter.
//!
//! Each behaviour is a plain `async fn` taking a [`Stores`] (fresh, migrated, empty). The
//! [`conformance_tests!`] macro expands the whole list into named `#[tokio::test]`s inside an
//! adapter crate, so `cargo nextest` shows `tenant_b_cannot_read_tenant_a_events` once per
//! backend and the list of behaviours lives in exactly one place (this file).
#![forbid(unsafe_code)]

mod catalog;
mod orders;
mod webhooks;

pub use catalog::*;
pub use orders::*;
pub use webhooks::*;

use std::sync::Arc;

use keel_identity::{
    Tenant, TenantName, TenantSlug, TenantStore,
    access::{Role, RoleChangeError},
    password::StoredHash,
    ports::{
        ApiKeyStore, Attempt, CUSTOMER_EMAIL_CONSTRAINT, CustomerStore, LoginThrottle,
        MFA_ALREADY_ENABLED, MfaStore, STAFF_EMAIL_CONSTRAINT, SessionStore, SigningKeyStore,
        StaffStore, TENANT_SLUG_CONSTRAINT, TOKEN_ALREADY_USED,
    },
    secret::Secret,
    staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser, StoredMfa,
        StoredSigningKey, TokenPurpose, UserId, UserStatus,
    },
    throttle::{Limit as ThrottleLimit, ThrottleKey},
};
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
    pub staff: Arc<dyn StaffStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub keys: Arc<dyn SigningKeyStore>,
    pub throttle: Arc<dyn LoginThrottle>,
    pub mfa: Arc<dyn MfaStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub customers: Arc<dyn CustomerStore>,
    pub catalog: Arc<dyn keel_catalog::ports::CatalogStore>,
    pub inventory: Arc<dyn keel_catalog::ports::InventoryStore>,
    pub carts: Arc<dyn keel_orders::ports::CartStore>,
    pub orders: Arc<dyn keel_orders::ports::OrderStore>,
    pub setup: Arc<dyn keel_orders::ports::SetupStore>,
    pub idempotency: Arc<dyn keel_kernel::idempotency::IdempotencyStore>,
    pub webhooks: Arc<dyn keel_webhooks::ports::WebhookStore>,
    pub consumers: Arc<dyn keel_kernel::bus::ConsumerStore>,
}

impl Stores {
    /// Wraps one adapter value that implements every port.
    pub fn from_backend<S>(store: S) -> Self
    where
        S: TenantStore
            + EventLog
            + StoreHealth
            + StaffStore
            + SessionStore
            + SigningKeyStore
            + LoginThrottle
            + MfaStore
            + ApiKeyStore
            + CustomerStore
            + keel_catalog::ports::CatalogStore
            + keel_catalog::ports::InventoryStore
            + keel_orders::ports::CartStore
            + keel_orders::ports::OrderStore
            + keel_orders::ports::SetupStore
            + keel_kernel::idempotency::IdempotencyStore
            + keel_webhooks::ports::WebhookStore
            + keel_kernel::bus::ConsumerStore
            + 'static,
    {
        let store = Arc::new(store);
        Self {
            tenants: store.clone(),
            events: store.clone(),
            health: store.clone(),
            staff: store.clone(),
            sessions: store.clone(),
            keys: store.clone(),
            throttle: store.clone(),
            mfa: store.clone(),
            api_keys: store.clone(),
            customers: store.clone(),
            catalog: store.clone(),
            inventory: store.clone(),
            carts: store.clone(),
            orders: store.clone(),
            setup: store.clone(),
            idempotency: store.clone(),
            webhooks: store.clone(),
            consumers: store,
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
            tenant_with_owner_is_created_atomically,
            setup_token_is_found_only_while_unused_and_unexpired,
            activation_consumes_the_token_exactly_once,
            refresh_rotation_spends_the_old_token_once,
            concurrent_rotations_of_one_refresh_token_let_exactly_one_win,
            revoked_and_expired_sessions_are_not_active,
            tenant_b_cannot_read_tenant_a_users_or_sessions,
            signing_key_rotation_retires_the_previous_key,
            appended_events_are_listed_for_their_tenant_only,
            login_reservations_stop_at_the_limit_and_reopen_as_the_window_slides,
            a_successful_login_clears_the_account_but_not_the_address,
            concurrent_login_reservations_never_exceed_the_limit,
            invited_users_are_listed_and_emails_are_unique_per_tenant,
            role_changes_follow_the_owner_rules_and_disabling_ends_sessions,
            concurrent_demotions_cannot_remove_the_last_owner,
            mfa_is_confirmed_once_and_each_step_is_used_once,
            backup_codes_are_single_use_and_tenant_scoped,
            an_mfa_token_dies_at_its_failure_limit_and_completes_once,
            api_keys_are_found_by_lookup_and_listed_per_tenant,
            api_key_rotation_caps_the_old_expiry_atomically,
            customers_sign_up_with_a_session_and_emails_are_unique_per_tenant,
            staff_and_customer_sessions_never_mix,
            staff_and_customer_mfa_never_mix,
            a_customer_password_change_ends_only_that_customers_other_sessions,
            a_customer_mfa_token_keeps_its_owner_and_starts_a_customer_session,
            a_product_round_trips_with_variants_and_exact_prices,
            a_variant_for_sale_carries_its_product_and_its_price_in_one_currency,
            a_failed_save_writes_neither_the_product_nor_its_event,
            stale_versions_are_refused_and_variants_follow_the_product,
            product_pages_have_no_gaps_or_duplicates_under_concurrent_inserts,
            product_filters_select_by_status_time_and_text,
            tenant_b_cannot_read_tenant_a_products,
            concurrent_reservations_never_exceed_stock,
            checkout_finds_the_first_location_with_enough_unreserved_stock,
            adjustments_are_ledgered_and_never_drop_stock_below_reserved,
            a_reservation_is_released_once,
            reserved_stock_pins_its_variant_and_stocked_locations_stay,
            a_carts_writes_carry_their_events_and_a_stale_save_writes_nothing,
            a_checkout_that_cannot_reserve_everything_writes_nothing,
            a_checkout_commits_order_stock_and_number_together,
            idempotency_keys_are_claimed_once_replayed_and_taken_over_when_dead,
            a_checkouts_receipt_is_written_with_the_order_and_only_with_it,
            a_saved_orders_receipt_is_written_with_it_and_only_with_it,
            a_receipt_is_stored_only_over_its_claim_in_flight,
            unpaid_order_caps_count_each_holder_and_refuse_the_order_past_them,
            a_cancelled_unpaid_orders_promotion_use_is_given_back_exactly_once,
            carts_idle_past_their_time_are_pruned_and_fresh_ones_stay,
            a_carts_pricing_records_are_read_together_and_per_tenant,
            the_relay_fans_each_event_out_once_to_the_endpoints_that_want_it,
            racing_relays_fan_each_event_out_once,
            claims_respect_the_per_endpoint_concurrency_bound,
            claims_are_fair_per_endpoint_whatever_another_endpoints_backlog,
            claims_find_the_endpoints_with_due_messages_and_only_those,
            a_shop_with_many_endpoints_never_holds_more_than_its_share_of_deliveries,
            concurrent_endpoint_creations_never_pass_the_shops_limit,
            an_open_circuit_claims_nothing_and_a_half_open_one_a_single_probe,
            an_attempt_claims_its_endpoints_next_message_in_the_same_transaction,
            finished_messages_past_retention_go_with_their_attempts_and_due_ones_stay,
            account_notices_reach_only_the_account_endpoint_and_lose_their_body_when_done,
            the_bus_relay_publishes_every_event_and_a_failed_publish_leaves_the_rest,
            a_bus_event_is_accepted_once_per_endpoint,
            relayed_events_and_processed_rows_past_retention_are_pruned_and_unrelayed_kept,
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
        .list(second.id, PageRequest::default(), None)
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
        .list(b.id, PageRequest::default(), None)
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
                None,
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
            .list(id, PageRequest::default(), None)
            .await
            .expect("events");
        assert_eq!(events.items.len(), 1, "each write committed with its event");
    }
}

// ---- identity: staff users, one-time tokens, sessions, signing keys ----

const HOUR: time::Duration = time::Duration::hours(1);

struct Owner {
    tenant: Tenant,
    user: StaffUser,
    setup: OneTimeToken,
}

async fn tenant_with_owner(stores: &Stores, slug: &str) -> Owner {
    let tenant = tenant(&unique_slug(slug));
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: tenant.id,
        email: Email::parse(&format!("owner@{}.test", tenant.slug)).expect("valid email"),
        role: Role::Owner,
        status: UserStatus::Invited,
        password_hash: None,
        created_at: tenant.created_at,
    };
    let setup = OneTimeToken {
        hash: Secret::generate("st").hash,
        tenant_id: tenant.id,
        owner: Account::Staff(user.id),
        purpose: TokenPurpose::Setup,
        expires_at: tenant.created_at + HOUR,
    };
    stores
        .staff
        .create_tenant_with_owner(&tenant, &user, &setup, &[created_event(&tenant)])
        .await
        .expect("create tenant with owner");
    Owner {
        tenant,
        user,
        setup,
    }
}

fn session_for(user: &StaffUser, now: time::OffsetDateTime) -> (Session, RefreshToken) {
    let session = Session {
        id: SessionId::new(),
        tenant_id: user.tenant_id,
        owner: Account::Staff(user.id),
        created_at: now,
        last_used_at: now,
        expires_at: now + HOUR,
        revoked_at: None,
    };
    let refresh = refresh_for(&session, now);
    (session, refresh)
}

fn refresh_for(session: &Session, now: time::OffsetDateTime) -> RefreshToken {
    RefreshToken {
        hash: Secret::generate("rt").hash,
        tenant_id: session.tenant_id,
        session_id: session.id,
        issued_at: now,
        expires_at: now + HOUR,
        used_at: None,
    }
}

fn a_hash() -> StoredHash {
    StoredHash::from_stored("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY".into())
        .expect("a PHC string")
}

pub async fn tenant_with_owner_is_created_atomically(stores: &Stores) {
    let o = tenant_with_owner(stores, "owned").await;
    assert_eq!(
        stores
            .staff
            .get_user(o.tenant.id, o.user.id)
            .await
            .expect("owner"),
        o.user
    );
    assert_eq!(
        stores
            .staff
            .find_user_by_email(o.tenant.id, &o.user.email)
            .await
            .expect("by email")
            .id,
        o.user.id
    );
    assert_eq!(
        stores.tenants.get(o.tenant.id).await.expect("tenant"),
        o.tenant
    );
    // Same slug again: nothing of the second attempt is written.
    let mut again = tenant(o.tenant.slug.as_str());
    again.id = TenantId::new();
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: again.id,
        ..o.user.clone()
    };
    let setup = OneTimeToken {
        hash: Secret::generate("st").hash,
        tenant_id: again.id,
        owner: Account::Staff(user.id),
        ..o.setup.clone()
    };
    let err = stores
        .staff
        .create_tenant_with_owner(&again, &user, &setup, &[])
        .await
        .expect_err("slug taken");
    assert!(err.is_conflict_on(TENANT_SLUG_CONSTRAINT), "{err:?}");
    assert!(matches!(
        stores.staff.get_user(again.id, user.id).await,
        Err(StoreError::NotFound)
    ));
    let now = SystemClock.now();
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&setup.hash, TokenPurpose::Setup, now)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn setup_token_is_found_only_while_unused_and_unexpired(stores: &Stores) {
    let o = tenant_with_owner(stores, "tok").await;
    let before = o.setup.expires_at - time::Duration::microseconds(1);
    assert_eq!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, before)
            .await
            .expect("valid"),
        o.setup
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, o.setup.expires_at)
            .await,
        Err(StoreError::NotFound)
    ));
    let unknown = Secret::generate("st").hash;
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&unknown, TokenPurpose::Setup, before)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn activation_consumes_the_token_exactly_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "act").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let user = stores
        .staff
        .get_user(o.tenant.id, o.user.id)
        .await
        .expect("user");
    assert_eq!(user.status, UserStatus::Active);
    assert_eq!(user.password_hash, Some(a_hash()));
    assert_eq!(
        stores
            .sessions
            .get_session(o.tenant.id, session.id)
            .await
            .expect("session"),
        session
    );
    assert_eq!(
        stores
            .sessions
            .find_refresh_token(&refresh.hash)
            .await
            .expect("refresh"),
        refresh
    );
    let (s2, r2) = session_for(&o.user, now);
    let err = stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &s2, &r2, &[])
        .await
        .expect_err("second use");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    assert!(
        matches!(
            stores.sessions.get_session(o.tenant.id, s2.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing of the refused use is written"
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, now)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn refresh_rotation_spends_the_old_token_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "rot").await;
    let now = SystemClock.now();
    let (session, first) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&session, &first, &[])
        .await
        .expect("start");
    let later = now + time::Duration::minutes(5);
    let second = refresh_for(&session, later);
    stores
        .sessions
        .rotate_refresh_token(o.tenant.id, &first.hash, &second)
        .await
        .expect("rotate");
    let spent = stores
        .sessions
        .find_refresh_token(&first.hash)
        .await
        .expect("old still known");
    assert_eq!(spent.used_at, Some(later));
    let third = refresh_for(&session, later);
    let err = stores
        .sessions
        .rotate_refresh_token(o.tenant.id, &first.hash, &third)
        .await
        .expect_err("spent");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    assert!(matches!(
        stores.sessions.find_refresh_token(&third.hash).await,
        Err(StoreError::NotFound)
    ));
    let moved = stores
        .sessions
        .get_session(o.tenant.id, session.id)
        .await
        .expect("session");
    assert_eq!(
        (moved.last_used_at, moved.expires_at),
        (later, second.expires_at)
    );
}

pub async fn concurrent_rotations_of_one_refresh_token_let_exactly_one_win(stores: &Stores) {
    let o = tenant_with_owner(stores, "race").await;
    let now = SystemClock.now();
    let (session, first) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&session, &first, &[])
        .await
        .expect("start");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let sessions = stores.sessions.clone();
        let next = refresh_for(&session, now);
        let old = first.hash;
        let tenant = o.tenant.id;
        tasks.spawn(async move { sessions.rotate_refresh_token(tenant, &old, &next).await });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) => won += 1,
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => lost += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, lost), (1, 9));
}

pub async fn revoked_and_expired_sessions_are_not_active(stores: &Stores) {
    let o = tenant_with_owner(stores, "rev").await;
    let now = SystemClock.now();
    let (a, ra) = session_for(&o.user, now);
    let (b, rb) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&a, &ra, &[])
        .await
        .expect("a");
    stores
        .sessions
        .start_session(&b, &rb, &[])
        .await
        .expect("b");
    let listed: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![b.id, a.id], "newest first");
    let at = now + time::Duration::seconds(1);
    stores
        .sessions
        .revoke_session(o.tenant.id, a.id, at, &[])
        .await
        .expect("revoke");
    stores
        .sessions
        .revoke_session(o.tenant.id, a.id, at + HOUR, &[])
        .await
        .expect("idempotent");
    assert_eq!(
        stores
            .sessions
            .get_session(o.tenant.id, a.id)
            .await
            .expect("a")
            .revoked_at,
        Some(at),
        "first revocation time kept"
    );
    let listed: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![b.id]);
    assert!(
        stores
            .sessions
            .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), b.expires_at)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn tenant_b_cannot_read_tenant_a_users_or_sessions(stores: &Stores) {
    let a = tenant_with_owner(stores, "iso-a").await;
    let b = tenant_with_owner(stores, "iso-b").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&a.user, now);
    stores
        .sessions
        .start_session(&session, &refresh, &[])
        .await
        .expect("start");
    assert!(matches!(
        stores.staff.get_user(b.tenant.id, a.user.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores
            .staff
            .find_user_by_email(b.tenant.id, &a.user.email)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores.sessions.get_session(b.tenant.id, session.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores
            .sessions
            .revoke_session(b.tenant.id, session.id, now, &[])
            .await,
        Err(StoreError::NotFound)
    ));
    let next = refresh_for(&session, now);
    assert!(
        stores
            .sessions
            .rotate_refresh_token(b.tenant.id, &refresh.hash, &next)
            .await
            .is_err()
    );
    assert!(
        stores
            .sessions
            .list_active_sessions(b.tenant.id, Account::Staff(a.user.id), now)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        stores
            .sessions
            .get_session(a.tenant.id, session.id)
            .await
            .expect("a's own")
            .is_active(now)
    );
}

pub async fn signing_key_rotation_retires_the_previous_key(stores: &Stores) {
    let t1 = time::macros::datetime!(2026-11-21 10:00 UTC);
    let t2 = t1 + HOUR;
    let k1 = StoredSigningKey {
        kid: "k_one".into(),
        sealed_seed: vec![1, 2, 3],
        created_at: t1,
        retired_at: None,
    };
    let k2 = StoredSigningKey {
        kid: "k_two".into(),
        sealed_seed: vec![4, 5, 6],
        created_at: t2,
        retired_at: None,
    };
    stores
        .keys
        .rotate_signing_key(&k1)
        .await
        .expect("first key");
    stores
        .keys
        .rotate_signing_key(&k2)
        .await
        .expect("second key");
    let keys = stores.keys.list_signing_keys().await.expect("list");
    assert_eq!(
        keys,
        vec![
            k2.clone(),
            StoredSigningKey {
                retired_at: Some(t2),
                ..k1
            }
        ]
    );
}

pub async fn appended_events_are_listed_for_their_tenant_only(stores: &Stores) {
    let (a, created) = create(stores, &unique_slug("append-a")).await;
    let (b, _) = create(stores, &unique_slug("append-b")).await;
    let failed = NewEvent::new(
        a.id,
        "security.login_failed",
        &serde_json::json!({"n": 1}),
        SystemClock.now(),
    )
    .expect("payload");
    stores
        .events
        .append(std::slice::from_ref(&failed))
        .await
        .expect("append");
    let a_log: Vec<EventId> = stores
        .events
        .list(a.id, PageRequest::default(), None)
        .await
        .expect("a")
        .items
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(a_log, vec![created.id, failed.id]);
    assert!(matches!(
        stores.events.get(b.id, failed.id).await,
        Err(StoreError::NotFound)
    ));
    let filtered = |prefix: &'static str| {
        let events = stores.events.clone();
        async move {
            events
                .list(a.id, PageRequest::default(), Some(prefix))
                .await
                .expect("filtered")
                .items
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(filtered("security.").await, vec![failed.id]);
    assert!(filtered("security.login_failedx").await.is_empty());
    assert!(filtered("%").await.is_empty(), "no wildcard matching");
}

// ---- login throttling ----

const WINDOW: time::Duration = time::Duration::seconds(900);

fn limit_of(key: ThrottleKey, max: u32) -> ThrottleLimit {
    ThrottleLimit {
        key,
        max,
        window: WINDOW,
    }
}

fn reserved(a: &Attempt) -> bool {
    matches!(a, Attempt::Reserved { .. })
}

pub async fn login_reservations_stop_at_the_limit_and_reopen_as_the_window_slides(stores: &Stores) {
    let t0 = time::macros::datetime!(2026-11-21 10:00 UTC);
    let key = ThrottleKey::account(&unique_slug("slide"), "a@b.test");
    let limits = [limit_of(key, 3)];
    for i in 0..3 {
        let a = stores
            .throttle
            .reserve(&limits, t0 + time::Duration::seconds(i))
            .await
            .expect("reserve");
        assert!(reserved(&a), "attempt {i}");
    }
    let t3 = t0 + time::Duration::seconds(3);
    assert_eq!(
        stores.throttle.reserve(&limits, t3).await.expect("reserve"),
        Attempt::Locked { until: t0 + WINDOW }
    );
    // Refused attempts record nothing, so the lock does not grow.
    let just_before = t0 + WINDOW - time::Duration::microseconds(1);
    assert_eq!(
        stores
            .throttle
            .reserve(&limits, just_before)
            .await
            .expect("reserve"),
        Attempt::Locked { until: t0 + WINDOW }
    );
    assert!(
        reserved(
            &stores
                .throttle
                .reserve(&limits, t0 + WINDOW)
                .await
                .expect("reserve")
        ),
        "t0 left the window"
    );
    assert_eq!(
        stores
            .throttle
            .prune(t0 + WINDOW + WINDOW)
            .await
            .expect("prune"),
        4
    );
}

pub async fn a_successful_login_clears_the_account_but_not_the_address(stores: &Stores) {
    let now = time::macros::datetime!(2026-11-21 10:00 UTC);
    let account = ThrottleKey::account(&unique_slug("clear"), "a@b.test");
    let ip = ThrottleKey::address("login", std::net::IpAddr::from([192, 0, 2, 1]));
    let limits = [limit_of(account, 3), limit_of(ip, 5)];
    for _ in 0..2 {
        assert!(reserved(
            &stores
                .throttle
                .reserve(&limits, now)
                .await
                .expect("failure")
        ));
    }
    let Attempt::Reserved { id: ok, remaining } = stores
        .throttle
        .reserve(&limits, now)
        .await
        .expect("reserve")
    else {
        panic!("third attempt is within the limit")
    };
    assert_eq!(remaining, 0, "the third of three attempts leaves none");
    stores
        .throttle
        .succeed(ok, &account)
        .await
        .expect("succeed");
    // The account starts afresh; the address keeps its two failures (2 + 3 = 5 = its limit).
    for _ in 0..3 {
        assert!(reserved(
            &stores
                .throttle
                .reserve(&limits, now)
                .await
                .expect("reserve")
        ));
    }
    let locked = stores
        .throttle
        .reserve(&limits, now)
        .await
        .expect("reserve");
    assert!(matches!(locked, Attempt::Locked { .. }), "{locked:?}");
    let other_account = [
        limit_of(ThrottleKey::account("other", "c@d.test"), 3),
        limit_of(ip, 5),
    ];
    assert!(
        matches!(
            stores
                .throttle
                .reserve(&other_account, now)
                .await
                .expect("reserve"),
            Attempt::Locked { .. }
        ),
        "the address limit binds every account"
    );
}

pub async fn concurrent_login_reservations_never_exceed_the_limit(stores: &Stores) {
    let now = time::macros::datetime!(2026-11-21 10:00 UTC);
    let key = ThrottleKey::account(&unique_slug("race"), "a@b.test");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let throttle = stores.throttle.clone();
        tasks.spawn(async move { throttle.reserve(&[limit_of(key, 5)], now).await });
    }
    let mut granted = 0;
    while let Some(r) = tasks.join_next().await {
        if reserved(&r.expect("task").expect("reserve")) {
            granted += 1;
        }
    }
    assert_eq!(granted, 5);
}

// ---- staff administration ----

async fn invite(stores: &Stores, tenant: &Tenant, email: &str, role: Role) -> StaffUser {
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: tenant.id,
        email: Email::parse(email).expect("valid email"),
        role,
        status: UserStatus::Invited,
        password_hash: None,
        created_at: SystemClock.now(),
    };
    let token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: tenant.id,
        owner: Account::Staff(user.id),
        purpose: TokenPurpose::Invite,
        expires_at: user.created_at + HOUR,
    };
    stores
        .staff
        .invite_user(&user, &token, &[], None)
        .await
        .expect("invite");
    assert_eq!(
        stores
            .staff
            .find_one_time_token(&token.hash, TokenPurpose::Invite, user.created_at)
            .await
            .expect("invite token"),
        token
    );
    user
}

pub async fn invited_users_are_listed_and_emails_are_unique_per_tenant(stores: &Stores) {
    let o = tenant_with_owner(stores, "inv").await;
    let a = invite(stores, &o.tenant, "a@shop.test", Role::Admin).await;
    let b = invite(stores, &o.tenant, "b@shop.test", Role::Viewer).await;
    let first = stores
        .staff
        .list_users(o.tenant.id, PageRequest::first(limit(2)))
        .await
        .expect("page");
    assert_eq!(
        first.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![o.user.id, a.id]
    );
    let rest = stores
        .staff
        .list_users(
            o.tenant.id,
            PageRequest {
                limit: limit(2),
                after: first.next_cursor,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        rest.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert_eq!(rest.next_cursor, None);
    let dup = StaffUser {
        id: UserId::new(),
        ..a.clone()
    };
    let token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(dup.id),
        purpose: TokenPurpose::Invite,
        expires_at: dup.created_at + HOUR,
    };
    let err = stores
        .staff
        .invite_user(&dup, &token, &[], None)
        .await
        .expect_err("same email");
    assert!(err.is_conflict_on(STAFF_EMAIL_CONSTRAINT), "{err:?}");
    // The same email in another tenant is a different account.
    let other = tenant_with_owner(stores, "inv2").await;
    invite(stores, &other.tenant, "a@shop.test", Role::Staff).await;
    let b_list = stores
        .staff
        .list_users(other.tenant.id, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(b_list.items.len(), 2, "tenant lists do not mix");
}

pub async fn role_changes_follow_the_owner_rules_and_disabling_ends_sessions(stores: &Stores) {
    let o = tenant_with_owner(stores, "roles").await;
    let now = SystemClock.now();
    let admin = invite(stores, &o.tenant, "admin@shop.test", Role::Admin).await;
    let staff = invite(stores, &o.tenant, "staff@shop.test", Role::Staff).await;
    let changed = stores
        .staff
        .change_role(
            o.tenant.id,
            staff.id,
            Role::Admin,
            Some(Role::Viewer),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(changed.expect("admin may demote staff").role, Role::Viewer);
    let refused = stores
        .staff
        .change_role(
            o.tenant.id,
            o.user.id,
            Role::Admin,
            Some(Role::Staff),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(refused, Err(RoleChangeError::OwnerOnly));
    // The owner is still active (the owner was only invited; activate to count as an owner).
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let last = stores
        .staff
        .change_role(
            o.tenant.id,
            o.user.id,
            Role::Owner,
            Some(Role::Admin),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(last, Err(RoleChangeError::LastOwner));
    assert_eq!(
        stores
            .staff
            .get_user(o.tenant.id, o.user.id)
            .await
            .expect("owner")
            .role,
        Role::Owner,
        "nothing changed"
    );
    // Disabling the admin ends their sessions at once.
    let (s, r) = session_for(&admin, now);
    stores
        .sessions
        .start_session(&s, &r, &[])
        .await
        .expect("start");
    let disabled = stores
        .staff
        .change_role(o.tenant.id, admin.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect("allowed");
    assert_eq!(disabled.status, UserStatus::Disabled);
    assert!(
        !stores
            .sessions
            .get_session(o.tenant.id, s.id)
            .await
            .expect("session")
            .is_active(now)
    );
    let other = tenant_with_owner(stores, "roles2").await;
    assert!(
        matches!(
            stores
                .staff
                .change_role(
                    other.tenant.id,
                    staff.id,
                    Role::Owner,
                    Some(Role::Admin),
                    now,
                    &[]
                )
                .await,
            Err(StoreError::NotFound)
        ),
        "another tenant's user is not found"
    );
}

pub async fn concurrent_demotions_cannot_remove_the_last_owner(stores: &Stores) {
    let o = tenant_with_owner(stores, "coup").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let second = invite(stores, &o.tenant, "second@shop.test", Role::Owner).await;
    let second_token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(second.id),
        purpose: TokenPurpose::Invite,
        expires_at: now + HOUR,
    };
    // Activate the second owner through a fresh invite token row.
    stores
        .staff
        .invite_user(
            &StaffUser {
                id: UserId::new(),
                email: Email::parse("spare@shop.test").expect("email"),
                ..second.clone()
            },
            &second_token,
            &[],
            None,
        )
        .await
        .expect("spare");
    let spare = stores
        .staff
        .find_one_time_token(&second_token.hash, TokenPurpose::Invite, now)
        .await
        .expect("token");
    let (s2, r2) = session_for(
        &StaffUser {
            id: spare.staff_user().expect("a staff token"),
            ..second.clone()
        },
        now,
    );
    stores
        .staff
        .activate_with_token(&spare, &a_hash(), &s2, &r2, &[])
        .await
        .expect("activate spare owner");
    let owners = [o.user.id, spare.staff_user().expect("a staff token")];
    let mut tasks = tokio::task::JoinSet::new();
    for target in owners {
        let staff = stores.staff.clone();
        let tenant = o.tenant.id;
        tasks.spawn(async move {
            staff
                .change_role(tenant, target, Role::Owner, Some(Role::Admin), now, &[])
                .await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.expect("task").expect("store"));
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Err(RoleChangeError::LastOwner))
            .count(),
        1
    );
    let remaining = stores
        .staff
        .list_users(o.tenant.id, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(
        remaining
            .items
            .iter()
            .filter(|u| u.role == Role::Owner && u.status == UserStatus::Active)
            .count(),
        1
    );
}

// ---- MFA ----

fn unconfirmed(secret: u8, at_time: time::OffsetDateTime) -> StoredMfa {
    StoredMfa {
        sealed_secret: vec![secret; 8],
        created_at: at_time,
        confirmed_at: None,
        last_used_step: None,
    }
}

pub async fn mfa_is_confirmed_once_and_each_step_is_used_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfa").await;
    let now = SystemClock.now();
    let (t, u) = (o.tenant.id, Account::Staff(o.user.id));
    assert_eq!(stores.mfa.get_mfa(t, u).await.expect("get"), None);
    stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(1, now))
        .await
        .expect("begin");
    stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(2, now))
        .await
        .expect("begin again replaces");
    assert_eq!(
        stores.mfa.get_mfa(t, u).await.expect("get"),
        Some(unconfirmed(2, now))
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 50).await.expect("use"),
        "unconfirmed enrolments accept no code"
    );
    stores
        .mfa
        .confirm_mfa(t, u, 100, &[[7; 32]], now, &[])
        .await
        .expect("confirm");
    let err = stores
        .mfa
        .confirm_mfa(t, u, 101, &[], now, &[])
        .await
        .expect_err("confirmed once");
    assert!(err.is_conflict_on(MFA_ALREADY_ENABLED), "{err:?}");
    let err = stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(3, now))
        .await
        .expect_err("enabled");
    assert!(err.is_conflict_on(MFA_ALREADY_ENABLED), "{err:?}");
    let enrolled = stores
        .mfa
        .get_mfa(t, u)
        .await
        .expect("get")
        .expect("enrolled");
    assert_eq!(
        (
            enrolled.confirmed_at,
            enrolled.last_used_step,
            enrolled.sealed_secret
        ),
        (Some(now), Some(100), vec![2; 8])
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 100).await.expect("use"),
        "the confirming step is spent"
    );
    assert!(stores.mfa.use_totp_step(t, u, 101).await.expect("use"));
    assert!(
        !stores.mfa.use_totp_step(t, u, 101).await.expect("use"),
        "replay"
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 99).await.expect("use"),
        "older step"
    );
    stores.mfa.disable_mfa(t, u, &[]).await.expect("disable");
    assert_eq!(stores.mfa.get_mfa(t, u).await.expect("get"), None);
    assert!(
        !stores
            .mfa
            .use_backup_code(t, u, &[7; 32], now)
            .await
            .expect("use"),
        "codes go with it"
    );
}

pub async fn backup_codes_are_single_use_and_tenant_scoped(stores: &Stores) {
    let a = tenant_with_owner(stores, "bk-a").await;
    let b = tenant_with_owner(stores, "bk-b").await;
    let now = SystemClock.now();
    stores
        .mfa
        .begin_mfa(a.tenant.id, Account::Staff(a.user.id), &unconfirmed(1, now))
        .await
        .expect("begin");
    let codes: Vec<[u8; 32]> = (1..=10).map(|i| [i; 32]).collect();
    stores
        .mfa
        .confirm_mfa(a.tenant.id, Account::Staff(a.user.id), 1, &codes, now, &[])
        .await
        .expect("confirm");
    assert!(
        !stores
            .mfa
            .use_backup_code(b.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use"),
        "other tenant"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use")
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use"),
        "single use"
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &[99; 32], now)
            .await
            .expect("use"),
        "unknown"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[9], now)
            .await
            .expect("use")
    );
    let fresh = [[42u8; 32]];
    stores
        .mfa
        .replace_backup_codes(a.tenant.id, Account::Staff(a.user.id), &fresh, &[])
        .await
        .expect("replace");
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[5], now)
            .await
            .expect("use"),
        "old codes are gone"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &fresh[0], now)
            .await
            .expect("use")
    );
    assert!(
        matches!(
            stores
                .mfa
                .replace_backup_codes(b.tenant.id, Account::Staff(b.user.id), &fresh, &[])
                .await,
            Err(StoreError::NotFound)
        ),
        "no enrolment"
    );
}

pub async fn an_mfa_token_dies_at_its_failure_limit_and_completes_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfatok").await;
    let now = SystemClock.now();
    let token = |purpose| OneTimeToken {
        hash: Secret::generate("mt").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(o.user.id),
        purpose,
        expires_at: now + HOUR,
    };
    let doomed = token(TokenPurpose::Mfa);
    stores.mfa.create_mfa_token(&doomed).await.expect("create");
    for i in 1..=4 {
        assert_eq!(
            stores
                .mfa
                .fail_mfa_token(&doomed.hash, 5, now)
                .await
                .expect("fail"),
            i
        );
    }
    let alive = stores
        .staff
        .find_one_time_token(&doomed.hash, TokenPurpose::Mfa, now)
        .await;
    assert!(alive.is_ok(), "alive after 4: {alive:?}");
    assert_eq!(
        stores
            .mfa
            .fail_mfa_token(&doomed.hash, 5, now)
            .await
            .expect("fail"),
        5
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&doomed.hash, TokenPurpose::Mfa, now)
            .await,
        Err(StoreError::NotFound)
    ));
    let (s, r) = session_for(&o.user, now);
    let err = stores
        .mfa
        .complete_mfa_login(&doomed, &s, &r, &[])
        .await
        .expect_err("dead token");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    let good = token(TokenPurpose::Mfa);
    stores.mfa.create_mfa_token(&good).await.expect("create");
    stores
        .mfa
        .complete_mfa_login(&good, &s, &r, &[])
        .await
        .expect("complete");
    assert!(
        stores
            .sessions
            .get_session(o.tenant.id, s.id)
            .await
            .expect("session")
            .is_active(now)
    );
    let (s2, r2) = session_for(&o.user, now);
    let err = stores
        .mfa
        .complete_mfa_login(&good, &s2, &r2, &[])
        .await
        .expect_err("spent");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
}

// ---- API keys ----

fn api_key(
    tenant: TenantId,
    name: &str,
    expires_at: Option<time::OffsetDateTime>,
) -> keel_identity::apikey::ApiKey {
    let material = keel_identity::apikey::generate(keel_identity::apikey::KeyKind::Secret);
    keel_identity::apikey::ApiKey {
        id: keel_identity::apikey::ApiKeyId::new(),
        tenant_id: tenant,
        kind: keel_identity::apikey::KeyKind::Secret,
        name: name.into(),
        lookup: material.lookup,
        secret_hash: material.hash,
        scopes: vec![
            keel_identity::access::Permission::OrdersRead,
            keel_identity::access::Permission::AuditRead,
        ],
        created_at: time::macros::datetime!(2026-11-21 10:00 UTC),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    }
}

pub async fn api_keys_are_found_by_lookup_and_listed_per_tenant(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("keys-a")).await;
    let (b, _) = create(stores, &unique_slug("keys-b")).await;
    let k1 = api_key(a.id, "one", None);
    let k2 = api_key(
        a.id,
        "two",
        Some(time::macros::datetime!(2027-01-01 0:00 UTC)),
    );
    stores
        .api_keys
        .create_api_key(&k1, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&k2, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&api_key(b.id, "theirs", None), &[])
        .await
        .expect("create");
    assert_eq!(
        stores
            .api_keys
            .find_api_key(&k2.lookup)
            .await
            .expect("by lookup"),
        k2
    );
    assert_eq!(
        stores.api_keys.get_api_key(a.id, k1.id).await.expect("get"),
        k1
    );
    assert!(matches!(
        stores.api_keys.get_api_key(b.id, k1.id).await,
        Err(StoreError::NotFound)
    ));
    let listed: Vec<_> = stores
        .api_keys
        .list_api_keys(a.id, PageRequest::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![k1.id, k2.id]);
    let t = time::macros::datetime!(2026-11-22 0:00 UTC);
    stores
        .api_keys
        .touch_api_key(a.id, k1.id, t)
        .await
        .expect("touch");
    stores
        .api_keys
        .revoke_api_key(a.id, k1.id, t, &[])
        .await
        .expect("revoke");
    stores
        .api_keys
        .revoke_api_key(a.id, k1.id, t + HOUR, &[])
        .await
        .expect("idempotent");
    let k1_now = stores.api_keys.get_api_key(a.id, k1.id).await.expect("get");
    assert_eq!((k1_now.last_used_at, k1_now.revoked_at), (Some(t), Some(t)));
    assert!(matches!(
        stores.api_keys.revoke_api_key(b.id, k2.id, t, &[]).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        stores
            .api_keys
            .get_api_key(a.id, k2.id)
            .await
            .expect("get")
            .revoked_at
            .is_none(),
        "other tenant could not revoke"
    );
}

pub async fn api_key_rotation_caps_the_old_expiry_atomically(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("rotkey")).await;
    let cap = time::macros::datetime!(2026-11-22 10:00 UTC);
    let open_ended = api_key(a.id, "open", None);
    let early = api_key(a.id, "early", Some(cap - HOUR));
    stores
        .api_keys
        .create_api_key(&open_ended, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&early, &[])
        .await
        .expect("create");
    let n1 = api_key(a.id, "open", None);
    stores
        .api_keys
        .rotate_api_key(a.id, open_ended.id, cap, &n1, &[])
        .await
        .expect("rotate");
    assert_eq!(
        stores
            .api_keys
            .get_api_key(a.id, open_ended.id)
            .await
            .expect("old")
            .expires_at,
        Some(cap)
    );
    assert_eq!(
        stores.api_keys.get_api_key(a.id, n1.id).await.expect("new"),
        n1
    );
    let n2 = api_key(a.id, "early", None);
    stores
        .api_keys
        .rotate_api_key(a.id, early.id, cap, &n2, &[])
        .await
        .expect("rotate");
    assert_eq!(
        stores
            .api_keys
            .get_api_key(a.id, early.id)
            .await
            .expect("old")
            .expires_at,
        Some(cap - HOUR),
        "never extended"
    );
    stores
        .api_keys
        .revoke_api_key(a.id, n1.id, cap, &[])
        .await
        .expect("revoke");
    let n3 = api_key(a.id, "again", None);
    assert!(matches!(
        stores
            .api_keys
            .rotate_api_key(a.id, n1.id, cap, &n3, &[])
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        matches!(
            stores.api_keys.get_api_key(a.id, n3.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing written"
    );
}

// ---- customers ----

fn customer(tenant: TenantId, email: &str) -> keel_identity::customer::Customer {
    keel_identity::customer::Customer {
        id: keel_identity::customer::CustomerId::new(),
        tenant_id: tenant,
        email: Email::parse(email).expect("valid email"),
        password_hash: a_hash(),
        created_at: time::macros::datetime!(2026-11-21 10:00 UTC),
    }
}

fn customer_session(
    c: &keel_identity::customer::Customer,
    now: time::OffsetDateTime,
) -> (Session, RefreshToken) {
    let session = Session {
        id: SessionId::new(),
        tenant_id: c.tenant_id,
        owner: Account::Customer(c.id),
        created_at: now,
        last_used_at: now,
        expires_at: now + HOUR,
        revoked_at: None,
    };
    let refresh = refresh_for(&session, now);
    (session, refresh)
}

pub async fn customers_sign_up_with_a_session_and_emails_are_unique_per_tenant(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("shop-a")).await;
    let (b, _) = create(stores, &unique_slug("shop-b")).await;
    let now = SystemClock.now();
    let ann = customer(a.id, "ann@example.test");
    let (s, r) = customer_session(&ann, now);
    stores
        .customers
        .sign_up_customer(&ann, &s, &r, &[])
        .await
        .expect("sign up");
    assert_eq!(
        stores
            .customers
            .get_customer(a.id, ann.id)
            .await
            .expect("get"),
        ann
    );
    assert_eq!(
        stores
            .customers
            .find_customer_by_email(a.id, &ann.email)
            .await
            .expect("by email"),
        ann
    );
    assert_eq!(
        stores
            .sessions
            .get_session(a.id, s.id)
            .await
            .expect("session")
            .owner,
        Account::Customer(ann.id)
    );
    let again = customer(a.id, "ANN@example.test");
    let (s2, r2) = customer_session(&again, now);
    let err = stores
        .customers
        .sign_up_customer(&again, &s2, &r2, &[])
        .await
        .expect_err("taken");
    assert!(err.is_conflict_on(CUSTOMER_EMAIL_CONSTRAINT), "{err:?}");
    assert!(
        matches!(
            stores.sessions.get_session(a.id, s2.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing of the refused sign-up"
    );
    let elsewhere = customer(b.id, "ann@example.test");
    let (s3, r3) = customer_session(&elsewhere, now);
    stores
        .customers
        .sign_up_customer(&elsewhere, &s3, &r3, &[])
        .await
        .expect("another shop's customer");
    assert!(matches!(
        stores.customers.get_customer(b.id, ann.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn staff_and_customer_sessions_never_mix(stores: &Stores) {
    let o = tenant_with_owner(stores, "mix").await;
    let now = SystemClock.now();
    let (staff_session, staff_refresh) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&staff_session, &staff_refresh, &[])
        .await
        .expect("staff session");
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@example.test");
    twin.id = keel_identity::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (cs, cr) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &cs, &cr, &[])
        .await
        .expect("customer");
    let staff_list: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(staff_list, vec![staff_session.id]);
    let customer_list: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Customer(twin.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(customer_list, vec![cs.id]);
    // Ending a staff user's sessions (disable, password change) leaves customer sessions alone.
    stores
        .staff
        .change_role(o.tenant.id, o.user.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect_err("last owner stays");
    let admin = invite(stores, &o.tenant, "admin@mix.test", Role::Admin).await;
    let mut admin_twin = customer(o.tenant.id, "admin-twin@example.test");
    admin_twin.id = keel_identity::customer::CustomerId::from_uuid(admin.id.as_uuid());
    let (ats, atr) = customer_session(&admin_twin, now);
    stores
        .customers
        .sign_up_customer(&admin_twin, &ats, &atr, &[])
        .await
        .expect("customer");
    stores
        .staff
        .change_role(o.tenant.id, admin.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect("disable admin");
    assert!(
        stores
            .sessions
            .get_session(o.tenant.id, ats.id)
            .await
            .expect("session")
            .is_active(now),
        "the customer's session survives"
    );
}

pub async fn staff_and_customer_mfa_never_mix(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfamix").await;
    let now = SystemClock.now();
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@mfamix.test");
    twin.id = keel_identity::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (cs, cr) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &cs, &cr, &[])
        .await
        .expect("customer");
    let (t, staff, shopper) = (
        o.tenant.id,
        Account::Staff(o.user.id),
        Account::Customer(twin.id),
    );
    stores
        .mfa
        .begin_mfa(t, staff, &unconfirmed(1, now))
        .await
        .expect("staff begins");
    stores
        .mfa
        .confirm_mfa(t, staff, 10, &[[1; 32]], now, &[])
        .await
        .expect("staff confirms");
    assert_eq!(
        stores.mfa.get_mfa(t, shopper).await.expect("get"),
        None,
        "the staff enrolment is not the customer's"
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(t, shopper, &[1; 32], now)
            .await
            .expect("use"),
        "nor are its backup codes"
    );
    stores
        .mfa
        .begin_mfa(t, shopper, &unconfirmed(2, now))
        .await
        .expect("the customer begins alongside");
    stores
        .mfa
        .confirm_mfa(t, shopper, 20, &[[2; 32]], now, &[])
        .await
        .expect("the customer confirms");
    assert!(stores.mfa.use_totp_step(t, shopper, 21).await.expect("use"));
    assert!(
        stores.mfa.use_totp_step(t, staff, 11).await.expect("use"),
        "steps are spent per account"
    );
    assert!(
        stores
            .mfa
            .staff_mfa_status(t, o.user.id)
            .await
            .expect("status")
            .enrolled,
        "staff status reads the staff enrolment"
    );
    stores
        .mfa
        .disable_mfa(t, shopper, &[])
        .await
        .expect("customer disables");
    assert_eq!(stores.mfa.get_mfa(t, shopper).await.expect("get"), None);
    let kept = stores.mfa.get_mfa(t, staff).await.expect("get");
    assert!(
        kept.is_some_and(|m| m.confirmed_at.is_some()),
        "the staff enrolment survives the customer's disable"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(t, staff, &[1; 32], now)
            .await
            .expect("use"),
        "and so do its backup codes"
    );
}

pub async fn a_customer_mfa_token_keeps_its_owner_and_starts_a_customer_session(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfacus").await;
    let now = SystemClock.now();
    let shopper_row = customer(o.tenant.id, "shopper@mfacus.test");
    let (cs, cr) = customer_session(&shopper_row, now);
    stores
        .customers
        .sign_up_customer(&shopper_row, &cs, &cr, &[])
        .await
        .expect("customer");
    let (t, shopper) = (o.tenant.id, Account::Customer(shopper_row.id));
    let token = OneTimeToken {
        hash: Secret::generate("mt").hash,
        tenant_id: t,
        owner: shopper,
        purpose: TokenPurpose::Mfa,
        expires_at: now + HOUR,
    };
    stores.mfa.create_mfa_token(&token).await.expect("create");
    let found = stores
        .staff
        .find_one_time_token(&token.hash, TokenPurpose::Mfa, now)
        .await
        .expect("find");
    assert_eq!(found.owner, shopper);
    let (s, r) = customer_session(&shopper_row, now);
    stores
        .mfa
        .complete_mfa_login(&found, &s, &r, &[])
        .await
        .expect("complete");
    assert_eq!(
        stores
            .sessions
            .get_session(t, s.id)
            .await
            .expect("session")
            .owner,
        shopper
    );
}

pub async fn a_customer_password_change_ends_only_that_customers_other_sessions(stores: &Stores) {
    let o = tenant_with_owner(stores, "cuspw").await;
    let now = SystemClock.now();
    let (staff_session, staff_refresh) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&staff_session, &staff_refresh, &[])
        .await
        .expect("staff session");
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@cuspw.test");
    twin.id = keel_identity::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (keep, keep_refresh) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &keep, &keep_refresh, &[])
        .await
        .expect("customer");
    let (other, other_refresh) = customer_session(&twin, now);
    stores
        .sessions
        .start_session(&other, &other_refresh, &[])
        .await
        .expect("second customer session");
    let new_hash = StoredHash::from_stored(
        "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdG5ld3NhbHQ$bmV3aGFzaG5ld2hhc2huZXdoYXNobmV3aGFzaDEy"
            .into(),
    )
    .expect("a PHC string");
    stores
        .staff
        .set_password(
            o.tenant.id,
            Account::Customer(twin.id),
            &new_hash,
            Some(keep.id),
            now,
            &[],
        )
        .await
        .expect("set");
    let changed = stores
        .customers
        .get_customer(o.tenant.id, twin.id)
        .await
        .expect("customer");
    assert_eq!(changed.password_hash, new_hash);
    let staff = stores
        .staff
        .get_user(o.tenant.id, o.user.id)
        .await
        .expect("staff");
    assert_ne!(
        staff.password_hash,
        Some(new_hash),
        "the staff twin keeps its password"
    );
    let active = |id| {
        let sessions = stores.sessions.clone();
        async move {
            sessions
                .get_session(o.tenant.id, id)
                .await
                .expect("session")
                .is_active(now)
        }
    };
    assert!(active(keep.id).await, "the kept session stays");
    assert!(!active(other.id).await, "the customer's other session ends");
    assert!(
        active(staff_session.id).await,
        "the staff twin's session is untouched"
    );
    let missing = stores
        .staff
        .set_password(
            o.tenant.id,
            Account::Customer(keel_identity::customer::CustomerId::new()),
            &a_hash(),
            None,
            now,
            &[],
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}
