//! Webhook behaviours, for every adapter: the relay fans each event out once, and claims
//! respect the exact per-endpoint concurrency bound.

use keel_kernel::{
    TenantId,
    clock::{Clock, SystemClock},
    event::NewEvent,
};
use keel_webhooks::{
    domain::{Attempt, AttemptId, Endpoint, EndpointId, MessageStatus},
    ports::AttemptOutcome,
    service::fan_out,
};

use crate::{Stores, create, unique_slug};

fn endpoint(t: TenantId, types: &[&str]) -> Endpoint {
    let now = SystemClock.now();
    Endpoint {
        id: EndpointId::new(),
        tenant_id: t,
        url: "https://hooks.example.com/".into(),
        description: String::new(),
        event_types: types.iter().map(|s| (*s).to_owned()).collect(),
        enabled: true,
        disabled_reason: None,
        secrets: Vec::new(),
        failing_since: None,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

async fn events(stores: &Stores, t: TenantId, kind: &'static str, n: usize) {
    let now = SystemClock.now();
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::new(t, kind, &serde_json::json!({"i": i}), now).expect("event"))
        .collect();
    stores.events.append(&batch).await.expect("append");
}

pub async fn the_relay_fans_each_event_out_once_to_the_endpoints_that_want_it(stores: &Stores) {
    let t = create(stores, &unique_slug("relay")).await.0.id;
    let other = create(stores, &unique_slug("relay-b")).await.0.id;
    // Everything recorded so far (the shops' creation) is relayed before any endpoint exists.
    let now = SystemClock.now();
    while stores
        .webhooks
        .relay(100, now, &fan_out)
        .await
        .expect("relay")
        > 0
    {}
    let wants = endpoint(t, &["order.*"]);
    let ignores = endpoint(t, &["product.created"]);
    let foreign = endpoint(other, &[]);
    for e in [&wants, &ignores, &foreign] {
        stores
            .webhooks
            .create_endpoint(e, &[])
            .await
            .expect("endpoint");
    }
    events(stores, t, "order.placed", 3).await;
    assert_eq!(
        stores
            .webhooks
            .relay(100, now, &fan_out)
            .await
            .expect("relay"),
        3
    );
    assert_eq!(
        stores
            .webhooks
            .relay(100, now, &fan_out)
            .await
            .expect("relay"),
        0,
        "relayed once"
    );
    let page = keel_kernel::page::PageRequest::default();
    let got = stores
        .webhooks
        .list_messages(t, wants.id, page)
        .await
        .expect("messages");
    assert_eq!(got.items.len(), 3);
    assert!(
        got.items
            .iter()
            .all(|m| m.status == MessageStatus::Pending && m.event_type == "order.placed")
    );
    assert!(
        stores
            .webhooks
            .list_messages(t, ignores.id, page)
            .await
            .expect("messages")
            .items
            .is_empty()
    );
    assert!(
        stores
            .webhooks
            .list_messages(other, foreign.id, page)
            .await
            .expect("messages")
            .items
            .is_empty(),
        "another shop's endpoint gets nothing"
    );
}

pub async fn claims_respect_the_per_endpoint_concurrency_bound(stores: &Stores) {
    let t = create(stores, &unique_slug("claim")).await.0.id;
    let e = endpoint(t, &["stock_location.created"]);
    stores
        .webhooks
        .create_endpoint(&e, &[])
        .await
        .expect("endpoint");
    let now = SystemClock.now();
    while stores
        .webhooks
        .relay(100, now, &fan_out)
        .await
        .expect("relay")
        > 0
    {}
    events(stores, t, "stock_location.created", 5).await;
    stores
        .webhooks
        .relay(100, now, &fan_out)
        .await
        .expect("relay");
    let later = now + time::Duration::seconds(1);
    let lock = later + time::Duration::seconds(60);
    let first = stores
        .webhooks
        .claim_due(later, 10, 2, lock)
        .await
        .expect("claim");
    let mine: Vec<_> = first
        .iter()
        .filter(|(m, _)| m.endpoint_id == e.id)
        .collect();
    assert_eq!(mine.len(), 2, "at most 2 in flight for the endpoint");
    let second = stores
        .webhooks
        .claim_due(later, 10, 2, lock)
        .await
        .expect("claim");
    assert!(
        second.iter().all(|(m, _)| m.endpoint_id != e.id),
        "still 2 in flight"
    );
    let (m, _) = mine[0];
    let attempt = Attempt {
        id: AttemptId::new(),
        tenant_id: t,
        message_id: m.id,
        endpoint_id: e.id,
        attempted_at: later,
        status_code: Some(200),
        latency_ms: 3,
        error: None,
        response_body: Some("ok".into()),
    };
    let outcome = AttemptOutcome {
        status: MessageStatus::Delivered,
        next_attempt_at: later,
        endpoint_ok: true,
        disable: None,
    };
    stores
        .webhooks
        .record_attempt(&attempt, &outcome, &[])
        .await
        .expect("record");
    let third = stores
        .webhooks
        .claim_due(later, 10, 2, lock)
        .await
        .expect("claim");
    assert_eq!(
        third.iter().filter(|(m, _)| m.endpoint_id == e.id).count(),
        1,
        "one slot freed"
    );
    // A claim whose worker died is due again once its lock passed.
    let after_lock = lock + time::Duration::seconds(1);
    let retaken = stores
        .webhooks
        .claim_due(after_lock, 10, 5, after_lock + time::Duration::seconds(60))
        .await
        .expect("claim");
    assert_eq!(
        retaken
            .iter()
            .filter(|(m, _)| m.endpoint_id == e.id)
            .count(),
        4,
        "the two stale claims and the two never claimed"
    );
    let delivered = stores.webhooks.get_message(t, m.id).await.expect("message");
    assert_eq!(
        (delivered.status, delivered.attempts),
        (MessageStatus::Delivered, 1)
    );
}
