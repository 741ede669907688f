//! Webhook behaviours, for every adapter: the relay fans each event out once, and claims
//! respect the exact per-endpoint concurrency bound; with a bus, the relay publishes every
//! event at least once and the consumer's side accepts each event once per endpoint.

use keel_kernel::{
    TenantId,
    clock::{Clock, SystemClock},
    event::NewEvent,
};
use keel_webhooks::{
    domain::{
        Attempt, AttemptId, Channel, DeliveryPolicy, Endpoint, EndpointId, Message, MessageStatus,
    },
    ports::{AttemptOutcome, Refill},
    service::fan_out,
};

use crate::{Stores, create, unique_slug};

mod deliveries;
mod relay_order;
pub use deliveries::*;
pub use relay_order::*;

fn endpoint(t: TenantId, types: &[&str]) -> Endpoint {
    let now = SystemClock.now();
    Endpoint {
        id: EndpointId::new(),
        tenant_id: t,
        channel: Channel::Webhook,
        url: "https://hooks.example.com/".into(),
        description: String::new(),
        event_types: types.iter().map(|s| (*s).to_owned()).collect(),
        enabled: true,
        disabled_reason: None,
        secrets: Vec::new(),
        failing_since: None,
        consecutive_failures: 0,
        paused_until: None,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// The policy the claims below run under: `max_in_flight` slots, circuit at 3 failures in a
/// row, paused 60 s.
fn policy(max_in_flight: i64) -> DeliveryPolicy {
    DeliveryPolicy {
        schedule: vec![time::Duration::seconds(5)],
        jitter: time::Duration::ZERO,
        timeout: time::Duration::seconds(15),
        disable_after: time::Duration::days(5),
        max_in_flight,
        circuit_failures: 3,
        circuit_pause: time::Duration::seconds(60),
        shop_max_in_flight: 100,
    }
}

/// Claims what is due at `at`, at most `limit`, held until `until`, under [`policy`] with
/// `max_in_flight` slots per endpoint.
async fn claim(
    stores: &Stores,
    at: time::OffsetDateTime,
    limit: i64,
    until: time::OffsetDateTime,
    max_in_flight: i64,
) -> Vec<(Message, Endpoint)> {
    stores
        .webhooks
        .claim_due(at, limit, until, &policy(max_in_flight))
        .await
        .expect("claim")
}

/// An attempt of `m` at `at`, answered `status` (or failed to connect), and its outcome.
fn attempt_of(
    m: &Message,
    at: time::OffsetDateTime,
    status: Option<u16>,
) -> (Attempt, AttemptOutcome) {
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let attempt = Attempt {
        id: AttemptId::new(),
        tenant_id: m.tenant_id,
        message_id: m.id,
        endpoint_id: m.endpoint_id,
        attempted_at: at,
        status_code: status,
        latency_ms: 3,
        error: (!ok).then(|| "timeout".to_owned()),
        response_body: None,
    };
    let outcome = AttemptOutcome {
        status: if ok {
            MessageStatus::Delivered
        } else {
            MessageStatus::Pending
        },
        next_attempt_at: if ok {
            at
        } else {
            at + time::Duration::seconds(5)
        },
        endpoint_ok: ok,
        circuit_failures: 3,
        open_until: at + time::Duration::seconds(60),
        disable: None,
        drop_body: false,
    };
    (attempt, outcome)
}

/// A shop with one endpoint wanting `stock_location.created`, and `n` of those events relayed
/// into messages; answers the shop, the endpoint and the time after the messages were due.
async fn endpoint_with_messages(
    stores: &Stores,
    prefix: &str,
    n: usize,
) -> (TenantId, Endpoint, time::OffsetDateTime) {
    let t = create(stores, &unique_slug(prefix)).await.0.id;
    let e = endpoint(t, &["stock_location.created"]);
    stores
        .webhooks
        .create_endpoint(&e, i64::MAX, &[])
        .await
        .expect("endpoint");
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    events(stores, t, "stock_location.created", n).await;
    relay_everything(stores, now).await;
    (t, e, now + time::Duration::seconds(1))
}

async fn events(stores: &Stores, t: TenantId, kind: &'static str, n: usize) {
    let now = SystemClock.now();
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::new(t, kind, &serde_json::json!({"i": i}), now).expect("event"))
        .collect();
    stores.events.append(&batch).await.expect("append");
}

/// Relays until nothing waits (the shops' own creation events, say).
async fn relay_everything(stores: &Stores, now: time::OffsetDateTime) {
    while stores
        .webhooks
        .relay(100, now, &fan_out)
        .await
        .expect("relay")
        > 0
    {}
}

pub async fn the_relay_fans_each_event_out_once_to_the_endpoints_that_want_it(stores: &Stores) {
    let t = create(stores, &unique_slug("relay")).await.0.id;
    let other = create(stores, &unique_slug("relay-b")).await.0.id;
    // Everything recorded so far (the shops' creation) is relayed before any endpoint exists.
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let wants = endpoint(t, &["order.*"]);
    let ignores = endpoint(t, &["product.created"]);
    let foreign = endpoint(other, &[]);
    for e in [&wants, &ignores, &foreign] {
        stores
            .webhooks
            .create_endpoint(e, i64::MAX, &[])
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

/// Four relays at once, in batches of 7, until nothing is left: the events they counted, and
/// the ids of the events they fanned out, in all.
async fn race_relays(
    stores: &Stores,
    now: time::OffsetDateTime,
) -> (usize, Vec<keel_kernel::event::EventId>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut relays = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (webhooks, seen) = (stores.webhooks.clone(), seen.clone());
        relays.spawn(async move {
            let count = |e: &keel_kernel::event::RecordedEvent, endpoints: &[Endpoint]| {
                seen.lock().expect("lock").push(e.id);
                fan_out(e, endpoints)
            };
            let mut total = 0;
            loop {
                let n = webhooks.relay(7, now, &count).await.expect("relay");
                if n == 0 {
                    return total;
                }
                total += n;
            }
        });
    }
    let mut relayed = 0;
    while let Some(n) = relays.join_next().await {
        relayed += n.expect("task");
    }
    let seen = seen.lock().expect("lock").clone();
    (relayed, seen)
}

pub async fn racing_relays_fan_each_event_out_once(stores: &Stores) {
    let t = create(stores, &unique_slug("relay-race")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let wants = endpoint(t, &["order.*"]);
    stores
        .webhooks
        .create_endpoint(&wants, i64::MAX, &[])
        .await
        .expect("endpoint");
    events(stores, t, "order.placed", 40).await;
    let (relayed, _) = race_relays(stores, now).await;
    assert_eq!(relayed, 40, "each event counted by exactly one relay");
    let page =
        keel_kernel::page::PageRequest::first(keel_kernel::page::Limit::new(100).expect("limit"));
    let got = stores
        .webhooks
        .list_messages(t, wants.id, page)
        .await
        .expect("messages");
    assert_eq!(got.items.len(), 40, "one message per event");
}

/// Shops with and without endpoints in one outbox (PostgreSQL relays the second kind in one
/// statement and the first in its transaction): racing relays hand every event to the fan-out
/// exactly once, and only the shop with an endpoint gets messages.
pub async fn shops_with_and_without_endpoints_relay_every_event_once(stores: &Stores) {
    let with = create(stores, &unique_slug("relay-with")).await.0.id;
    let without = create(stores, &unique_slug("relay-without")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let wants = endpoint(with, &["order.*"]);
    stores
        .webhooks
        .create_endpoint(&wants, i64::MAX, &[])
        .await
        .expect("endpoint");
    for _ in 0..4 {
        events(stores, with, "order.placed", 5).await;
        events(stores, without, "order.placed", 5).await;
    }
    let (relayed, seen) = race_relays(stores, now).await;
    assert_eq!(relayed, 40, "each event counted by exactly one relay");
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (40, 40),
        "each event fanned out once"
    );
    let page =
        keel_kernel::page::PageRequest::first(keel_kernel::page::Limit::new(100).expect("limit"));
    let got = stores
        .webhooks
        .list_messages(with, wants.id, page)
        .await
        .expect("messages");
    assert_eq!(
        got.items.len(),
        20,
        "one message per event of the shop with an endpoint"
    );
}

pub async fn claims_respect_the_per_endpoint_concurrency_bound(stores: &Stores) {
    let t = create(stores, &unique_slug("claim")).await.0.id;
    let e = endpoint(t, &["stock_location.created"]);
    stores
        .webhooks
        .create_endpoint(&e, i64::MAX, &[])
        .await
        .expect("endpoint");
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    events(stores, t, "stock_location.created", 5).await;
    stores
        .webhooks
        .relay(100, now, &fan_out)
        .await
        .expect("relay");
    let later = now + time::Duration::seconds(1);
    let lock = later + time::Duration::seconds(60);
    let first = claim(stores, later, 10, lock, 2).await;
    let mine: Vec<_> = first
        .iter()
        .filter(|(m, _)| m.endpoint_id == e.id)
        .collect();
    assert_eq!(mine.len(), 2, "at most 2 in flight for the endpoint");
    let second = claim(stores, later, 10, lock, 2).await;
    assert!(
        second.iter().all(|(m, _)| m.endpoint_id != e.id),
        "still 2 in flight"
    );
    let (m, _) = mine[0];
    let (attempt, outcome) = attempt_of(m, later, Some(200));
    stores
        .webhooks
        .record_attempt(&attempt, &outcome, &[], None)
        .await
        .expect("record");
    let third = claim(stores, later, 10, lock, 2).await;
    assert_eq!(
        third.iter().filter(|(m, _)| m.endpoint_id == e.id).count(),
        1,
        "one slot freed"
    );
    // A claim whose worker died is due again once its lock passed.
    let after_lock = lock + time::Duration::seconds(1);
    let retaken = claim(
        stores,
        after_lock,
        10,
        after_lock + time::Duration::seconds(60),
        5,
    )
    .await;
    assert_eq!(
        retaken
            .iter()
            .filter(|(m, _)| m.endpoint_id == e.id)
            .count(),
        4,
        "the two stale claims and the two never claimed"
    );
    let delivered = stores
        .webhooks
        .get_message(t, Channel::Webhook, m.id)
        .await
        .expect("message");
    assert_eq!(
        (delivered.status, delivered.attempts),
        (MessageStatus::Delivered, 1)
    );
}

/// How long a test's publisher may hold the relay position.
const HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// Records what it publishes; fails once it has published `fail_after` events.
#[derive(Default)]
struct Publisher {
    published: std::sync::Mutex<Vec<keel_kernel::event::EventId>>,
    fail_after: Option<usize>,
}

#[async_trait::async_trait]
impl keel_kernel::bus::EventPublisher for Publisher {
    async fn publish(&self, e: &keel_kernel::event::RecordedEvent) -> Result<(), String> {
        let mut got = self.published.lock().expect("not poisoned");
        if self.fail_after.is_some_and(|n| got.len() >= n) {
            return Err("the bus is unreachable".into());
        }
        got.push(e.id);
        Ok(())
    }
}

/// Relays everything recorded so far (the shops' creation, say) to a bus that takes it.
async fn drain_to_bus(stores: &Stores, now: time::OffsetDateTime) {
    let bus = Publisher::default();
    while stores
        .webhooks
        .relay_via(100, now, &bus, HOLD)
        .await
        .expect("relay")
        > 0
    {}
}

/// A relay pass to a bus that fails after `n` events: the failure is reported; answers the
/// publisher (what went out before it failed).
async fn relay_to_failing_bus(stores: &Stores, now: time::OffsetDateTime, n: usize) -> Publisher {
    let failing = Publisher {
        fail_after: Some(n),
        ..Publisher::default()
    };
    assert!(
        stores
            .webhooks
            .relay_via(100, now, &failing, HOLD)
            .await
            .is_err(),
        "a publish failure is reported"
    );
    failing
}

impl Publisher {
    fn ids(&self) -> Vec<keel_kernel::event::EventId> {
        self.published.lock().expect("not poisoned").clone()
    }
}

pub async fn the_bus_relay_publishes_every_event_and_a_failed_publish_leaves_the_rest(
    stores: &Stores,
) {
    let t = create(stores, &unique_slug("bus-relay")).await.0.id;
    let now = SystemClock.now();
    drain_to_bus(stores, now).await;
    events(stores, t, "order.placed", 5).await;
    let failing = relay_to_failing_bus(stores, now, 2).await;
    assert_eq!(failing.ids().len(), 2);
    let good = Publisher::default();
    while stores
        .webhooks
        .relay_via(2, now, &good, HOLD)
        .await
        .expect("relay")
        > 0
    {}
    let all = stores
        .events
        .list(
            t,
            keel_kernel::page::PageRequest::default(),
            Some("order.placed"),
        )
        .await
        .expect("events")
        .items;
    let placed: Vec<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(placed.len(), 5);
    let (first, second) = (failing.ids(), good.ids());
    for id in &placed {
        assert!(
            second.contains(id) || first.contains(id),
            "every event is published at least once"
        );
        assert!(
            second.iter().filter(|x| *x == id).count() <= 1,
            "the good pass publishes an event once"
        );
    }
    for id in placed.iter().filter(|id| !first.contains(id)) {
        assert!(
            second.contains(id),
            "what failed is published on the next pass"
        );
    }
    assert_eq!(
        stores
            .webhooks
            .relay(100, now, &fan_out)
            .await
            .expect("relay"),
        0,
        "everything is marked relayed"
    );
}

pub async fn a_bus_event_is_accepted_once_per_endpoint(stores: &Stores) {
    let t = create(stores, &unique_slug("bus-accept")).await.0.id;
    let a = endpoint(t, &["order.*"]);
    let b = endpoint(t, &[]);
    let ignores = endpoint(t, &["product.created"]);
    for e in [&a, &b, &ignores] {
        stores
            .webhooks
            .create_endpoint(e, i64::MAX, &[])
            .await
            .expect("endpoint");
    }
    let event = keel_kernel::event::RecordedEvent {
        id: keel_kernel::event::EventId::new(),
        tenant_id: t,
        event_type: "order.paid".into(),
        payload: serde_json::json!({"order_id": "ord_x"}),
        occurred_at: SystemClock.now(),
    };
    assert_eq!(
        stores
            .webhooks
            .accept_event(&event, &fan_out)
            .await
            .expect("accept"),
        2,
        "one message for each endpoint that wants it"
    );
    assert_eq!(
        stores
            .webhooks
            .accept_event(&event, &fan_out)
            .await
            .expect("accept"),
        0,
        "a redelivered event adds nothing"
    );
}

pub async fn relayed_events_and_processed_rows_past_retention_are_pruned_and_unrelayed_kept(
    stores: &Stores,
) {
    let t = create(stores, &unique_slug("retention")).await.0.id;
    let now = SystemClock.now();
    let old = now - time::Duration::days(10);
    let at = |when: time::OffsetDateTime, kind: &'static str| {
        NewEvent::new(t, kind, &serde_json::json!({}), when).expect("event")
    };
    stores
        .events
        .append(&[
            at(old, "old.relayed"),
            at(old, "old.relayed"),
            at(now, "new.relayed"),
        ])
        .await
        .expect("append");
    relay_everything(stores, now).await;
    // Recorded after the relay ran: old, but never relayed.
    stores
        .events
        .append(&[at(old, "old.unrelayed")])
        .await
        .expect("append");
    let (done_old, done_new) = (
        keel_kernel::event::EventId::new(),
        keel_kernel::event::EventId::new(),
    );
    stores
        .consumers
        .mark_processed("webhooks", done_old, old)
        .await
        .expect("processed");
    stores
        .consumers
        .mark_processed("webhooks", done_new, now)
        .await
        .expect("processed");
    let cutoff = now - time::Duration::days(5);
    assert_eq!(
        stores
            .webhooks
            .prune_events(cutoff, 1)
            .await
            .expect("prune"),
        2,
        "at most `limit` rows of each kind per call"
    );
    assert_eq!(
        stores
            .webhooks
            .prune_events(cutoff, 100)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        stores
            .webhooks
            .prune_events(cutoff, 100)
            .await
            .expect("prune"),
        0
    );
    let left: Vec<String> = stores
        .events
        .list(t, keel_kernel::page::PageRequest::default(), None)
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| e.event_type)
        .filter(|k| k != "tenant.created")
        .collect();
    assert_eq!(
        left,
        ["new.relayed", "old.unrelayed"].map(String::from).to_vec()
    );
    assert!(
        !stores
            .consumers
            .is_processed("webhooks", done_old)
            .await
            .expect("read")
    );
    assert!(
        stores
            .consumers
            .is_processed("webhooks", done_new)
            .await
            .expect("read")
    );
}
