//! Payments: provider settings, payment sessions and the provider-event inbox.

use keel_kernel::{
    StoreError,
    clock::{Clock, SystemClock},
    money::Currency,
};
use keel_orders::{order::RefundId, ports::VERSION_CONFLICT};
use keel_payments::{
    domain::{Amount, CaptureMode, ProviderKind, SessionStatus},
    ports::{
        Applied, Effect, Inbox, OrderChange, PROVIDER_EXISTS, PROVIDER_VERSION_CONFLICT,
        PaymentSession, ProviderSettings, RefundTask, RefundTaskStatus, SessionChange,
    },
};
use time::Duration;

use crate::{
    Stores, create,
    orders::{placed_order, placed_orders},
    unique_slug,
};

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
        next_check_at: created_at + Duration::minutes(10),
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
/// final answer and due, by reconciliation, soonest first and bounded.
#[allow(
    clippy::too_many_lines,
    reason = "one behaviour, asserted read by read"
)]
pub async fn payment_sessions_are_found_by_ref_by_order_and_when_due(stores: &Stores) {
    let (a, orders) = placed_orders(stores, "sess-a", 3).await;
    let (b, _) = create(stores, &unique_slug("sess-b")).await;
    let now = SystemClock.now();
    let order = orders[0].id.as_uuid();
    let first = session(a, order, "pi_first", now - Duration::minutes(20));
    let second = session(
        a,
        orders[1].id.as_uuid(),
        "pi_second",
        now - Duration::minutes(15),
    );
    let fresh = session(a, orders[2].id.as_uuid(), "pi_fresh", now);
    let settled = PaymentSession {
        status: SessionStatus::Succeeded,
        ..session(a, order, "pi_settled", now - Duration::minutes(30))
    };
    for s in [&first, &second, &fresh, &settled] {
        stores
            .payments
            .create_session(s, &[])
            .await
            .expect("session");
    }
    // One session without a final answer per order and provider: a second one is refused.
    let twin = stores
        .payments
        .create_session(&session(a, order, "pi_twin", now), &[])
        .await;
    assert!(
        matches!(&twin, Err(StoreError::Conflict { constraint }) if constraint == keel_payments::ports::ONE_OPEN_SESSION),
        "{twin:?}"
    );
    assert_eq!(
        stores
            .payments
            .session_by_ref(a, ProviderKind::Stripe, "pi_second")
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
            .sessions_of_order(a, order)
            .await
            .expect("of order")
            .into_iter()
            .map(|s| s.provider_ref)
            .collect::<Vec<_>>(),
        ["pi_settled", "pi_first"]
    );
    assert!(
        stores
            .payments
            .sessions_of_order(b.id, order)
            .await
            .expect("of order")
            .is_empty()
    );
    // The order's one session without a final answer, and none in another shop.
    assert_eq!(
        stores
            .payments
            .open_session_of(a, order, ProviderKind::Stripe)
            .await
            .expect("open one"),
        Some(first.clone())
    );
    assert_eq!(
        stores
            .payments
            .open_session_of(b.id, order, ProviderKind::Stripe)
            .await
            .expect("open one"),
        None
    );
    let due = |limit| {
        let payments = stores.payments.clone();
        async move {
            payments
                .due_sessions(now, limit)
                .await
                .expect("due")
                .into_iter()
                .filter(|s| s.tenant_id == a)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        due(100).await,
        vec![first.clone(), second.clone()],
        "open, due, soonest first"
    );
    assert_eq!(
        stores
            .payments
            .due_sessions(now, 1)
            .await
            .expect("bounded")
            .len(),
        1
    );
    stores
        .payments
        .reschedule_session(a, first.id, now + Duration::minutes(5))
        .await
        .expect("rescheduled");
    assert_eq!(due(100).await, vec![second], "asked again only when due");
}

fn refund_task(t: keel_kernel::TenantId, order: &keel_orders::order::Order) -> RefundTask {
    let now = SystemClock.now();
    RefundTask {
        tenant_id: t,
        id: RefundId::new(),
        order_id: order.id,
        provider: ProviderKind::Stripe,
        payment_ref: "pi_paid".into(),
        amount: Amount {
            minor: 500,
            currency: Currency::parse("USD").expect("USD"),
        },
        status: RefundTaskStatus::Pending,
        provider_ref: None,
        failure: None,
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        updated_at: now,
    }
}

/// An effect is one transaction: the inbox row, the order over its version, the session, the
/// refund tasks and the events. A repeated provider event writes nothing; an effect over a
/// stale order version writes nothing, not even its inbox row, so the event applies later.
#[allow(clippy::too_many_lines, reason = "one effect, asserted step by step")]
pub async fn a_provider_effect_is_written_once_and_whole_or_not_at_all(stores: &Stores) {
    let (t, order) = placed_order(stores, "effect").await;
    let now = SystemClock.now();
    let s = session(t, order.id.as_uuid(), "pi_paid", now);
    stores
        .payments
        .create_session(&s, &[])
        .await
        .expect("session");
    let mut paid = order.clone();
    paid.pay("stripe", paid.totals.total, "pi_paid".into(), now)
        .expect("payable");
    let events = [keel_kernel::event::NewEvent::new(
        t,
        "order.paid",
        &serde_json::json!({"order_id": order.id}),
        now,
    )
    .expect("event")];
    let task = refund_task(t, &order);
    let effect = |version, event_id| Effect {
        tenant: t,
        inbox: Some(Inbox {
            provider: ProviderKind::Stripe,
            event_id,
            event_type: "payment_intent.succeeded",
            at: now,
        }),
        session: Some(SessionChange {
            id: s.id,
            status: SessionStatus::Succeeded,
            next_check_at: s.next_check_at,
            updated_at: now,
        }),
        order: Some(OrderChange {
            order: &paid,
            expected_version: version,
            stock: &[],
            give_back: false,
            receipt: None,
        }),
        refunds: std::slice::from_ref(&task),
        events: &events,
    };
    let stale = stores
        .payments
        .apply(&effect(order.version + 7, "evt_1"))
        .await;
    assert!(
        stale
            .as_ref()
            .is_err_and(|e| e.is_conflict_on(VERSION_CONFLICT)),
        "{stale:?}"
    );
    let unchanged = stores
        .payments
        .session_by_ref(t, ProviderKind::Stripe, "pi_paid")
        .await
        .expect("session");
    assert_eq!(unchanged.status, SessionStatus::Open);
    assert!(
        stores
            .payments
            .refunds_of_order(t, order.id)
            .await
            .expect("refunds")
            .is_empty()
    );
    assert_eq!(
        stores
            .orders
            .get_order(t, order.id)
            .await
            .expect("order")
            .version,
        order.version
    );

    assert_eq!(
        stores
            .payments
            .apply(&effect(order.version, "evt_1"))
            .await
            .expect("applied"),
        Applied::Done,
        "the event stored nothing the first time, so it applies now"
    );
    let current = stores.orders.get_order(t, order.id).await.expect("order");
    assert_eq!(
        current.payment_status,
        keel_orders::order::PaymentStatus::Paid
    );
    assert_eq!(
        stores
            .payments
            .session_by_ref(t, ProviderKind::Stripe, "pi_paid")
            .await
            .expect("session")
            .status,
        SessionStatus::Succeeded
    );
    assert_eq!(
        stores
            .payments
            .refunds_of_order(t, order.id)
            .await
            .expect("refunds"),
        vec![task.clone()]
    );
    let timeline = stores
        .orders
        .order_events(t, order.id)
        .await
        .expect("events");
    let paid_events = timeline
        .iter()
        .filter(|e| e.event_type == "order.paid")
        .count();
    assert_eq!(paid_events, 1);

    // The same event again, even over the order's current version: nothing is written.
    let again = Effect {
        order: None,
        ..effect(current.version, "evt_1")
    };
    assert_eq!(
        stores.payments.apply(&again).await.expect("repeat"),
        Applied::Repeat
    );
    let timeline = stores
        .orders
        .order_events(t, order.id)
        .await
        .expect("events");
    assert_eq!(
        timeline
            .iter()
            .filter(|e| e.event_type == "order.paid")
            .count(),
        1
    );

    // Another shop's inbox is its own.
    let (other, _) = create(stores, &unique_slug("effect-b")).await;
    let elsewhere = Effect {
        tenant: other.id,
        inbox: effect(0, "evt_1").inbox,
        session: None,
        order: None,
        refunds: &[],
        events: &[],
    };
    assert_eq!(
        stores.payments.apply(&elsewhere).await.expect("other shop"),
        Applied::Done
    );
}

/// Refund tasks are replaced by id (their standing moves, their amount does not), found when
/// due while pending, and listed per order within their shop only.
pub async fn refund_tasks_move_by_id_and_are_due_only_while_pending(stores: &Stores) {
    let (t, order) = placed_order(stores, "refunds").await;
    let (other, _) = create(stores, &unique_slug("refunds-b")).await;
    let task = refund_task(t, &order);
    let now = task.next_attempt_at;
    let write = |r: &RefundTask| {
        let r = r.clone();
        let payments = stores.payments.clone();
        async move {
            payments
                .apply(&Effect {
                    tenant: r.tenant_id,
                    inbox: None,
                    session: None,
                    order: None,
                    refunds: std::slice::from_ref(&r),
                    events: &[],
                })
                .await
                .expect("written")
        }
    };
    write(&task).await;
    let due: Vec<_> = stores
        .payments
        .due_refunds(now, 100)
        .await
        .expect("due")
        .into_iter()
        .filter(|r| r.tenant_id == t)
        .collect();
    assert_eq!(due, vec![task.clone()]);
    let later = RefundTask {
        attempts: 1,
        next_attempt_at: now + Duration::minutes(1),
        ..task.clone()
    };
    write(&later).await;
    assert!(
        stores
            .payments
            .due_refunds(now, 100)
            .await
            .expect("due")
            .iter()
            .all(|r| r.id != task.id),
        "not due before its time"
    );
    let done = RefundTask {
        status: RefundTaskStatus::Succeeded,
        provider_ref: Some("re_1".into()),
        attempts: 2,
        next_attempt_at: now,
        // A replacement keeps the amount it was recorded with.
        amount: Amount {
            minor: 1,
            ..task.amount
        },
        ..task.clone()
    };
    write(&done).await;
    assert!(
        stores
            .payments
            .due_refunds(now + Duration::hours(1), 100)
            .await
            .expect("due")
            .iter()
            .all(|r| r.id != task.id),
        "settled: never due"
    );
    assert_eq!(
        stores
            .payments
            .refunds_of_order(t, order.id)
            .await
            .expect("of order"),
        vec![RefundTask {
            amount: task.amount,
            ..done
        }]
    );
    assert!(
        stores
            .payments
            .refunds_of_order(other.id, order.id)
            .await
            .expect("of order")
            .is_empty()
    );
}
