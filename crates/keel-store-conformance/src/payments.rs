//! Payments: provider settings, payment sessions and the provider-event inbox.

use keel_kernel::{
    StoreError,
    clock::{Clock, SystemClock},
    money::Currency,
};
use keel_payments::{
    domain::{Amount, CaptureMode, ProviderKind, SessionStatus},
    ports::{PROVIDER_EXISTS, PROVIDER_VERSION_CONFLICT, PaymentSession, ProviderSettings},
};
use time::Duration;

use crate::{Stores, create, unique_slug};

fn settings(tenant: keel_kernel::TenantId) -> ProviderSettings {
    let now = SystemClock.now();
    ProviderSettings {
        tenant_id: tenant,
        provider: ProviderKind::Stripe,
        enabled: true,
        capture: CaptureMode::Automatic,
        sealed_secret_key: vec![1, 2, 3],
        sealed_webhook_secrets: vec![4, 5, 6],
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

fn session(
    tenant: keel_kernel::TenantId,
    order_id: uuid::Uuid,
    provider_ref: &str,
    created_at: time::OffsetDateTime,
) -> PaymentSession {
    PaymentSession {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        order_id,
        provider: ProviderKind::Stripe,
        provider_ref: provider_ref.into(),
        amount: Amount {
            minor: 1999,
            currency: Currency::parse("USD").expect("USD"),
        },
        status: SessionStatus::Open,
        created_at,
        updated_at: created_at,
    }
}

/// A shop's provider settings are stored whole (sealed secrets as bytes), once per provider,
/// changed only at their version (keeping their creation time), and no other shop reads them.
pub async fn payment_provider_settings_are_versioned_and_per_shop(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("pay-a")).await;
    let (b, _) = create(stores, &unique_slug("pay-b")).await;
    let s = settings(a.id);
    stores
        .payments
        .save_provider(&s, None, &[])
        .await
        .expect("saved");
    assert_eq!(
        stores
            .payments
            .get_provider(a.id, ProviderKind::Stripe)
            .await
            .expect("read"),
        s
    );
    let again = stores.payments.save_provider(&s, None, &[]).await;
    assert!(
        matches!(&again, Err(StoreError::Conflict { constraint }) if constraint == PROVIDER_EXISTS),
        "{again:?}"
    );
    let changed = ProviderSettings {
        enabled: false,
        version: 2,
        // A replacement cannot move the creation time.
        created_at: s.created_at + Duration::hours(1),
        ..s.clone()
    };
    stores
        .payments
        .save_provider(&changed, Some(1), &[])
        .await
        .expect("changed at version 1");
    let stale = stores.payments.save_provider(&changed, Some(1), &[]).await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict { constraint }) if constraint == PROVIDER_VERSION_CONFLICT),
        "{stale:?}"
    );
    assert_eq!(
        stores.payments.list_providers(a.id).await.expect("list"),
        vec![ProviderSettings {
            created_at: s.created_at,
            ..changed
        }]
    );
    assert!(matches!(
        stores
            .payments
            .get_provider(b.id, ProviderKind::Stripe)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        stores
            .payments
            .list_providers(b.id)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Sessions are found by the provider's id within their shop only, by order, and, without a
/// final answer and old enough, by reconciliation, oldest first and bounded.
pub async fn payment_sessions_are_found_by_ref_by_order_and_by_age(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("sess-a")).await;
    let (b, _) = create(stores, &unique_slug("sess-b")).await;
    let now = SystemClock.now();
    let order = uuid::Uuid::now_v7();
    let first = session(a.id, order, "pi_first", now - Duration::minutes(20));
    let second = session(a.id, order, "pi_second", now - Duration::minutes(15));
    let fresh = session(a.id, uuid::Uuid::now_v7(), "pi_fresh", now);
    let settled = PaymentSession {
        status: SessionStatus::Succeeded,
        ..session(
            a.id,
            uuid::Uuid::now_v7(),
            "pi_settled",
            now - Duration::minutes(30),
        )
    };
    for s in [&first, &second, &fresh, &settled] {
        stores
            .payments
            .create_session(s, &[])
            .await
            .expect("session");
    }
    assert_eq!(
        stores
            .payments
            .session_by_ref(a.id, ProviderKind::Stripe, "pi_second")
            .await
            .expect("by ref"),
        second
    );
    assert!(matches!(
        stores
            .payments
            .session_by_ref(b.id, ProviderKind::Stripe, "pi_second")
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        stores
            .payments
            .sessions_of_order(a.id, order)
            .await
            .expect("of order"),
        vec![first.clone(), second.clone()]
    );
    assert!(
        stores
            .payments
            .sessions_of_order(b.id, order)
            .await
            .expect("of order")
            .is_empty()
    );
    let cutoff = now - Duration::minutes(10);
    let unsettled: Vec<_> = stores
        .payments
        .unsettled_sessions(cutoff, 100)
        .await
        .expect("unsettled")
        .into_iter()
        .filter(|s| s.tenant_id == a.id)
        .collect();
    assert_eq!(
        unsettled,
        vec![first.clone(), second],
        "open, old enough, oldest first"
    );
    let one = stores
        .payments
        .unsettled_sessions(cutoff, 1)
        .await
        .expect("bounded");
    assert_eq!(one.len(), 1);
}

/// The inbox keeps each provider event once per shop: the repeat answers false.
pub async fn a_provider_event_is_recorded_once_per_shop(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("inbox-a")).await;
    let (b, _) = create(stores, &unique_slug("inbox-b")).await;
    let now = SystemClock.now();
    let record = |tenant| {
        stores.payments.record_provider_event(
            tenant,
            ProviderKind::Stripe,
            "evt_1",
            "payment_intent.succeeded",
            now,
        )
    };
    assert!(record(a.id).await.expect("first"));
    assert!(!record(a.id).await.expect("repeat"));
    assert!(record(b.id).await.expect("another shop's event of that id"));
}
