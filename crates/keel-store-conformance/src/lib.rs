//! One behaviour suite for every storage port, run against every adapter.
//!
//! Each behaviour is a plain `async fn` taking a [`Stores`] (fresh, migrated, empty). The
//! [`conformance_tests!`] macro expands the whole list into named `#[tokio::test]`s inside an
//! adapter crate, so `cargo nextest` shows `tenant_b_cannot_read_tenant_a_events` once per
//! backend and the list of behaviours lives in exactly one place (this file).
#![forbid(unsafe_code)]

mod catalog;
mod identity;
mod keys_and_customers;
mod leases;
mod orders;
mod payments;
mod staff;
mod webhooks;

pub use catalog::*;
pub use identity::*;
pub use keys_and_customers::*;
pub use leases::*;
pub use orders::*;
pub use payments::*;
pub use staff::*;
pub use webhooks::*;

use std::sync::Arc;

use keel_identity::{
    Tenant, TenantName, TenantSlug, TenantStore,
    domain::access::{Role, RoleChangeError},
    domain::password::StoredHash,
    domain::secret::Secret,
    domain::staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser, StoredMfa,
        StoredSigningKey, TokenPurpose, UserId, UserStatus,
    },
    domain::throttle::{Limit as ThrottleLimit, ThrottleKey},
    ports::{
        ApiKeyStore, Attempt, CUSTOMER_EMAIL_CONSTRAINT, CustomerStore, LoginThrottle,
        MFA_ALREADY_ENABLED, MfaStore, STAFF_EMAIL_CONSTRAINT, SessionStore, SigningKeyStore,
        StaffStore, TENANT_SLUG_CONSTRAINT, TOKEN_ALREADY_USED,
    },
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
    pub payments: Arc<dyn keel_payments::ports::PaymentStore>,
    pub leases: Arc<dyn keel_kernel::lease::LeaseStore>,
}

impl Stores {
    /// Wraps one adapter value that implements every port.
    pub fn from_backend<S: keel_store_common::Backend + 'static>(store: S) -> Self {
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
            consumers: store.clone(),
            payments: store.clone(),
            leases: store,
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
            a_checkout_out_of_stock_lock_order_is_refused_and_writes_nothing,
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
            shops_with_and_without_endpoints_relay_every_event_once,
            a_resume_follows_the_relay_order_not_the_creation_order,
            the_bus_relay_publishes_in_number_order_and_a_resume_follows_it,
            racing_relays_number_each_event_once,
            events_numbered_for_a_bus_that_never_got_them_are_relayed_without_it,
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
            payment_provider_settings_are_versioned_and_per_shop,
            payment_sessions_are_found_by_ref_by_order_and_when_due,
            a_provider_effect_is_written_once_and_whole_or_not_at_all,
            refund_tasks_move_by_id_and_are_due_only_while_pending,
            staff_access_reads_the_session_user_and_mfa_facts_at_once,
            a_lease_has_one_holder_until_it_lapses_and_then_passes_on,
            a_released_lease_passes_on_at_once_and_keeps_the_last_run,
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

pub(crate) fn tenant(slug: &str) -> Tenant {
    Tenant {
        id: TenantId::new(),
        slug: TenantSlug::parse(slug).expect("valid test slug"),
        name: TenantName::parse(&format!("Tenant {slug}")).expect("valid test name"),
        created_at: SystemClock.now(),
    }
}

pub(crate) fn created_event(t: &Tenant) -> NewEvent {
    NewEvent::new(
        t.id,
        "tenant.created",
        &serde_json::json!({"slug": t.slug.as_str()}),
        t.created_at,
    )
    .expect("serializable payload")
}

pub(crate) async fn create(stores: &Stores, slug: &str) -> (Tenant, NewEvent) {
    let t = tenant(slug);
    let e = created_event(&t);
    stores
        .tenants
        .create(&t, std::slice::from_ref(&e))
        .await
        .expect("create tenant");
    (t, e)
}

pub(crate) fn unique_slug(prefix: &str) -> String {
    // Slugs are global; the random tail of a fresh id keeps behaviours independent.
    let id = TenantId::new().to_string();
    format!("{prefix}-{}", &id[id.len() - 10..])
}

pub(crate) fn limit(n: u32) -> Limit {
    Limit::new(n).expect("valid test limit")
}

pub(crate) async fn all_tenant_pages(stores: &Stores, n: u32) -> Vec<Page<Tenant>> {
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
