//! The relay's numbering (issue 25): events reach live subscribers in the order relays
//! committed them, which is not always the order they were created in; a stream's resume
//! follows the numbering, so it neither misses an event created before the client's last one
//! and committed after it, nor repeats one created after it and delivered before it.

use keel_kernel::{
    TenantId,
    clock::{Clock, SystemClock},
    event::{EventId, EventLog, NewEvent, RecordedEvent, ReplayFilter},
    page::Limit,
};
use keel_webhooks::{domain::Endpoint, service::fan_out};

use super::{HOLD, Publisher, drain_to_bus, race_relays, relay_everything, relay_to_failing_bus};
use crate::{Stores, create, unique_slug};

/// Records `first` and then `second`, whose time is a second earlier: created in that order
/// (ids), relayed in the other (the relay takes the oldest first, as a commit that came late
/// would be taken after the events committed before it).
async fn created_one_way_relayed_the_other(
    stores: &Stores,
    t: TenantId,
) -> (EventId, EventId, EventId) {
    let now = SystemClock.now();
    let earlier = now - time::Duration::seconds(1);
    let first = NewEvent::new(
        t,
        "order.placed",
        &serde_json::json!({"order_id": "ord_a"}),
        now,
    )
    .expect("event");
    let second = NewEvent::new(
        t,
        "order.paid",
        &serde_json::json!({"order_id": "ord_a"}),
        earlier,
    )
    .expect("event");
    let other = NewEvent::new(t, "product.created", &serde_json::json!({}), now).expect("event");
    stores
        .events
        .append(&[first.clone(), second.clone(), other.clone()])
        .await
        .expect("append");
    assert!(
        first.id.as_uuid() < second.id.as_uuid() && second.id.as_uuid() < other.id.as_uuid(),
        "created in this order"
    );
    (first.id, second.id, other.id)
}

async fn replay(
    stores: &Stores,
    t: TenantId,
    last: EventId,
    filter: &ReplayFilter,
) -> Vec<EventId> {
    replay_page(stores.events.as_ref(), t, last, filter).await
}

async fn replay_page(
    log: &dyn EventLog,
    t: TenantId,
    last: EventId,
    filter: &ReplayFilter,
) -> Vec<EventId> {
    log.replay(t, last, filter, Limit::new(Limit::MAX).expect("limit"))
        .await
        .expect("replay")
        .items
        .iter()
        .map(|e| e.id)
        .collect()
}

/// What the two kinds of resume must answer, whichever relay numbered the events.
async fn resumes_follow_the_numbering(
    stores: &Stores,
    t: TenantId,
    ids: (EventId, EventId, EventId),
) {
    let (first, second, other) = ids;
    let all = ReplayFilter::Shop { type_prefix: None };
    // Relayed: second, first, other. Creation order would miss `first` after `second`...
    assert_eq!(replay(stores, t, second, &all).await, vec![first, other]);
    // ...and send `second` again after `first`.
    assert_eq!(replay(stores, t, first, &all).await, vec![other]);
    assert_eq!(replay(stores, t, other, &all).await, Vec::<EventId>::new());
    let orders = ReplayFilter::Shop {
        type_prefix: Some("order.".into()),
    };
    assert_eq!(replay(stores, t, second, &orders).await, vec![first]);
    let order_a = ReplayFilter::Order("ord_a".into());
    assert_eq!(replay(stores, t, second, &order_a).await, vec![first]);
    let order_b = ReplayFilter::Order("ord_b".into());
    assert!(replay(stores, t, second, &order_b).await.is_empty());
}

/// Relays without a bus, recording the events in the order the fan-out (and the node's
/// subscribers) get them; answers how many were relayed and that order.
async fn relay_recording(stores: &Stores, now: time::OffsetDateTime) -> (usize, Vec<EventId>) {
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |e: &RecordedEvent, endpoints: &[Endpoint]| {
        seen.lock().expect("not poisoned").push(e.id);
        fan_out(e, endpoints)
    };
    let n = stores
        .webhooks
        .relay(100, now, &record)
        .await
        .expect("relay");
    (n, seen.into_inner().expect("not poisoned"))
}

