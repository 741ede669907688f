//! The outbox relay: events not yet relayed become webhook messages (or go to a bus), and
//! relayed events are pruned.
//!
//! Every relay numbers what it relays (`relay_seq`) after the one relay position, which it
//! holds until it commits, so numbers follow commit order; live subscribers get events in
//! number order and a stream's resume reads by number (ADR 0041).
//!
//! On PostgreSQL one transaction reads the events locked (`FOR UPDATE SKIP LOCKED`: relays on
//! other nodes take other events), writes their messages and marks them. On SQLite the adapter
//! reads them on a reader, outside the single writer's lock, and hands them to a write
//! transaction that marks them conditionally and fans out only the ones it marked.

use std::collections::{HashMap, HashSet, hash_map::Entry};

use keel_kernel::{StoreError, TenantId, event::RecordedEvent};
use keel_webhooks::{domain::Endpoint, ports::FanOut};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{insert_message, webhook_endpoints_of};
use crate::{
    args,
    exec::{Dialect, Exec, decode, pick},
    rows::{ReadRow, events::event_from_row},
};

/// Events to relay and their shops' enabled webhook endpoints, read together.
#[derive(Debug)]
pub struct Batch {
    events: Vec<RecordedEvent>,
    endpoints: HashMap<TenantId, Vec<Endpoint>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// An event's key, as the outbox stores it.
fn key(event: &RecordedEvent) -> (Uuid, Uuid) {
    (event.tenant_id.as_uuid(), event.id.as_uuid())
}

/// The oldest events not relayed yet, at most `limit`. On PostgreSQL they stay locked until
/// the transaction ends, and events another relay holds are skipped.
pub async fn unrelayed<E: Exec>(e: &mut E, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = e
        .all(
            pg_lock!(
                E,
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE relayed_at IS NULL ORDER BY occurred_at, id LIMIT $1",
                " FOR UPDATE SKIP LOCKED"
            ),
            args![limit],
        )
        .await?;
    decode(&rows, event_from_row)
}

/// The oldest events not relayed yet (see [`unrelayed`]) and their shops' endpoints.
pub async fn read_batch<E: Exec>(e: &mut E, limit: i64) -> Result<Batch, StoreError> {
    let events = unrelayed(e, limit).await?;
    let mut endpoints: HashMap<TenantId, Vec<Endpoint>> = HashMap::new();
    for event in &events {
        if let Entry::Vacant(slot) = endpoints.entry(event.tenant_id) {
            slot.insert(webhook_endpoints_of(e, event.tenant_id).await?);
        }
    }
    Ok(Batch { events, endpoints })
}

/// Marks the batch's events relayed and writes the messages of those it marked (only those
/// fan out, so an event is relayed once even if two relays read it); answers how many events.
pub async fn write_batch<E: Exec>(
    e: &mut E,
    batch: &Batch,
    now: OffsetDateTime,
    fan_out: &FanOut<'_>,
) -> Result<usize, StoreError> {
    let marked = mark(e, &batch.events, now, Then::Node).await?;
    for event in batch.events.iter().filter(|ev| marked.contains(&key(ev))) {
        let mine = batch
            .endpoints
            .get(&event.tenant_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for m in fan_out(event, mine) {
            insert_message(e, &m).await?;
        }
    }
    Ok(marked.len())
}

/// Relays up to `limit` events in the caller's transaction (PostgreSQL's relay: one
/// transaction from the read to the mark).
pub async fn relay<E: Exec>(
    e: &mut E,
    limit: i64,
    now: OffsetDateTime,
    fan_out: &FanOut<'_>,
) -> Result<usize, StoreError> {
    let batch = read_batch(e, limit).await?;
    write_batch(e, &batch, now, fan_out).await
}

/// What [`relay_quiet`] did.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// Events it relayed.
    pub relayed: usize,
    /// Whether events of shops with webhook endpoints wait (for [`relay`]'s transaction).
    pub more: bool,
}

/// PostgreSQL's one-statement relay (issue 25), up to `marked`: at most `$1` unrelayed
/// events that `$filter` admits, oldest first, locked (`FOR UPDATE SKIP LOCKED`: a relay on
/// another node takes others), numbered after the relay position, with `relayed_at` set to
/// `$relayed` (`$2` where the relay hands them on itself; left unset where a bus publishes
/// them, so that they stay unrelayed until they are out).
/// The position row stays locked until the statement commits, so numbers are handed out in
/// commit order: what a later relay numbers commits later (a resume after an event's number
/// misses nothing committed before it). `$published` is the position's new `published`: the
/// new `assigned` where the node's own subscribers get the events once this commits, the old
/// value where a bus publishes them afterwards ([`to_publish`]).
macro_rules! pg_numbered {
    ($filter:literal, $published:literal, $relayed:literal) => {
        concat!(
            "WITH batch AS ( \
                 SELECT o.tenant_id, o.id, o.occurred_at FROM outbox_events o \
                 WHERE o.relayed_at IS NULL ",
            $filter,
            " ORDER BY o.occurred_at, o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED), \
             numbered AS ( \
                 SELECT tenant_id, id, row_number() OVER (ORDER BY occurred_at, id) AS n FROM batch), \
             pos AS ( \
                 UPDATE relay_position SET assigned = assigned + (SELECT count(*) FROM numbered), \
                 published = ",
            $published,
            " WHERE id = 1 AND EXISTS (SELECT 1 FROM numbered) \
                 RETURNING assigned - (SELECT count(*) FROM numbered) AS base), \
             marked AS ( \
                 UPDATE outbox_events o SET relayed_at = ",
            $relayed,
            ", relay_seq = pos.base + nb.n \
                 FROM numbered nb, pos WHERE o.tenant_id = nb.tenant_id AND o.id = nb.id \
                 RETURNING o.tenant_id, o.id, o.event_type, o.payload, o.occurred_at, o.relay_seq) "
        )
    };
}

/// PostgreSQL only (issue 25): relays the oldest events of shops that have no webhook
/// endpoint, at most `limit`, in one statement outside any transaction (locked, numbered,
/// marked and returned at once), and says whether events of shops with endpoints wait for
/// the transactional relay. Most shops have no endpoint, and a relay pass per commit was five
/// statements where this is one. `fan_out` sees each event with no endpoints, in number order
/// (it writes no message; the node's realtime subscribers get the event).
pub async fn relay_quiet<E: Exec>(
    e: &mut E,
    limit: i64,
    now: OffsetDateTime,
    fan_out: &FanOut<'_>,
) -> Result<Quiet, StoreError> {
    debug_assert!(E::DIALECT == Dialect::Postgres, "PostgreSQL's relay only");
    let rows = e
        .all(
            concat!(
                pg_numbered!(
                    "AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = o.tenant_id)",
                    "assigned + (SELECT count(*) FROM numbered)",
                    "$2"
                ),
                "SELECT tenant_id, id, event_type, payload, occurred_at, relay_seq, false AS more \
                 FROM marked \
                 UNION ALL \
                 SELECT NULL, NULL, NULL, NULL, NULL, NULL, EXISTS ( \
                     SELECT 1 FROM outbox_events o WHERE o.relayed_at IS NULL \
                     AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = o.tenant_id))"
            ),
            args![limit, now],
        )
        .await?;
    let mut quiet = Quiet {
        relayed: 0,
        more: false,
    };
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.opt_uuid("tenant_id")?.is_none() {
            quiet.more = r.flag("more")?;
        } else {
            events.push((r.int("relay_seq")?, event_from_row(r)?));
        }
    }
    // Committed already (one statement): in number order, the order subscribers must see.
    events.sort_by_key(|(seq, _)| *seq);
    for (_, event) in &events {
        let messages = fan_out(event, &[]);
        debug_assert!(messages.is_empty(), "no endpoint, no message");
    }
    quiet.relayed = events.len();
    Ok(quiet)
}

