//! The JetStream bus against a real NATS server with JetStream (see `keel_testdb::nats`), and
//! consumer bookkeeping in a real SQLite file.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use keel_kernel::{
    TenantId,
    bus::ConsumerStore,
    clock::{Clock, SystemClock},
    event::{EventId, RecordedEvent},
    page::PageRequest,
};
use keel_store_sqlite::{SqliteSettings, SqliteStore, Synchronous};
use keel_worker::bus::{Consumer, Handler, JetStreamBus};

async fn store() -> (keel_testdb::SqliteFile, Arc<SqliteStore>) {
    let file = keel_testdb::sqlite_file();
    let s = SqliteStore::open(&SqliteSettings {
        path: file.path.clone(),
        busy_timeout: Duration::from_secs(5),
        acquire_timeout: Duration::from_secs(5),
        readers: 2,
        synchronous: Synchronous::Full,
        group_commit: true,
    })
    .await
    .expect("open");
    s.migrate().await.expect("migrate");
    (file, Arc::new(s))
}

/// A stream of its own for each test, so tests share a server without meeting.
async fn bus(url: &str) -> JetStreamBus {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    JetStreamBus::connect(
        url,
        &format!("KEEL_TEST_{tag}"),
        &format!("keeltest.{tag}"),
        Duration::from_mins(2),
    )
    .await
    .expect("bus")
}

fn event(kind: &str) -> RecordedEvent {
    RecordedEvent {
        id: EventId::new(),
        tenant_id: TenantId::new(),
        event_type: kind.to_owned(),
        payload: serde_json::json!({"n": 1}),
        occurred_at: SystemClock.now(),
    }
}

/// Counts what it handled; fails while `failing` is set.
#[derive(Default)]
struct Counting {
    handled: std::sync::Mutex<Vec<EventId>>,
    calls: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl Handler for Counting {
    async fn handle(&self, e: &RecordedEvent) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err("the receiving system is down".into());
        }
        self.handled.lock().expect("lock").push(e.id);
        Ok(())
    }
}

/// Runs the consumer until a fetch comes back empty (each fetch waits at most `wait`).
async fn drain(c: &Consumer, wait: Duration) -> usize {
    let mut total = 0;
    loop {
        let n = c.run_once(10, wait).await.expect("run");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

#[tokio::test]
async fn a_consumer_processes_each_event_once_even_when_it_is_published_again() {
    let nats = keel_testdb::nats().await;
    let (_file, store) = store().await;
    let bus = bus(&nats.url).await;
    let (first, second) = (event("order.placed"), event("order.paid"));
    bus.publish(&first).await.expect("publish");
    bus.publish(&first)
        .await
        .expect("re-publish (a relay retry)");
    assert_eq!(
        bus.stored().await.expect("stored"),
        1,
        "JetStream dropped the duplicate by Nats-Msg-Id"
    );
    // A copy that escaped the duplicate window (another id on the wire, the same event).
    bus.publish_as(&first, "late-copy").await.expect("publish");
    bus.publish(&second).await.expect("publish");
    assert_eq!(bus.stored().await.expect("stored"), 3);
    let handler = Arc::new(Counting::default());
    let consumer = Consumer::new(
        &bus,
        "webhooks",
        store.clone(),
        handler.clone(),
        vec![Duration::from_millis(50)],
        Duration::from_secs(30),
        Arc::new(SystemClock),
    )
    .await
    .expect("consumer");
    assert_eq!(
        drain(&consumer, Duration::from_millis(500)).await,
        3,
        "three messages settled"
    );
    assert_eq!(
        *handler.handled.lock().expect("lock"),
        vec![first.id, second.id],
        "each event handled exactly once"
    );
    assert!(
        store
            .is_processed("webhooks", first.id)
            .await
            .expect("processed")
    );
    // A second consumer keeps its own books.
    let other = Arc::new(Counting::default());
    let audit = Consumer::new(
        &bus,
        "audit",
        store.clone(),
        other.clone(),
        Vec::new(),
        Duration::from_secs(30),
        Arc::new(SystemClock),
    )
    .await
    .expect("consumer");
    drain(&audit, Duration::from_millis(500)).await;
    assert_eq!(other.handled.lock().expect("lock").len(), 2);
    bus.delete_stream().await.expect("remove the test stream");
}

#[tokio::test]
async fn a_poison_event_is_parked_after_the_last_retry_and_can_be_redriven() {
    let nats = keel_testdb::nats().await;
    let (_file, store) = store().await;
    let bus = bus(&nats.url).await;
    let poison = event("order.placed");
    bus.publish(&poison).await.expect("publish");
    let handler = Arc::new(Counting::default());
    handler.failing.store(true, Ordering::SeqCst);
    let schedule = vec![Duration::from_millis(50), Duration::from_millis(50)];
    let consumer = Consumer::new(
        &bus,
        "webhooks",
        store.clone(),
        handler.clone(),
        schedule,
        Duration::from_secs(30),
        Arc::new(SystemClock),
    )
    .await
    .expect("consumer");
    // Delivered, retried twice on the schedule, then parked: each fetch waits for the next
    // redelivery at most 2 s.
    let mut parked = Vec::new();
    for _ in 0..20 {
        consumer
            .run_once(10, Duration::from_secs(2))
            .await
            .expect("run");
        parked = store
            .dead_letters(Some(poison.tenant_id), PageRequest::default())
            .await
            .expect("letters")
            .items;
        if !parked.is_empty() {
            break;
        }
    }
    assert_eq!(parked.len(), 1, "parked after the last try");
    assert_eq!((parked[0].event.id, parked[0].attempts), (poison.id, 3));
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        3,
        "one delivery and exactly two retries"
    );
    assert_eq!(parked[0].error, "the receiving system is down");
    assert!(
        !store
            .is_processed("webhooks", poison.id)
            .await
            .expect("processed")
    );
    // The system is back: re-drive it, and it is handled once.
    handler.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        consumer.redrive(parked[0].id).await.expect("redrive"),
        poison.id
    );
    drain(&consumer, Duration::from_millis(500)).await;
    assert_eq!(*handler.handled.lock().expect("lock"), vec![poison.id]);
    assert!(
        store
            .dead_letters(Some(poison.tenant_id), PageRequest::default())
            .await
            .expect("letters")
            .items
            .is_empty()
    );
    assert!(
        consumer.redrive(parked[0].id).await.is_err(),
        "a letter is re-driven once"
    );
    bus.delete_stream().await.expect("remove the test stream");
}

