//! Webhook endpoints, messages, attempts and the outbox relay on SQLite.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, NewEvent},
    page::{Page, PageRequest},
};
use keel_webhooks::{
    domain::{Attempt, AttemptId, Endpoint, EndpointId, Message, MessageId, MessageStatus},
    ports::{AttemptOutcome, FanOut, VERSION_CONFLICT, WebhookStore},
};
use time::OffsetDateTime;

use crate::db::{self, Get};
use crate::{
    SqliteStore, at, at_opt,
    error::map_err,
    tenants::{event_from_row, insert_events},
    to_micros,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt webhook row: {what}"))
}

fn endpoint_from_row(r: &impl Get) -> Result<Endpoint, StoreError> {
    let types: String = r.col("event_types")?;
    let secrets: String = r.col("secrets")?;
    Ok(Endpoint {
        id: EndpointId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        url: r.col("url")?,
        description: r.col("description")?,
        event_types: serde_json::from_str(&types).map_err(|_| corrupt("event types"))?,
        enabled: r.col("enabled")?,
        disabled_reason: r.col("disabled_reason")?,
        secrets: serde_json::from_str(&secrets).map_err(|_| corrupt("secrets"))?,
        failing_since: at_opt(r, "failing_since")?,
        created_at: at(r, "created_at")?,
        updated_at: at(r, "updated_at")?,
        version: r.col("version")?,
    })
}

fn message_from_row(r: &impl Get) -> Result<Message, StoreError> {
    let status: String = r.col("status")?;
    Ok(Message {
        id: MessageId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        endpoint_id: EndpointId::from_uuid(r.col("endpoint_id")?),
        event_id: EventId::from_uuid(r.col("event_id")?),
        event_type: r.col("event_type")?,
        body: r.col("body")?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        attempts: r.col("attempts")?,
        next_attempt_at: at(r, "next_attempt_at")?,
        created_at: at(r, "created_at")?,
    })
}

fn attempt_from_row(r: &impl Get) -> Result<Attempt, StoreError> {
    let code: Option<i64> = r.col("status_code")?;
    Ok(Attempt {
        id: AttemptId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        message_id: MessageId::from_uuid(r.col("message_id")?),
        endpoint_id: EndpointId::from_uuid(r.col("endpoint_id")?),
        attempted_at: at(r, "attempted_at")?,
        status_code: code
            .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
            .transpose()?,
        latency_ms: r.col("latency_ms")?,
        error: r.col("error")?,
        response_body: r.col("response_body")?,
    })
}