/// What [`number`] did.
#[derive(Debug, Clone, Copy)]
pub struct Numbered {
    /// Events it numbered (relayed to the bus's queue).
    pub relayed: usize,
    /// Whether numbered events wait to be published ([`to_publish`]).
    pub pending: bool,
}

/// The relay with a bus, first step on PostgreSQL: numbers up to `limit` events in commit
/// order, in one statement. They stay unrelayed until they are published, in number order
/// ([`to_publish`], [`published`]): a number is committed before its event reaches any
/// subscriber, so a resume read after that finds it; and an event whose publication never
/// came (the bus turned off meanwhile) is still there for the relay without a bus, which
/// numbers it again (no subscriber saw the first number).
pub async fn number<E: Exec>(e: &mut E, limit: i64) -> Result<Numbered, StoreError> {
    debug_assert!(E::DIALECT == Dialect::Postgres, "PostgreSQL's relay only");
    let row = e
        .one(
            concat!(
                pg_numbered!("AND o.relay_seq IS NULL", "published", "NULL"),
                "SELECT count(*) AS relayed, \
                 (SELECT assigned > published FROM relay_position WHERE id = 1) AS waiting \
                 FROM marked"
            ),
            args![limit],
        )
        .await?;
    let relayed = usize::try_from(row.int("relayed")?).unwrap_or(0);
    Ok(Numbered {
        relayed,
        // Read before this statement's own numbers: those wait too.
        pending: relayed > 0 || row.flag("waiting")?,
    })
}

