//! The outbox relay: events not yet relayed become webhook messages (or go to a bus), and
//! relayed events are pruned.
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
    let marked = mark(e, &batch.events, now).await?;
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

/// PostgreSQL only (issue 25): relays the oldest events of shops that have no webhook
/// endpoint, at most `limit`, in one statement outside any transaction (locked, marked and
/// returned at once, so a relay on another node skips them), and says whether events of
/// shops with endpoints wait for the transactional relay. Most shops have no endpoint, and
/// a relay pass per commit was five statements where this is one. `fan_out` sees each event
/// with no endpoints (it writes no message; the node's realtime subscribers get the event).
pub async fn relay_quiet<E: Exec>(
    e: &mut E,
    limit: i64,
    now: OffsetDateTime,
    fan_out: &FanOut<'_>,
) -> Result<Quiet, StoreError> {
    debug_assert!(E::DIALECT == Dialect::Postgres, "PostgreSQL's relay only");
    let rows = e
        .all(
            "WITH batch AS ( \
                 SELECT o.tenant_id, o.id FROM outbox_events o \
                 WHERE o.relayed_at IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = o.tenant_id) \
                 ORDER BY o.occurred_at, o.id LIMIT $1 \
                 FOR UPDATE OF o SKIP LOCKED), \
             marked AS ( \
                 UPDATE outbox_events o SET relayed_at = $2 FROM batch b \
                 WHERE o.tenant_id = b.tenant_id AND o.id = b.id \
                 RETURNING o.tenant_id, o.id, o.event_type, o.payload, o.occurred_at) \
             SELECT tenant_id, id, event_type, payload, occurred_at, false AS more FROM marked \
             UNION ALL \
             SELECT NULL, NULL, NULL, NULL, NULL, EXISTS ( \
                 SELECT 1 FROM outbox_events o WHERE o.relayed_at IS NULL \
                   AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = o.tenant_id))",
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
            events.push(event_from_row(r)?);
        }
    }
    // Committed already (one statement): oldest first, as the transactional relay hands them.
    events.sort_by_key(|ev| (ev.occurred_at, ev.id.as_uuid()));
    for event in &events {
        let messages = fan_out(event, &[]);
        debug_assert!(messages.is_empty(), "no endpoint, no message");
    }
    quiet.relayed = events.len();
    Ok(quiet)
}

/// Marks `events` relayed, in one statement whatever their number.
pub async fn mark_relayed<E: Exec>(
    e: &mut E,
    events: &[RecordedEvent],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    mark(e, events, now).await?;
    Ok(())
}

/// Marks `events` relayed; answers the keys of those it marked.
async fn mark<E: Exec>(
    e: &mut E,
    events: &[RecordedEvent],
    now: OffsetDateTime,
) -> Result<HashSet<(Uuid, Uuid)>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    match E::DIALECT {
        // The events were read locked in this transaction: every one is marked, and none need
        // come back. The keys are bound arrays: one round trip whatever the batch size.
        Dialect::Postgres => {
            let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = events.iter().map(key).unzip();
            e.run(
                "UPDATE outbox_events o SET relayed_at = $3 \
                 FROM unnest($1, $2) AS r (tenant_id, id) \
                 WHERE o.tenant_id = r.tenant_id AND o.id = r.id",
                args![&tenants, &ids, now],
            )
            .await?;
            Ok(events.iter().map(key).collect())
        }
        // The events were read outside the write lock: the mark is conditional and answers
        // what it marked. One statement, the keys as a JSON list of hex pairs (the relay
        // holds the writer meanwhile, so one statement per event would hold every request's
        // write behind it for longer).
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
            let rows = e
                .all(
                    "UPDATE outbox_events SET relayed_at = $1 WHERE relayed_at IS NULL \
                     AND (tenant_id, id) IN (SELECT unhex(json_extract(value, '$[0]')), \
                     unhex(json_extract(value, '$[1]')) FROM json_each($2)) \
                     RETURNING tenant_id, id",
                    args![now, &keys],
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
