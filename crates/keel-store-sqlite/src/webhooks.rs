//! Webhook endpoints, messages, attempts and the outbox relay on SQLite.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use keel_webhooks::{
    domain::{
        Attempt, Channel, DeliveryPolicy, Endpoint, EndpointId, Message, MessageId, fair_claims,
    },
    ports::{AttemptOutcome, ENDPOINT_LIMIT, FanOut, Refill, VERSION_CONFLICT, WebhookStore},
};
use time::OffsetDateTime;

use crate::db::{self};
use crate::{
    SqliteStore,
    error::map_err,
    tenants::{event_from_row, insert_events},
    to_micros,
};
use keel_store_common::rows::webhooks::{attempt_from_row, endpoint_from_row, message_from_row};

/// The endpoint columns every read takes, in `endpoint_from_row`'s terms (a macro so that
/// statements are joined at compile time, never formatted at run time).
macro_rules! endpoint_cols {
    () => {
        "tenant_id, id, channel, url, description, event_types, enabled, disabled_reason, secrets, \
         failing_since, consecutive_failures, paused_until, created_at, updated_at, version"
    };
}

/// The message columns every read takes.
macro_rules! message_cols {
    () => {
        "tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, \
         next_attempt_at, created_at"
    };
}

fn write_endpoint(
    tx: &rusqlite::Connection,
    e: &Endpoint,
    expected: Option<i64>,
) -> Result<bool, StoreError> {
    let types = serde_json::to_string(&e.event_types).map_err(StoreError::other)?;
    let secrets = serde_json::to_string(&e.secrets).map_err(StoreError::other)?;
    // An update writes the endpoint as read and changed (as for `failing_since`): a failure
    // counted meanwhile may be lost, which at worst gives a changed endpoint a fresh start.
    let sql = if expected.is_none() {
        "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version, channel, consecutive_failures, paused_until) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    } else {
        "UPDATE webhook_endpoints SET url = ?3, description = ?4, event_types = ?5, enabled = ?6, disabled_reason = ?7, secrets = ?8, \
         failing_since = ?9, created_at = ?10, updated_at = ?11, version = ?12, \
         consecutive_failures = ?14, paused_until = ?15 \
         WHERE tenant_id = ?1 AND id = ?2 AND version = ?16 AND channel = ?13"
    };
    let mut q = db::query(sql)
        .bind(e.tenant_id.as_uuid())
        .bind(e.id.as_uuid())
        .bind(&e.url)
        .bind(&e.description)
        .bind(types)
        .bind(e.enabled)
        .bind(e.disabled_reason.as_deref())
        .bind(secrets)
        .bind(e.failing_since.map(to_micros).transpose()?)
        .bind(to_micros(e.created_at)?)
        .bind(to_micros(e.updated_at)?)
        .bind(e.version)
        .bind(e.channel.as_str())
        .bind(e.consecutive_failures)
        .bind(e.paused_until.map(to_micros).transpose()?);
    if let Some(v) = expected {
        q = q.bind(v);
    }
    Ok(q.execute(tx)?.rows_affected() == 1)
}

/// Runs `work` in a write transaction with the events; rolls back on its error.
macro_rules! in_write {
    ($self:ident, $events:expr, |$tx:ident| $work:expr) => {{
        let mut $tx = $self.write().await?;
        match $work {
            Ok(value) => {
                insert_events(&mut $tx, $events)?;
                $tx.commit().await.map_err(map_err)?;
                Ok(value)
            }
            Err(e) => {
                $tx.rollback().map_err(map_err)?;
                Err(e)
            }
        }
    }};
}