/// Numbered events not yet on the bus, in number order, at most `limit`. On PostgreSQL the
/// position row stays locked until the caller's transaction ends: one node publishes at a
/// time, so the bus holds the events in number order (a publisher that died mid-way is
/// followed by one that publishes the same events again first; the bus drops the repeats).
/// `hold_ms` bounds how long the transaction may then sit idle (publishing): a publisher that
/// froze loses its transaction, and with it the position, after exactly that long.
pub async fn to_publish<E: Exec>(
    e: &mut E,
    limit: i64,
    hold_ms: i64,
) -> Result<Vec<(i64, RecordedEvent)>, StoreError> {
    let rows = e
        .all(
            pick::<E>(
                // set_config in the position's read: the bound without a round trip of its own.
                "SELECT tenant_id, id, event_type, payload, occurred_at, relay_seq FROM outbox_events \
                 WHERE relayed_at IS NULL AND relay_seq > (SELECT published FROM relay_position WHERE id = 1 \
                     AND set_config('idle_in_transaction_session_timeout', $2::bigint::text, true) IS NOT NULL \
                     FOR UPDATE) \
                 ORDER BY relay_seq LIMIT $1",
                "SELECT tenant_id, id, event_type, payload, occurred_at, relay_seq FROM outbox_events \
                 WHERE relayed_at IS NULL AND relay_seq > (SELECT published FROM relay_position WHERE id = 1) \
                 AND $2 IS NOT NULL ORDER BY relay_seq LIMIT $1",
            ),
            args![limit, hold_ms],
        )
        .await?;
    decode(&rows, |r| Ok((r.int("relay_seq")?, event_from_row(r)?)))
}

/// Records that the events numbered `from..=to` are on the bus: relayed at `now`, and the
/// position's `published` moved to `to`.
pub async fn published<E: Exec>(
    e: &mut E,
    from: i64,
    to: i64,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    match E::DIALECT {
        Dialect::Postgres => {
            e.run(
                "WITH pos AS (UPDATE relay_position SET published = $2 WHERE id = 1 AND published < $2) \
                 UPDATE outbox_events SET relayed_at = $3 \
                 WHERE relay_seq >= $1 AND relay_seq <= $2 AND relayed_at IS NULL",
                args![from, to, now],
            )
            .await?;
        }
        Dialect::Sqlite => {
            e.run(
                "UPDATE relay_position SET published = $1 WHERE id = 1 AND published < $1",
                args![to],
            )
            .await?;
            e.run(
                "UPDATE outbox_events SET relayed_at = $3 \
                 WHERE relay_seq >= $1 AND relay_seq <= $2 AND relayed_at IS NULL",
                args![from, to, now],
            )
            .await?;
        }
    }
    Ok(())
}

/// Publishes `events` in their order until one fails or `hold` has passed; answers the
/// number of the last one that went out, and the failure.
pub async fn publish_in_order(
    events: &[(i64, RecordedEvent)],
    publisher: &dyn keel_kernel::bus::EventPublisher,
    hold: std::time::Duration,
) -> (Option<i64>, Option<String>) {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + hold;
    for (seq, event) in events {
        match tokio::time::timeout_at(deadline, publisher.publish(event)).await {
            Ok(Ok(())) => last = Some(*seq),
            Ok(Err(err)) => return (last, Some(err)),
            Err(_) => {
                return (
                    last,
                    Some(format!(
                        "publishing took longer than the {} ms a publisher may hold the relay position",
                        hold.as_millis()
                    )),
                );
            }
        }
    }
    (last, None)
}

/// SQLite's relay with a bus, first step: numbers `events` (read outside the writer's lock;
/// the numbering is conditional), leaving them unrelayed for [`to_publish`].
pub async fn number_for_bus<E: Exec>(
    e: &mut E,
    events: &[RecordedEvent],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    Ok(mark(e, events, now, Then::Bus).await?.len())
}

/// Who hands the events on once the relay commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The node itself, to its subscribers: the position's `published` moves with `assigned`.
    Node,
    /// A bus, published afterwards in number order ([`to_publish`]).
    Bus,
}