pub async fn a_resume_follows_the_relay_order_not_the_creation_order(stores: &Stores) {
    let t = create(stores, &unique_slug("resume-order")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let ids = created_one_way_relayed_the_other(stores, t).await;
    let (first, second, other) = ids;
    assert_eq!(
        relay_recording(stores, now).await,
        (3, vec![second, first, other]),
        "the fan-out (and the node's subscribers) get the events in number order"
    );
    resumes_follow_the_numbering(stores, t, ids).await;
    // Another shop's event as the last one (unknown to this shop): its own events only.
    let other_shop = create(stores, &unique_slug("resume-other")).await.0.id;
    let theirs = replay(
        stores,
        other_shop,
        second,
        &ReplayFilter::Shop { type_prefix: None },
    )
    .await;
    assert!(
        !theirs.contains(&first) && !theirs.contains(&other),
        "another shop's events are never replayed: {theirs:?}"
    );
    let unknown = EventId::from_uuid(uuid::Uuid::nil());
    let everything = replay(
        stores,
        t,
        unknown,
        &ReplayFilter::Shop { type_prefix: None },
    )
    .await;
    assert!(
        everything.ends_with(&[first, second, other]),
        "an unknown last event falls back to id order: {everything:?}"
    );
}

pub async fn the_bus_relay_publishes_in_number_order_and_a_resume_follows_it(stores: &Stores) {
    let t = create(stores, &unique_slug("resume-bus")).await.0.id;
    let now = SystemClock.now();
    drain_to_bus(stores, now).await;
    let ids = created_one_way_relayed_the_other(stores, t).await;
    // The bus fails after one event: the numbers are committed, the rest waits for the next
    // pass, which publishes from where the last one got (again, if it got further unrecorded).
    let failing = relay_to_failing_bus(stores, now, 1).await;
    let good = Publisher::default();
    stores
        .webhooks
        .relay_via(100, now, &good, HOLD)
        .await
        .expect("relay");
    let (first, second, other) = ids;
    assert_eq!(failing.ids(), vec![second]);
    let again = good.ids();
    assert!(
        again == vec![first, other] || again == vec![second, first, other],
        "the rest, in number order (the first again where its publish was not recorded): {again:?}"
    );
    resumes_follow_the_numbering(stores, t, ids).await;
    let idle = Publisher::default();
    stores
        .webhooks
        .relay_via(100, now, &idle, HOLD)
        .await
        .expect("relay");
    assert!(
        idle.ids().is_empty(),
        "nothing is published twice once recorded"
    );
}

pub async fn racing_relays_number_each_event_once(stores: &Stores) {
    let with = create(stores, &unique_slug("number-with")).await.0.id;
    let without = create(stores, &unique_slug("number-without")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    stores
        .webhooks
        .create_endpoint(&super::endpoint(with, &["order.*"]), i64::MAX, &[])
        .await
        .expect("endpoint");
    let mut recorded = Vec::new();
    for t in [with, without] {
        let batch: Vec<NewEvent> = (0..20)
            .map(|i| {
                NewEvent::new(t, "order.placed", &serde_json::json!({"i": i}), now).expect("event")
            })
            .collect();
        recorded.push(batch.iter().map(|e| e.id).collect::<Vec<_>>());
        stores.events.append(&batch).await.expect("append");
    }
    let (relayed, _) = race_relays(stores, now).await;
    assert_eq!(relayed, 40);
    for (t, ids) in [with, without].into_iter().zip(recorded) {
        // Resuming after a shop's creation event replays each of its events once.
        let created = stores
            .events
            .list(
                t,
                keel_kernel::page::PageRequest::default(),
                Some("tenant."),
            )
            .await
            .expect("events")
            .items[0]
            .id;
        let orders = ReplayFilter::Shop {
            type_prefix: Some("order.".into()),
        };
        let mut got = replay(stores, t, created, &orders).await;
        got.sort_by_key(EventId::as_uuid);
        assert_eq!(got, ids, "every event numbered exactly once");
    }
}

pub async fn events_numbered_for_a_bus_that_never_got_them_are_relayed_without_it(stores: &Stores) {
    let t = create(stores, &unique_slug("bus-off")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let (first, second, other) = created_one_way_relayed_the_other(stores, t).await;
    // The bus is down: the events are numbered, none is published.
    let down = relay_to_failing_bus(stores, now, 0).await;
    assert!(down.ids().is_empty());
    // The operator turns the bus off: the relay without one hands them on (fan-out and the
    // node's subscribers), numbered again.
    assert_eq!(
        relay_recording(stores, now).await,
        (3, vec![second, first, other])
    );
    resumes_follow_the_numbering(stores, t, (first, second, other)).await;
}