fn write_endpoint(
    tx: &rusqlite::Connection,
    e: &Endpoint,
    expected: Option<i64>,
) -> Result<bool, StoreError> {
    let types = serde_json::to_string(&e.event_types).map_err(StoreError::other)?;
    let secrets = serde_json::to_string(&e.secrets).map_err(StoreError::other)?;
    let sql = if expected.is_none() {
        "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    } else {
        "UPDATE webhook_endpoints SET url = ?3, description = ?4, event_types = ?5, enabled = ?6, disabled_reason = ?7, secrets = ?8, \
         failing_since = ?9, created_at = ?10, updated_at = ?11, version = ?12 WHERE tenant_id = ?1 AND id = ?2 AND version = ?13"
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
        .bind(e.version);
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

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(&self, e: &Endpoint, events: &[NewEvent]) -> Result<(), StoreError> {
        in_write!(self, events, |tx| write_endpoint(&tx, e, None).map(|_| ()))
    }

    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Endpoint, StoreError> {
        let r = self.read(|c| db::query("SELECT tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c))?;
        endpoint_from_row(&r)
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        let rows = self.read(|c| db::query("SELECT tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3")
            .bind(tenant.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c))?;
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
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            for sql in [
                "DELETE FROM webhook_attempts WHERE tenant_id = ?1 AND endpoint_id = ?2",
                "DELETE FROM webhook_messages WHERE tenant_id = ?1 AND endpoint_id = ?2",
            ] {
                db::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&tx)?;
            }
            let done = db::query("DELETE FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(&tx)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            }
        })
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        let rows = self.read(|c| db::query("SELECT tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at FROM webhook_messages WHERE tenant_id = ?1 AND endpoint_id = ?2 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4")
            .bind(tenant.as_uuid())
            .bind(endpoint.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c))?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |m| m.id.as_uuid()))
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Message, StoreError> {
        let r = self.read(|c| db::query("SELECT tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at FROM webhook_messages WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c))?;
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
            let done = db::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?3, locked_until = NULL WHERE tenant_id = ?1 AND id = ?2 AND status IN ('delivered', 'failed')")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(to_micros(now)?)
                .execute(&tx)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                let exists: i64 = db::query(
                    "SELECT count(*) FROM webhook_messages WHERE tenant_id = ?1 AND id = ?2",
                )
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .scalar(&tx)?;
                // A message still pending or delivering is already queued: nothing to do.
                if exists == 1 {
                    Ok(())
                } else {
                    Err(StoreError::NotFound)
                }
            }
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
            db::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?4, locked_until = NULL WHERE tenant_id = ?1 AND endpoint_id = ?2 AND status = 'failed' AND created_at >= ?3")
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
                    let rows = db::query("SELECT tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = ?1 AND enabled = 1")
                        .bind(e.tenant_id.as_uuid())
                        .fetch_all(c)?;
                    slot.insert(
                        rows.iter()
                            .map(endpoint_from_row)
                            .collect::<Result<_, _>>()?,
                    );
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
        let rows = db::query("SELECT tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = ?1 AND enabled = 1")
            .bind(event.tenant_id.as_uuid())
            .fetch_all(&tx)?;
        let endpoints = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>, _>>()?;
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
        max_in_flight: i64,
        lock_until: OffsetDateTime,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError> {
        let tx = self.write().await?;
        let now_us = to_micros(now)?;
        let busy_rows = db::query("SELECT tenant_id, endpoint_id, count(*) AS n FROM webhook_messages WHERE status = 'delivering' AND locked_until > ?1 GROUP BY tenant_id, endpoint_id")
            .bind(now_us)
            .fetch_all(&tx)?;
        let mut busy: HashMap<(uuid::Uuid, uuid::Uuid), i64> = HashMap::new();
        for r in &busy_rows {
            busy.insert((r.col("tenant_id")?, r.col("endpoint_id")?), r.col("n")?);
        }
        let rows = db::query("SELECT m.tenant_id, m.id, m.endpoint_id, m.event_id, m.event_type, m.body, m.status, m.attempts, m.next_attempt_at, m.created_at FROM webhook_messages m \
             JOIN webhook_endpoints e ON e.tenant_id = m.tenant_id AND e.id = m.endpoint_id \
             WHERE e.enabled = 1 AND ((m.status = 'pending' AND m.next_attempt_at <= ?1) OR (m.status = 'delivering' AND m.locked_until <= ?1)) \
             ORDER BY m.next_attempt_at, m.id LIMIT ?2")
            .bind(now_us)
            .bind(limit.saturating_mul(4))
            .fetch_all(&tx)?;
        let mut claimed = Vec::new();
        for r in &rows {
            if i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= limit {
                break;
            }
            let m = message_from_row(r)?;
            let key = (m.tenant_id.as_uuid(), m.endpoint_id.as_uuid());
            let n = busy.entry(key).or_insert(0);
            if *n >= max_in_flight {
                continue;
            }
            *n += 1;
            db::query("UPDATE webhook_messages SET status = 'delivering', locked_until = ?3 WHERE tenant_id = ?1 AND id = ?2")
                .bind(m.tenant_id.as_uuid())
                .bind(m.id.as_uuid())
                .bind(to_micros(lock_until)?)
                .execute(&tx)?;
            let e = db::query("SELECT tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2")
                .bind(m.tenant_id.as_uuid())
                .bind(m.endpoint_id.as_uuid())
                .fetch_one(&tx)?;
            claimed.push((m, endpoint_from_row(&e)?));
        }
        tx.commit().await.map_err(map_err)?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        a: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
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
            db::query("UPDATE webhook_messages SET status = ?3, attempts = attempts + 1, next_attempt_at = ?4, locked_until = NULL WHERE tenant_id = ?1 AND id = ?2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.message_id.as_uuid())
                .bind(outcome.status.as_str())
                .bind(to_micros(outcome.next_attempt_at)?)
                .execute(&tx)?;
            db::query("UPDATE webhook_endpoints SET failing_since = CASE WHEN ?3 THEN NULL ELSE COALESCE(failing_since, ?4) END, \
                 enabled = CASE WHEN ?5 IS NULL THEN enabled ELSE 0 END, disabled_reason = COALESCE(?5, disabled_reason), \
                 version = CASE WHEN ?5 IS NULL THEN version ELSE version + 1 END WHERE tenant_id = ?1 AND id = ?2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(outcome.endpoint_ok)
                .bind(to_micros(a.attempted_at)?)
                .bind(outcome.disable.as_deref())
                .execute(&tx)
                .map(|_| ())
                .map_err(map_err)
        })
    }
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