/// Numbers and marks `events` relayed, in their order after the relay position; answers the
/// keys of those it marked.
async fn mark<E: Exec>(
    e: &mut E,
    events: &[RecordedEvent],
    now: OffsetDateTime,
    then: Then,
) -> Result<HashSet<(Uuid, Uuid)>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let count = i64::try_from(events.len()).map_err(StoreError::other)?;
    let on_bus = then == Then::Bus;
    match E::DIALECT {
        // The events were read locked in this transaction: every one is marked, and none need
        // come back. The keys are bound arrays: one round trip whatever the batch size. The
        // position row stays locked until the transaction commits (numbers in commit order).
        Dialect::Postgres => {
            // PostgreSQL's relay with a bus numbers in one statement of its own ([`number`]).
            debug_assert!(!on_bus, "PostgreSQL numbers for the bus in `number`");
            let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = events.iter().map(key).unzip();
            e.run(
                "WITH pos AS ( \
                     UPDATE relay_position SET assigned = assigned + $4, published = assigned + $4 \
                     WHERE id = 1 RETURNING assigned - $4 AS base) \
                 UPDATE outbox_events o SET relayed_at = $3, relay_seq = pos.base + r.n \
                 FROM pos, unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r (tenant_id, id, n) \
                 WHERE o.tenant_id = r.tenant_id AND o.id = r.id",
                args![&tenants, &ids, now, count],
            )
            .await?;
            Ok(events.iter().map(key).collect())
        }
        // The events were read outside the write lock: the mark is conditional and answers
        // what it marked. One statement, the keys as a JSON list of hex pairs (the relay
        // holds the writer meanwhile, so one statement per event would hold every request's
        // write behind it for longer). The single writer orders the numbers.
        Dialect::Sqlite => {
            let keys = serde_json::Value::from(
                events
                    .iter()
                    .map(|ev| {
                        vec![
                            ev.tenant_id.as_uuid().simple().to_string(),
                            ev.id.as_uuid().simple().to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            )
            .to_string();
            // With a bus only the number is set (the events stay unrelayed until published),
            // and an event already numbered waits for its publication.
            let rows = e
                .all(
                    if on_bus {
                        "UPDATE outbox_events SET \
                         relay_seq = (SELECT assigned FROM relay_position WHERE id = 1) + j.key + 1 \
                         FROM (SELECT key, unhex(json_extract(value, '$[0]')) AS t, \
                               unhex(json_extract(value, '$[1]')) AS i FROM json_each($2)) AS j \
                         WHERE outbox_events.relayed_at IS NULL AND outbox_events.relay_seq IS NULL \
                         AND outbox_events.tenant_id = j.t AND outbox_events.id = j.i AND $1 IS NOT NULL \
                         RETURNING tenant_id, id"
                    } else {
                        "UPDATE outbox_events SET relayed_at = $1, \
                         relay_seq = (SELECT assigned FROM relay_position WHERE id = 1) + j.key + 1 \
                         FROM (SELECT key, unhex(json_extract(value, '$[0]')) AS t, \
                               unhex(json_extract(value, '$[1]')) AS i FROM json_each($2)) AS j \
                         WHERE outbox_events.relayed_at IS NULL \
                         AND outbox_events.tenant_id = j.t AND outbox_events.id = j.i \
                         RETURNING tenant_id, id"
                    },
                    args![now, &keys],
                )
                .await?;
            e.run(
                "UPDATE relay_position SET assigned = assigned + $1, \
                 published = CASE WHEN $2 THEN published ELSE assigned + $1 END WHERE id = 1",
                args![count, on_bus],
            )
            .await?;
            let marked = decode(&rows, |r| Ok((r.uuid("tenant_id")?, r.uuid("id")?)))?;
            Ok(marked.into_iter().collect())
        }
    }
}

/// Deletes up to `limit` relayed events that occurred before `before`, and as many records of
/// processed events; answers how many rows went. PostgreSQL deletes by key and skips rows
/// another node's prune holds; SQLite by `rowid`, its shortest way to a row.
pub async fn prune_events<E: Exec>(
    e: &mut E,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, StoreError> {
    let mut gone = 0;
    for sql in [
        pick::<E>(
            "DELETE FROM outbox_events WHERE (tenant_id, id) IN (SELECT tenant_id, id \
             FROM outbox_events WHERE relayed_at IS NOT NULL AND occurred_at < $1 LIMIT $2 \
             FOR UPDATE SKIP LOCKED)",
            "DELETE FROM outbox_events WHERE rowid IN (SELECT rowid FROM outbox_events \
             WHERE relayed_at IS NOT NULL AND occurred_at < $1 LIMIT $2)",
        ),
        pick::<E>(
            "DELETE FROM processed_events WHERE (consumer, event_id) IN (SELECT consumer, \
             event_id FROM processed_events WHERE processed_at < $1 LIMIT $2 \
             FOR UPDATE SKIP LOCKED)",
            "DELETE FROM processed_events WHERE rowid IN (SELECT rowid FROM processed_events \
             WHERE processed_at < $1 LIMIT $2)",
        ),
    ] {
        gone += e.run(sql, args![before, limit]).await?;
    }
    Ok(gone)
}

/// Writes the messages of one event received from a bus; answers how many were new.
pub async fn accept_event<E: Exec>(
    e: &mut E,
    event: &RecordedEvent,
    fan_out: &FanOut<'_>,
) -> Result<usize, StoreError> {
    let endpoints = webhook_endpoints_of(e, event.tenant_id).await?;
    let mut added = 0;
    for m in fan_out(event, &endpoints) {
        added += insert_message(e, &m).await?;
    }
    Ok(added)
}
