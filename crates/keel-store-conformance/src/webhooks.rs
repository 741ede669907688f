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
    let mut relays = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let webhooks = stores.webhooks.clone();
        relays.spawn(async move {
            let mut total = 0;
            loop {
                let n = webhooks.relay(7, now, &fan_out).await.expect("relay");
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
    let earlier = Publisher::default();
    while stores
        .webhooks
        .relay_via(100, now, &earlier)
        .await
        .expect("relay")
        > 0
    {}
    events(stores, t, "order.placed", 5).await;
    let failing = Publisher {
        fail_after: Some(2),
        ..Publisher::default()
    };
    assert!(
        stores.webhooks.relay_via(100, now, &failing).await.is_err(),
        "a publish failure is reported"
    );
    assert_eq!(failing.ids().len(), 2);
    let good = Publisher::default();
    while stores
        .webhooks
        .relay_via(2, now, &good)
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

pub async fn claims_are_fair_per_endpoint_whatever_another_endpoints_backlog(stores: &Stores) {
    // A slow shop's endpoint has a long backlog, all of it older than the other shop's one
    // message.
    let (_, busy, _) = endpoint_with_messages(stores, "backlog", 300).await;
    let (_, quiet, later) = endpoint_with_messages(stores, "quiet", 1).await;
    let lock = later + time::Duration::seconds(60);
    let claimed = claim(stores, later, 5, lock, 4).await;
    let of = |e: &Endpoint| {
        claimed
            .iter()
            .filter(|(m, _)| m.endpoint_id == e.id)
            .count()
    };
    assert_eq!(
        of(&quiet),
        1,
        "the quiet endpoint's message is claimed at once"
    );
    assert_eq!(of(&busy), 4, "the busy one gets its slots, no more");
    // While the busy endpoint's four are in flight, its backlog takes no slot of anyone's.
    let again = claim(stores, later, 50, lock, 4).await;
    assert!(
        again.iter().all(|(m, _)| m.endpoint_id != busy.id),
        "still four in flight"
    );
}

pub async fn an_open_circuit_claims_nothing_and_a_half_open_one_a_single_probe(stores: &Stores) {
    let (t, e, later) = endpoint_with_messages(stores, "circuit", 10).await;
    let lock = later + time::Duration::seconds(30);
    let claimed = claim(stores, later, 50, lock, 3).await;
    assert_eq!(claimed.len(), 3);
    // Three failures in a row (the policy's count) open the circuit for 60 s.
    for (m, _) in &claimed {
        let (a, o) = attempt_of(m, later, None);
        stores
            .webhooks
            .record_attempt(&a, &o, &[], None)
            .await
            .expect("record");
    }
    let opened = stores
        .webhooks
        .get_endpoint(t, Channel::Webhook, e.id)
        .await
        .expect("endpoint");
    assert_eq!(opened.consecutive_failures, 3);
    assert_eq!(
        opened.paused_until,
        Some(later + time::Duration::seconds(60))
    );
    let shortly = later + time::Duration::seconds(10);
    assert!(
        claim(
            stores,
            shortly,
            50,
            shortly + time::Duration::seconds(30),
            3
        )
        .await
        .is_empty(),
        "open: nothing is sent, though seven messages are due"
    );
    let reopened = later + time::Duration::seconds(60);
    let probe = claim(
        stores,
        reopened,
        50,
        reopened + time::Duration::seconds(30),
        3,
    )
    .await;
    assert_eq!(probe.len(), 1, "half-open: one probe");
    // The messages that waited kept their retries: never attempted.
    let waited = stores
        .webhooks
        .get_message(t, Channel::Webhook, probe[0].0.id)
        .await
        .expect("message");
    assert_eq!(waited.attempts, 0);
    // The probe succeeds: the circuit closes and every slot is back.
    let (a, o) = attempt_of(&probe[0].0, reopened, Some(204));
    stores
        .webhooks
        .record_attempt(&a, &o, &[], None)
        .await
        .expect("record");
    let closed = claim(
        stores,
        reopened,
        50,
        reopened + time::Duration::seconds(30),
        3,
    )
    .await;
    assert_eq!(closed.len(), 3);
    assert_eq!(closed[0].1.consecutive_failures, 0);
}

pub async fn an_attempt_claims_its_endpoints_next_message_in_the_same_transaction(stores: &Stores) {
    let (t, e, later) = endpoint_with_messages(stores, "refill", 3).await;
    let lock = later + time::Duration::seconds(30);
    let first = claim(stores, later, 50, lock, 1).await;
    assert_eq!(first.len(), 1, "one slot");
    let (a, o) = attempt_of(&first[0].0, later, Some(200));
    let refill = Refill {
        now: later,
        lock_until: lock,
        policy: &policy(1),
    };
    let (next, endpoint) = stores
        .webhooks
        .record_attempt(&a, &o, &[], Some(refill))
        .await
        .expect("record")
        .expect("the next message comes with the attempt");
    assert_eq!(endpoint.id, e.id);
    assert_ne!(next.id, first[0].0.id);
    assert!(
        claim(stores, later, 50, lock, 1).await.is_empty(),
        "the refilled message holds the endpoint's one slot"
    );
    let page = keel_kernel::page::PageRequest::default();
    let messages = stores
        .webhooks
        .list_messages(t, e.id, page)
        .await
        .expect("messages");
    let states: Vec<MessageStatus> = messages.items.iter().map(|m| m.status).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == MessageStatus::Delivering)
            .count(),
        1,
        "{states:?}"
    );
}

pub async fn finished_messages_past_retention_go_with_their_attempts_and_due_ones_stay(
    stores: &Stores,
) {
    let (t, e, later) = endpoint_with_messages(stores, "retention", 3).await;
    let lock = later + time::Duration::seconds(30);
    let claimed = claim(stores, later, 2, lock, 2).await;
    // One delivered, one given up; the third never attempted (still due).
    let (a, o) = attempt_of(&claimed[0].0, later, Some(200));
    stores
        .webhooks
        .record_attempt(&a, &o, &[], None)
        .await
        .expect("record");
    let (a, mut o) = attempt_of(&claimed[1].0, later, Some(500));
    o.status = MessageStatus::Failed;
    o.next_attempt_at = later;
    stores
        .webhooks
        .record_attempt(&a, &o, &[], None)
        .await
        .expect("record");
    assert_eq!(
        stores
            .webhooks
            .prune_messages(later, 100)
            .await
            .expect("prune"),
        0,
        "not older than the retention yet"
    );
    let after = later + time::Duration::microseconds(1);
    assert_eq!(
        stores
            .webhooks
            .prune_messages(after, 100)
            .await
            .expect("prune"),
        2
    );
    let page = keel_kernel::page::PageRequest::default();
    let left = stores
        .webhooks
        .list_messages(t, e.id, page)
        .await
        .expect("messages");
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].status, MessageStatus::Pending);
    for (m, _) in &claimed[..2] {
        assert!(
            stores
                .webhooks
                .list_attempts(t, m.id, page)
                .await
                .expect("attempts")
                .items
                .is_empty(),
            "attempts went with their message"
        );
    }
    assert_eq!(
        stores
            .webhooks
            .prune_messages(after, 100)
            .await
            .expect("prune"),
        0
    );
}

