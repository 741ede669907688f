//! Delivery behaviours: fair and bounded claims, circuits, attempts, retention, the account
//! channel and the per-shop endpoint limit.

#[allow(clippy::wildcard_imports)]
use super::*;

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
        domain::secret::Secret,
        domain::staff::{Account, OneTimeToken, TokenPurpose, UserId},
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
    let master = keel_identity::domain::sealed::MasterKey::generate();
    let notice = keel_identity::domain::notice::seal(
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