/// Takes a message and never settles it: a node that dies mid-delivery.
struct Hanging {
    taken: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Handler for Hanging {
    async fn handle(&self, _: &RecordedEvent) -> Result<(), String> {
        self.taken.notify_one();
        std::future::pending().await
    }
}

/// Issue 25: a message a node took and never settled goes to another node after exactly the
/// consumer's ack wait (`KEEL_NATS__ACK_WAIT_S`), not before and not much after.
#[tokio::test]
async fn a_message_taken_by_a_dead_node_goes_to_another_after_exactly_the_ack_wait() {
    let nats = keel_testdb::nats().await;
    let (_file, store) = store().await;
    let bus = bus(&nats.url).await;
    let ack_wait = Duration::from_secs(2);
    let e = event("order.placed");
    bus.publish(&e).await.expect("publish");
    let hanging = Arc::new(Hanging {
        taken: tokio::sync::Notify::new(),
    });
    let dying = Consumer::new(
        &bus,
        "webhooks",
        store.clone(),
        hanging.clone(),
        Vec::new(),
        ack_wait,
        Arc::new(SystemClock),
    )
    .await
    .expect("consumer");
    let node = tokio::spawn(async move { dying.run_once(10, Duration::from_secs(5)).await });
    hanging.taken.notified().await;
    let taken = std::time::Instant::now();
    node.abort();
    let handler = Arc::new(Counting::default());
    let survivor = Consumer::new(
        &bus,
        "webhooks",
        store.clone(),
        handler.clone(),
        Vec::new(),
        ack_wait,
        Arc::new(SystemClock),
    )
    .await
    .expect("consumer");
    // Each fetch waits at most 5 s: the redelivery comes within one.
    let mut settled = 0;
    for _ in 0..3 {
        settled += survivor
            .run_once(10, Duration::from_secs(5))
            .await
            .expect("run");
        if settled > 0 {
            break;
        }
    }
    let after = taken.elapsed();
    assert_eq!(
        *handler.handled.lock().expect("lock"),
        vec![e.id],
        "delivered again, once"
    );
    assert!(after >= ack_wait, "not before the ack wait: {after:?}");
    assert!(
        after < ack_wait + Duration::from_secs(1),
        "within the ack wait and a second: {after:?}"
    );
    bus.delete_stream().await.expect("remove the test stream");
}