/// The enabled endpoints with something due (their id pairs), the one whose oldest due
/// message waited longest first. Pending messages are found by skipping through
/// `webhook_messages_pending` one endpoint at a time (a recursive probe of the next
/// `(shop, endpoint)` after the last), so a claim reads one index entry per endpoint with
/// pending messages, whatever their backlogs and however many endpoints have none; lapsed
/// claims come from the index of deliveries in flight.
const WAITING_ENDPOINTS: &str = "WITH RECURSIVE pending(tenant_id, endpoint_id, due_at) AS ( \
       SELECT * FROM (SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages INDEXED BY webhook_messages_pending \
         WHERE status = 'pending' ORDER BY tenant_id, endpoint_id, next_attempt_at LIMIT 1) \
       UNION ALL \
       SELECT m.tenant_id, m.endpoint_id, m.next_attempt_at FROM pending p JOIN webhook_messages m ON m.rowid = ( \
         SELECT x.rowid FROM webhook_messages x INDEXED BY webhook_messages_pending \
         WHERE x.status = 'pending' AND (x.tenant_id, x.endpoint_id) > (p.tenant_id, p.endpoint_id) \
         ORDER BY x.tenant_id, x.endpoint_id, x.next_attempt_at LIMIT 1)), \
     due AS ( \
       SELECT tenant_id, endpoint_id, due_at FROM pending WHERE due_at <= ?1 \
       UNION ALL SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages INDEXED BY webhook_messages_in_flight \
         WHERE status = 'delivering' AND locked_until <= ?1) \
     SELECT e.tenant_id, e.id FROM due d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
     WHERE e.enabled = 1 AND (e.paused_until IS NULL OR e.paused_until <= ?1) \
     GROUP BY e.tenant_id, e.id ORDER BY min(d.due_at), e.id";

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(
        &self,
        e: &Endpoint,
        max: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        // One writer: the count and the insert see every other creation.
        in_write!(self, events, |tx| {
            let have: i64 = db::query(
                "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = ?1 AND channel = ?2",
            )
            .bind(e.tenant_id.as_uuid())
            .bind(e.channel.as_str())
            .scalar(&tx)?;
            if have >= max {
                Err(StoreError::Conflict {
                    constraint: ENDPOINT_LIMIT.into(),
                })
            } else {
                write_endpoint(&tx, e, None).map(|_| ())
            }
        })
    }

    async fn get_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
    ) -> Result<Endpoint, StoreError> {
        let r = self.read(|c| {
            db::query(concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2 AND channel = ?3"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(channel.as_str())
            .fetch_one(c)
        })?;
        endpoint_from_row(&r)
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        channel: Channel,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        let rows = self.read(|c| {
            db::query(concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = ?1 AND channel = ?4 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
            ))
            .bind(tenant.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .bind(channel.as_str())
            .fetch_all(c)
        })?;
        let items = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |e| e.id.as_uuid()))
    }

    async fn update_endpoint(
        &self,
        e: &Endpoint,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            if write_endpoint(&tx, e, Some(expected_version))? {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    constraint: VERSION_CONFLICT.into(),
                })
            }
        })
    }

    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            let exists: i64 = db::query(
                "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2 AND channel = ?3",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(channel.as_str())
            .scalar(&tx)?;
            if exists != 1 {
                return Err(StoreError::NotFound);
            }
            for sql in [
                "DELETE FROM webhook_attempts WHERE tenant_id = ?1 AND endpoint_id = ?2",
                "DELETE FROM webhook_messages WHERE tenant_id = ?1 AND endpoint_id = ?2",
                "DELETE FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2",
            ] {
                db::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&tx)?;
            }
            Ok(())
        })
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        let rows = self.read(|c| {
            db::query(concat!(
                "SELECT ",
                message_cols!(),
                " FROM webhook_messages WHERE tenant_id = ?1 AND endpoint_id = ?2 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))
            .bind(tenant.as_uuid())
            .bind(endpoint.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c)
        })?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |m| m.id.as_uuid()))
    }

    async fn get_message(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: MessageId,
    ) -> Result<Message, StoreError> {
        let r = self.read(|c| {
            db::query(concat!(
                "SELECT ",
                message_cols!(),
                " FROM webhook_messages m WHERE tenant_id = ?1 AND id = ?2 AND EXISTS \
                 (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = m.tenant_id AND e.id = m.endpoint_id AND e.channel = ?3)"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(channel.as_str())
            .fetch_one(c)
        })?;
        message_from_row(&r)
    }

    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError> {
        let rows = self.read(|c| db::query("SELECT tenant_id, id, message_id, endpoint_id, attempted_at, status_code, latency_ms, error, response_body FROM webhook_attempts WHERE tenant_id = ?1 AND message_id = ?2 AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4")
            .bind(tenant.as_uuid())
            .bind(message.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c))?;
        let items = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |a| a.id.as_uuid()))
    }

    async fn replay_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            // Webhook messages only: an account notification's body is gone once it is done.
            let webhook: i64 = db::query(
                "SELECT count(*) FROM webhook_messages m JOIN webhook_endpoints e ON e.tenant_id = m.tenant_id AND e.id = m.endpoint_id \
                 WHERE m.tenant_id = ?1 AND m.id = ?2 AND e.channel = 'webhook'",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .scalar(&tx)?;
            if webhook != 1 {
                return Err(StoreError::NotFound);
            }
            // A message still pending or delivering is already queued: nothing to do.
            db::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?3, locked_until = NULL WHERE tenant_id = ?1 AND id = ?2 AND status IN ('delivered', 'failed')")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(to_micros(now)?)
                .execute(&tx)?;
            Ok(())
        })
    }

    async fn replay_failed_since(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        since: OffsetDateTime,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<u64, StoreError> {
        in_write!(self, events, |tx| {
            db::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?4, locked_until = NULL WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'failed' AND created_at >= ?3 \
                 AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = ?1 AND e.id = ?2 AND e.channel = 'webhook')")
                .bind(tenant.as_uuid())
                .bind(endpoint.as_uuid())
                .bind(to_micros(since)?)
                .bind(to_micros(now)?)
                .execute(&tx)
                .map(super::db::Done::rows_affected)
                .map_err(map_err)
        })
    }

    async fn relay(
        &self,
        limit: i64,
        now: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        // The events and their shops' endpoints are read outside the write lock, so the single
        // writer is held only for the mark and the messages, and not at all when nothing
        // waits (the relay is woken after every write). The mark is conditional and answers
        // the events it marked: only those fan out, so an event is relayed once even if two
        // relays read it.
        let (events, endpoints) = self.read(|c| {
            let events = db::query("SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events WHERE relayed_at IS NULL ORDER BY occurred_at, id LIMIT ?1")
                .bind(limit)
                .fetch_all(c)?
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let mut endpoints: HashMap<TenantId, Vec<Endpoint>> = HashMap::new();
            for e in &events {
                if let std::collections::hash_map::Entry::Vacant(slot) = endpoints.entry(e.tenant_id) {
                    slot.insert(webhook_endpoints_of(c, e.tenant_id)?);
                }
            }
            Ok((events, endpoints))
        })?;
        if events.is_empty() {
            return Ok(0);
        }
        let tx = self.write().await?;
        let marked = mark_relayed(&tx, &events, now)?;
        for e in events
            .iter()
            .filter(|e| marked.contains(&(e.tenant_id.as_uuid(), e.id.as_uuid())))
        {
            let mine = endpoints
                .get(&e.tenant_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for m in fan_out(e, mine) {
                insert_message(&tx, &m)?;
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(marked.len())
    }

    async fn relay_via(
        &self,
        limit: i64,
        now: OffsetDateTime,
        publisher: &dyn keel_kernel::bus::EventPublisher,
    ) -> Result<usize, StoreError> {
        // One process owns an embedded database, so one relay reads it: publish outside the
        // write lock (a slow bus must not stall every request's commit), then mark what went
        // out. A crash in between publishes again; the bus drops the repeat by its id.
        let rows = self.read(|c| db::query("SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events WHERE relayed_at IS NULL ORDER BY occurred_at, id LIMIT ?1")
            .bind(limit)
            .fetch_all(c))?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut sent = 0;
        let mut failure = None;
        for e in &events {
            if let Err(err) = publisher.publish(e).await {
                failure = Some(err);
                break;
            }
            sent += 1;
        }
        let tx = self.write().await?;
        mark_relayed(&tx, &events[..sent], now)?;
        tx.commit().await.map_err(map_err)?;
        match failure {
            Some(err) => Err(StoreError::unavailable(std::io::Error::other(err))),
            None => Ok(sent),
        }
    }

    async fn prune_events(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let mut gone = 0;
        for q in [
            "DELETE FROM outbox_events WHERE rowid IN (SELECT rowid FROM outbox_events WHERE relayed_at IS NOT NULL AND occurred_at < ?1 LIMIT ?2)",
            "DELETE FROM processed_events WHERE rowid IN (SELECT rowid FROM processed_events WHERE processed_at < ?1 LIMIT ?2)",
        ] {
            gone += db::query(q)
                .bind(to_micros(before)?)
                .bind(limit)
                .execute(&tx)?
                .rows_affected();
        }
        tx.commit().await.map_err(map_err)?;
        Ok(gone)
    }

    async fn accept_event(
        &self,
        event: &keel_kernel::event::RecordedEvent,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        let tx = self.write().await?;
        let endpoints = webhook_endpoints_of(&tx, event.tenant_id)?;
        let mut added = 0;
        for m in fan_out(event, &endpoints) {
            added += insert_message(&tx, &m)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(added)
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
        lock_until: OffsetDateTime,
        policy: &DeliveryPolicy,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError> {
        let cap = usize::try_from(limit).unwrap_or(0);
        let now_us = to_micros(now)?;
        // Which endpoints have something due, the one waiting longest first, is read outside
        // the write lock (one writer); everything is read again under it.
        let waiting = self.read(|c| {
            db::query(WAITING_ENDPOINTS)
                .bind(now_us)
                .fetch_all(c)?
                .iter()
                .map(|r| Ok((r.at::<uuid::Uuid>(0)?, r.at::<uuid::Uuid>(1)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        if waiting.is_empty() || cap == 0 {
            return Ok(Vec::new());
        }
        let tx = self.write().await?;
        // In that order, the endpoints that get a delivery in the claim's first round (at
        // most `cap`); the fair round robin then shares the rest out among them.
        let mut candidates = Vec::new();
        let mut shop_room: HashMap<TenantId, i64> = HashMap::new();
        let mut shop_left: HashMap<TenantId, i64> = HashMap::new();
        for (tenant, id) in waiting {
            if candidates.len() >= cap {
                break;
            }
            let tenant = TenantId::from_uuid(tenant);
            if let std::collections::hash_map::Entry::Vacant(slot) = shop_room.entry(tenant) {
                let room = policy.shop_max_in_flight - shop_busy(&tx, tenant, now_us)?;
                slot.insert(room);
                shop_left.insert(tenant, room);
            }
            let left = shop_left.entry(tenant).or_insert(0);
            if *left <= 0 {
                continue;
            }
            // The endpoint as it is now (a circuit may have opened since the read above).
            let Some(e) = db::query(concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2 AND enabled = 1"
            ))
            .bind(tenant.as_uuid())
            .bind(id)
            .fetch_optional(&tx)?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()?
            else {
                continue;
            };
            let free = e.slots(policy, now) - busy(&tx, &e, now_us)?;
            if free > 0 {
                let due = due_of(&tx, &e, now_us, free)?;
                if !due.is_empty() {
                    *left -= 1;
                    candidates.push((e, due));
                }
            }
        }
        let claimed = fair_claims(candidates, shop_room, cap);
        for (m, _) in &claimed {
            claim(&tx, m, lock_until)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        a: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
        refill: Option<Refill<'_>>,
    ) -> Result<Option<(Message, Endpoint)>, StoreError> {
        in_write!(self, events, |tx| {
            db::query("INSERT INTO webhook_attempts (tenant_id, id, message_id, endpoint_id, attempted_at, status_code, latency_ms, error, response_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
                .bind(a.tenant_id.as_uuid())
                .bind(a.id.as_uuid())
                .bind(a.message_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(to_micros(a.attempted_at)?)
                .bind(a.status_code.map(i64::from))
                .bind(a.latency_ms)
                .bind(a.error.as_deref())
                .bind(a.response_body.as_deref())
                .execute(&tx)?;
            db::query("UPDATE webhook_messages SET status = ?3, attempts = attempts + 1, next_attempt_at = ?4, locked_until = NULL, \
                 body = CASE WHEN ?5 THEN '' ELSE body END WHERE tenant_id = ?1 AND id = ?2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.message_id.as_uuid())
                .bind(outcome.status.as_str())
                .bind(to_micros(outcome.next_attempt_at)?)
                .bind(outcome.drop_body)
                .execute(&tx)?;
            // The circuit counts in the row, so concurrent attempts of one endpoint add up.
            db::query("UPDATE webhook_endpoints SET failing_since = CASE WHEN ?3 THEN NULL ELSE COALESCE(failing_since, ?4) END, \
                 consecutive_failures = CASE WHEN ?3 THEN 0 ELSE consecutive_failures + 1 END, \
                 paused_until = CASE WHEN ?3 THEN NULL WHEN consecutive_failures + 1 >= ?6 THEN ?7 ELSE paused_until END, \
                 enabled = CASE WHEN ?5 IS NULL THEN enabled ELSE 0 END, disabled_reason = COALESCE(?5, disabled_reason), \
                 version = CASE WHEN ?5 IS NULL THEN version ELSE version + 1 END WHERE tenant_id = ?1 AND id = ?2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(outcome.endpoint_ok)
                .bind(to_micros(a.attempted_at)?)
                .bind(outcome.disable.as_deref())
                .bind(outcome.circuit_failures)
                .bind(to_micros(outcome.open_until)?)
                .execute(&tx)?;
            match refill {
                Some(r) => next_of_endpoint(&tx, a.tenant_id, a.endpoint_id, r),
                None => Ok(None),
            }
        })
    }

    async fn abandon_pending(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE webhook_messages SET status = 'failed', body = '', next_attempt_at = ?3, locked_until = NULL \
             WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(endpoint.as_uuid())
        .bind(to_micros(at)?)
        .execute(&tx)?
        .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(done)
    }

    async fn prune_messages(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let gone: Vec<(uuid::Uuid, uuid::Uuid)> = db::query(
            "SELECT tenant_id, id FROM webhook_messages WHERE status IN ('delivered', 'failed') AND next_attempt_at < ?1 \
             ORDER BY next_attempt_at LIMIT ?2",
        )
        .bind(to_micros(before)?)
        .bind(limit)
        .fetch_all(&tx)?
        .iter()
        .map(|r| Ok((r.at(0)?, r.at(1)?)))
        .collect::<Result<_, StoreError>>()?;
        for (tenant, id) in &gone {
            for sql in [
                "DELETE FROM webhook_attempts WHERE tenant_id = ?1 AND message_id = ?2",
                "DELETE FROM webhook_messages WHERE tenant_id = ?1 AND id = ?2 AND status IN ('delivered', 'failed')",
            ] {
                db::query(sql).bind(tenant).bind(id).execute(&tx)?;
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
    }
}

/// The shop's enabled webhook endpoints (the fan-out's; never the account channel).
fn webhook_endpoints_of(
    c: &rusqlite::Connection,
    tenant: TenantId,
) -> Result<Vec<Endpoint>, StoreError> {
    db::query(concat!(
        "SELECT ",
        endpoint_cols!(),
        " FROM webhook_endpoints WHERE tenant_id = ?1 AND enabled = 1 AND channel = 'webhook'"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(c)?
    .iter()
    .map(endpoint_from_row)
    .collect()
}

/// The endpoint's deliveries in flight (claimed, lock not lapsed), on every node.
fn busy(tx: &rusqlite::Connection, e: &Endpoint, now_us: i64) -> Result<i64, StoreError> {
    db::query(
        "SELECT count(*) FROM webhook_messages INDEXED BY webhook_messages_in_flight WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'delivering' AND locked_until > ?3",
    )
    .bind(e.tenant_id.as_uuid())
    .bind(e.id.as_uuid())
    .bind(now_us)
    .scalar(tx)
}

/// The shop's deliveries in flight, over all its endpoints and every node.
fn shop_busy(tx: &rusqlite::Connection, tenant: TenantId, now_us: i64) -> Result<i64, StoreError> {
    db::query(
        "SELECT count(*) FROM webhook_messages INDEXED BY webhook_messages_in_flight WHERE tenant_id = ?1 AND status = 'delivering' AND locked_until > ?2",
    )
    .bind(tenant.as_uuid())
    .bind(now_us)
    .scalar(tx)
}

/// The endpoint's oldest due messages (pending and due, or delivering with a lapsed lock), at
/// most `n`: each kind read in order from the endpoint's own index, at most `n` entries, so
/// neither its own backlog nor the other endpoints' make the read longer.
fn due_of(
    tx: &rusqlite::Connection,
    e: &Endpoint,
    now_us: i64,
    n: i64,
) -> Result<Vec<Message>, StoreError> {
    db::query(concat!(
        "SELECT ",
        message_cols!(),
        " FROM (SELECT * FROM (SELECT * FROM webhook_messages INDEXED BY webhook_messages_pending \
             WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'pending' AND next_attempt_at <= ?3 ORDER BY next_attempt_at, id LIMIT ?4) \
           UNION ALL SELECT * FROM (SELECT * FROM webhook_messages INDEXED BY webhook_messages_in_flight \
             WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'delivering' AND locked_until <= ?3 ORDER BY next_attempt_at, id LIMIT ?4)) \
         ORDER BY next_attempt_at, id LIMIT ?4"
    ))
    .bind(e.tenant_id.as_uuid())
    .bind(e.id.as_uuid())
    .bind(now_us)
    .bind(n)
    .fetch_all(tx)?
    .iter()
    .map(message_from_row)
    .collect()
}

/// Marks a message delivering until `lock_until`.
fn claim(
    tx: &rusqlite::Connection,
    m: &Message,
    lock_until: OffsetDateTime,
) -> Result<(), StoreError> {
    db::query("UPDATE webhook_messages SET status = 'delivering', locked_until = ?3 WHERE tenant_id = ?1 AND id = ?2")
        .bind(m.tenant_id.as_uuid())
        .bind(m.id.as_uuid())
        .bind(to_micros(lock_until)?)
        .execute(tx)?;
    Ok(())
}

/// After an attempt: the endpoint's next due message, claimed, if the endpoint (as it is now,
/// circuit included) has a free slot.
fn next_of_endpoint(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    endpoint: EndpointId,
    r: Refill<'_>,
) -> Result<Option<(Message, Endpoint)>, StoreError> {
    let row = db::query(concat!(
        "SELECT ",
        endpoint_cols!(),
        " FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2"
    ))
    .bind(tenant.as_uuid())
    .bind(endpoint.as_uuid())
    .fetch_one(tx)?;
    let e = endpoint_from_row(&row)?;
    let now_us = to_micros(r.now)?;
    if e.slots(r.policy, r.now) - busy(tx, &e, now_us)? < 1
        || shop_busy(tx, tenant, now_us)? >= r.policy.shop_max_in_flight
    {
        return Ok(None);
    }
    let Some(m) = due_of(tx, &e, now_us, 1)?.into_iter().next() else {
        return Ok(None);
    };
    claim(tx, &m, r.lock_until)?;
    Ok(Some((m, e)))
}

/// Marks `events` relayed in one statement (the relay holds the writer meanwhile, so one
/// statement per event would hold every request's write behind it for longer).
fn mark_relayed(
    tx: &rusqlite::Connection,
    events: &[keel_kernel::event::RecordedEvent],
    now: OffsetDateTime,
) -> Result<HashSet<(uuid::Uuid, uuid::Uuid)>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let keys = serde_json::Value::from(
        events
            .iter()
            .map(|e| {
                vec![
                    e.tenant_id.as_uuid().simple().to_string(),
                    e.id.as_uuid().simple().to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )
    .to_string();
    db::query(
        "UPDATE outbox_events SET relayed_at = ?1 WHERE relayed_at IS NULL AND (tenant_id, id) IN \
         (SELECT unhex(json_extract(value, '$[0]')), unhex(json_extract(value, '$[1]')) FROM json_each(?2)) \
         RETURNING tenant_id, id",
    )
    .bind(to_micros(now)?)
    .bind(keys)
    .fetch_all(tx)?
    .iter()
    .map(|r| Ok((r.at(0)?, r.at(1)?)))
    .collect()
}

/// Inserts a message unless the endpoint already has one for the event; answers 1 or 0.
fn insert_message(tx: &rusqlite::Connection, m: &Message) -> Result<usize, StoreError> {
    db::query("INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, locked_until, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10) ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING")
        .bind(m.tenant_id.as_uuid())
        .bind(m.id.as_uuid())
        .bind(m.endpoint_id.as_uuid())
        .bind(m.event_id.as_uuid())
        .bind(&m.event_type)
        .bind(&m.body)
        .bind(m.status.as_str())
        .bind(m.attempts)
        .bind(to_micros(m.next_attempt_at)?)
        .bind(to_micros(m.created_at)?)
        .execute(tx)
        .map(|d| usize::try_from(d.rows_affected()).unwrap_or(0))
        .map_err(map_err)
}

/// Queues an account notice for the shop's enabled account-notification endpoint, if it has
/// one (written in the caller's transaction, with the token it carries).
pub(crate) fn queue_notice(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    notice: &keel_identity::notice::AccountNotice,
) -> Result<(), StoreError> {
    let at = to_micros(notice.created_at)?;
    db::query("INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, locked_until, created_at) \
         SELECT tenant_id, ?2, id, ?3, ?4, ?5, 'pending', 0, ?6, NULL, ?6 FROM webhook_endpoints WHERE tenant_id = ?1 AND channel = 'account' AND enabled = 1")
        .bind(tenant.as_uuid())
        .bind(notice.message_id)
        .bind(notice.event_id.as_uuid())
        .bind(notice.event_type)
        .bind(&notice.sealed_body)
        .bind(at)
        .execute(tx)?;
    Ok(())
}