/// A shop with a catch-all webhook endpoint and an account endpoint, everything before
/// relayed; answers the shop, the two endpoints and the time.
async fn shop_with_both_channels(
    stores: &Stores,
) -> (TenantId, Endpoint, Endpoint, time::OffsetDateTime) {
    let shop = create(stores, &unique_slug("notices")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let hook = endpoint(shop, &[]);
    let mut mail = endpoint(shop, &[]);
    mail.channel = Channel::Account;
    for e in [&hook, &mail] {
        stores
            .webhooks
            .create_endpoint(e, i64::MAX, &[])
            .await
            .expect("endpoint");
    }
    let mut second = endpoint(shop, &[]);
    second.channel = Channel::Account;
    assert!(
        stores
            .webhooks
            .create_endpoint(&second, i64::MAX, &[])
            .await
            .is_err_and(|e| e.is_conflict_on(keel_webhooks::ports::ACCOUNT_ENDPOINT_EXISTS)),
        "one account endpoint per shop"
    );
    // Each channel's reads see only its own endpoints.
    assert!(
        stores
            .webhooks
            .get_endpoint(shop, Channel::Webhook, mail.id)
            .await
            .is_err()
    );
    assert!(
        stores
            .webhooks
            .get_endpoint(shop, Channel::Account, hook.id)
            .await
            .is_err()
    );
    (shop, hook, mail, now)
}

pub async fn account_notices_reach_only_the_account_endpoint_and_lose_their_body_when_done(
    stores: &Stores,
) {
    use keel_identity::{
        secret::Secret,
        staff::{Account, OneTimeToken, TokenPurpose, UserId},
    };
    let (shop, hook, mail, now) = shop_with_both_channels(stores).await;
    // A reset token with its notice: the event goes to the webhook, the notice to the account
    // endpoint only.
    let requested = NewEvent::new(
        shop,
        "staff_user.password_reset_requested",
        &serde_json::json!({"user_id": "usr_x"}),
        now,
    )
    .expect("event");
    let master = keel_identity::sealed::MasterKey::generate();
    let notice = keel_identity::notice::seal(
        &master,
        &requested,
        &serde_json::json!({"reset_token": "rs_x"}),
    )
    .expect("seal");
    let token = OneTimeToken {
        hash: Secret::generate("rs").hash,
        tenant_id: shop,
        owner: Account::Staff(UserId::new()),
        purpose: TokenPurpose::Reset,
        expires_at: now + time::Duration::hours(1),
    };
    stores
        .staff
        .issue_token(&token, &[requested], Some(&notice))
        .await
        .expect("issue");
    relay_everything(stores, now).await;
    let page = keel_kernel::page::PageRequest::default();
    let to_hook = stores
        .webhooks
        .list_messages(shop, hook.id, page)
        .await
        .expect("messages");
    assert_eq!(to_hook.items.len(), 1, "the redacted event");
    assert!(!to_hook.items[0].body.contains("rs_x"));
    let to_mail = stores
        .webhooks
        .list_messages(shop, mail.id, page)
        .await
        .expect("messages");
    assert_eq!(to_mail.items.len(), 1, "the notice, and no event");
    let sealed = &to_mail.items[0];
    assert_eq!(sealed.id.as_uuid(), notice.message_id);
    assert!(!sealed.body.contains("rs_x"), "sealed at rest");
    // The account notice is not a webhook message: not readable or replayable as one.
    assert!(
        stores
            .webhooks
            .get_message(shop, Channel::Webhook, sealed.id)
            .await
            .is_err()
    );
    assert!(
        stores
            .webhooks
            .replay_message(shop, sealed.id, now, &[])
            .await
            .is_err()
    );
    // Delivered: its body is dropped.
    let later = now + time::Duration::seconds(1);
    let claimed = claim(stores, later, 50, later + time::Duration::seconds(30), 4).await;
    let (message, _) = claimed
        .iter()
        .find(|(m, _)| m.id == sealed.id)
        .expect("the notice is claimed like any message");
    let (attempt, mut outcome) = attempt_of(message, later, Some(200));
    outcome.drop_body = true;
    stores
        .webhooks
        .record_attempt(&attempt, &outcome, &[], None)
        .await
        .expect("record");
    let done = stores
        .webhooks
        .get_message(shop, Channel::Account, sealed.id)
        .await
        .expect("message");
    assert_eq!(done.status, MessageStatus::Delivered);
    assert!(done.body.is_empty());
}

pub async fn a_shop_with_many_endpoints_never_holds_more_than_its_share_of_deliveries(
    stores: &Stores,
) {
    let shop = create(stores, &unique_slug("greedy")).await.0.id;
    let now = SystemClock.now();
    relay_everything(stores, now).await;
    let endpoints: Vec<Endpoint> = (0..3)
        .map(|_| endpoint(shop, &["stock_location.created"]))
        .collect();
    for e in &endpoints {
        stores
            .webhooks
            .create_endpoint(e, i64::MAX, &[])
            .await
            .expect("endpoint");
    }
    events(stores, shop, "stock_location.created", 4).await;
    relay_everything(stores, now).await;
    let later = now + time::Duration::seconds(1);
    let lock = later + time::Duration::seconds(30);
    let policy = DeliveryPolicy {
        shop_max_in_flight: 5,
        ..policy(4)
    };
    let claimed = stores
        .webhooks
        .claim_due(later, 50, lock, &policy)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5, "twelve due, the shop's five");
    let mut per_endpoint = std::collections::HashMap::new();
    for (m, _) in &claimed {
        *per_endpoint.entry(m.endpoint_id).or_insert(0) += 1;
    }
    assert_eq!(per_endpoint.len(), 3, "spread over its endpoints");
    assert!(
        stores
            .webhooks
            .claim_due(later, 50, lock, &policy)
            .await
            .expect("claim")
            .is_empty(),
        "nothing more while five are in flight"
    );
    // An attempt frees one delivery, and its refill takes that one place back, no more.
    let (attempt, outcome) = attempt_of(&claimed[0].0, later, Some(200));
    let refill = Refill {
        now: later,
        lock_until: lock,
        policy: &policy,
    };
    let next = stores
        .webhooks
        .record_attempt(&attempt, &outcome, &[], Some(refill))
        .await
        .expect("record");
    assert!(next.is_some(), "the freed place is refilled");
    let (attempt, outcome) = attempt_of(&claimed[1].0, later, Some(200));
    let policy_full = DeliveryPolicy {
        shop_max_in_flight: 4,
        ..policy
    };
    let refill = Refill {
        now: later,
        lock_until: lock,
        policy: &policy_full,
    };
    assert!(
        stores
            .webhooks
            .record_attempt(&attempt, &outcome, &[], Some(refill))
            .await
            .expect("record")
            .is_none(),
        "at its limit the shop gets no refill"
    );
}

/// Concurrent creations on any node never pass a shop's endpoint limit, which counts each
/// channel apart and each shop apart.
pub async fn concurrent_endpoint_creations_never_pass_the_shops_limit(stores: &Stores) {
    let shop = create(stores, &unique_slug("endpoints")).await.0.id;
    let other = create(stores, &unique_slug("endpoints")).await.0.id;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = stores.webhooks.clone();
        let e = endpoint(shop, &[]);
        racing.spawn(async move { store.create_endpoint(&e, 3, &[]).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(r) = racing.join_next().await {
        match r.expect("task") {
            Ok(()) => created += 1,
            Err(e) if e.is_conflict_on(keel_webhooks::ports::ENDPOINT_LIMIT) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((created, refused), (3, 5), "exactly the limit is created");
    let mut mail = endpoint(shop, &[]);
    mail.channel = Channel::Account;
    stores
        .webhooks
        .create_endpoint(&mail, 1, &[])
        .await
        .expect("the account channel counts apart");
    stores
        .webhooks
        .create_endpoint(&endpoint(other, &[]), 3, &[])
        .await
        .expect("another shop counts apart");
}

/// Claims find every endpoint with something due, and only those: not one whose messages are
/// all delivered, not one whose retry is still ahead (until it is due), and again one whose
/// claim lapsed.
pub async fn claims_find_the_endpoints_with_due_messages_and_only_those(stores: &Stores) {
    let policy = policy(4);
    let claim = |at: time::OffsetDateTime| {
        let policy = policy.clone();
        async move {
            stores
                .webhooks
                .claim_due(at, 50, at + time::Duration::seconds(30), &policy)
                .await
                .expect("claim")
        }
    };
    let record = |m: Message, at: time::OffsetDateTime, status: Option<u16>| async move {
        let (attempt, outcome) = attempt_of(&m, at, status);
        stores
            .webhooks
            .record_attempt(&attempt, &outcome, &[], None)
            .await
            .expect("record");
        outcome.next_attempt_at
    };
    // One endpoint whose messages are all delivered, one whose only message failed and waits
    // for its retry.
    let (_, done, _) = endpoint_with_messages(stores, "done", 3).await;
    let (_, retrying, _) = endpoint_with_messages(stores, "retrying", 1).await;
    let (_, due, at) = endpoint_with_messages(stores, "due", 2).await;
    let mut retry_at = at;
    for (m, _) in claim(at).await {
        if m.endpoint_id == done.id {
            record(m, at, Some(200)).await;
        } else if m.endpoint_id == retrying.id {
            retry_at = record(m, at, None).await;
        }
    }
    assert!(retry_at > at, "the failed message waits for its retry");
    // `due`'s two messages were claimed by the first claim and are in flight: nothing is due.
    let soon = at + time::Duration::seconds(1);
    assert!(claim(soon).await.is_empty(), "nothing due before the retry");
    // At the retry only the failed message is due; when the first claim of `due` lapses (30 s)
    // its two messages are due again.
    let retried = claim(retry_at).await;
    let endpoints: Vec<_> = retried.iter().map(|(m, _)| m.endpoint_id).collect();
    assert_eq!(endpoints, vec![retrying.id], "the retry, on time");
    let lapsed = claim(at + time::Duration::seconds(31)).await;
    assert_eq!(lapsed.len(), 2, "the lapsed claim's messages");
    assert!(lapsed.iter().all(|(m, _)| m.endpoint_id == due.id));
}
