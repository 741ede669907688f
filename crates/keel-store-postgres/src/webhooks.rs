//! Webhook endpoints, messages, attempts and the outbox relay on PostgreSQL.

use std::collections::HashMap;

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
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;

use crate::{
    PgStore, at, at_opt,
    error::map_err,
    tenants::{event_from_row, insert_events},
};

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt webhook row: {what}"))
}

fn endpoint_from_row(r: &PgRow) -> Result<Endpoint, StoreError> {
    let types: String = r.try_get("event_types").map_err(map_err)?;
    let secrets: String = r.try_get("secrets").map_err(map_err)?;
    Ok(Endpoint {
        id: EndpointId::from_uuid(r.try_get("id").map_err(map_err)?),
        tenant_id: TenantId::from_uuid(r.try_get("tenant_id").map_err(map_err)?),
        url: r.try_get("url").map_err(map_err)?,
        description: r.try_get("description").map_err(map_err)?,
        event_types: serde_json::from_str(&types).map_err(|_| corrupt("event types"))?,
        enabled: r.try_get("enabled").map_err(map_err)?,
        disabled_reason: r.try_get("disabled_reason").map_err(map_err)?,
        secrets: serde_json::from_str(&secrets).map_err(|_| corrupt("secrets"))?,
        failing_since: at_opt(r, "failing_since")?,
        created_at: at(r, "created_at")?,
        updated_at: at(r, "updated_at")?,
        version: r.try_get("version").map_err(map_err)?,
    })
}

fn message_from_row(r: &PgRow) -> Result<Message, StoreError> {
    let status: String = r.try_get("status").map_err(map_err)?;
    Ok(Message {
        id: MessageId::from_uuid(r.try_get("id").map_err(map_err)?),
        tenant_id: TenantId::from_uuid(r.try_get("tenant_id").map_err(map_err)?),
        endpoint_id: EndpointId::from_uuid(r.try_get("endpoint_id").map_err(map_err)?),
        event_id: EventId::from_uuid(r.try_get("event_id").map_err(map_err)?),
        event_type: r.try_get("event_type").map_err(map_err)?,
        body: r.try_get("body").map_err(map_err)?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        attempts: r.try_get("attempts").map_err(map_err)?,
        next_attempt_at: at(r, "next_attempt_at")?,
        created_at: at(r, "created_at")?,
    })
}

fn attempt_from_row(r: &PgRow) -> Result<Attempt, StoreError> {
    let code: Option<i64> = r.try_get("status_code").map_err(map_err)?;
    Ok(Attempt {
        id: AttemptId::from_uuid(r.try_get("id").map_err(map_err)?),
        tenant_id: TenantId::from_uuid(r.try_get("tenant_id").map_err(map_err)?),
        message_id: MessageId::from_uuid(r.try_get("message_id").map_err(map_err)?),
        endpoint_id: EndpointId::from_uuid(r.try_get("endpoint_id").map_err(map_err)?),
        attempted_at: at(r, "attempted_at")?,
        status_code: code
            .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
            .transpose()?,
        latency_ms: r.try_get("latency_ms").map_err(map_err)?,
        error: r.try_get("error").map_err(map_err)?,
        response_body: r.try_get("response_body").map_err(map_err)?,
    })
}

async fn write_endpoint(
    tx: &mut PgConnection,
    e: &Endpoint,
    expected: Option<i64>,
) -> Result<bool, StoreError> {
    let types = serde_json::to_string(&e.event_types).map_err(StoreError::other)?;
    let secrets = serde_json::to_string(&e.secrets).map_err(StoreError::other)?;
    let sql = if expected.is_none() {
        "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10, $11, $12)"
    } else {
        "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5::jsonb, enabled = $6, disabled_reason = $7, secrets = $8::jsonb, \
         failing_since = $9, created_at = $10, updated_at = $11, version = $12 WHERE tenant_id = $1 AND id = $2 AND version = $13"
    };
    let mut q = sqlx::query(sql)
        .bind(e.tenant_id.as_uuid())
        .bind(e.id.as_uuid())
        .bind(&e.url)
        .bind(&e.description)
        .bind(types)
        .bind(e.enabled)
        .bind(e.disabled_reason.as_deref())
        .bind(secrets)
        .bind(e.failing_since)
        .bind(e.created_at)
        .bind(e.updated_at)
        .bind(e.version);
    if let Some(v) = expected {
        q = q.bind(v);
    }
    Ok(q.execute(&mut *tx).await.map_err(map_err)?.rows_affected() == 1)
}

/// Runs `work` in a write transaction with the events; rolls back on its error.
macro_rules! in_write {
    ($self:ident, $events:expr, |$tx:ident| $work:expr) => {{
        let mut $tx = $self.pool.begin().await.map_err(map_err)?;
        match $work {
            Ok(value) => {
                insert_events(&mut $tx, $events).await?;
                $tx.commit().await.map_err(map_err)?;
                Ok(value)
            }
            Err(e) => {
                $tx.rollback().await.map_err(map_err)?;
                Err(e)
            }
        }
    }};
}

/// Marks the relayed events in one statement (the id lists are bound arrays), inside the
/// relay's transaction: one round trip whatever the batch size.
async fn mark_relayed(
    tx: &mut sqlx::PgConnection,
    events: &[keel_kernel::event::RecordedEvent],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let tenants: Vec<uuid::Uuid> = events.iter().map(|e| e.tenant_id.as_uuid()).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id.as_uuid()).collect();
    sqlx::query(
        "UPDATE outbox_events o SET relayed_at = $3 FROM unnest($1::uuid[], $2::uuid[]) AS r (tenant_id, id) \
         WHERE o.tenant_id = r.tenant_id AND o.id = r.id",
    )
    .bind(tenants)
    .bind(ids)
    .bind(now)
    .execute(tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_endpoint(&self, e: &Endpoint, events: &[NewEvent]) -> Result<(), StoreError> {
        in_write!(self, events, |tx| write_endpoint(&mut tx, e, None)
            .await
            .map(|_| ()))
    }

    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Endpoint, StoreError> {
        let r = sqlx::query("SELECT tenant_id, id, url, description, event_types::text AS event_types, enabled, disabled_reason, secrets::text AS secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        endpoint_from_row(&r)
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, id, url, description, event_types::text AS event_types, enabled, disabled_reason, secrets::text AS secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(tenant.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
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
            if write_endpoint(&mut tx, e, Some(expected_version)).await? {
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
                "DELETE FROM webhook_attempts WHERE tenant_id = $1 AND endpoint_id = $2",
                "DELETE FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2",
            ] {
                sqlx::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            let done =
                sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
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
        let rows = sqlx::query("SELECT tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4")
            .bind(tenant.as_uuid())
            .bind(endpoint.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |m| m.id.as_uuid()))
    }

    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Message, StoreError> {
        let r = sqlx::query("SELECT tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at FROM webhook_messages WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        message_from_row(&r)
    }

    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, id, message_id, endpoint_id, attempted_at, status_code, latency_ms, error, response_body FROM webhook_attempts WHERE tenant_id = $1 AND message_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4")
            .bind(tenant.as_uuid())
            .bind(message.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
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
            let done = sqlx::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = $3, locked_until = NULL WHERE tenant_id = $1 AND id = $2 AND status IN ('delivered', 'failed')")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                let exists: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
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
            sqlx::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = $4, locked_until = NULL WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'failed' AND created_at >= $3")
                .bind(tenant.as_uuid())
                .bind(endpoint.as_uuid())
                .bind(since)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(|d| d.rows_affected())
                .map_err(map_err)
        })
    }

    async fn relay(
        &self,
        limit: i64,
        now: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let rows = sqlx::query("SELECT tenant_id, id, event_type, payload::text AS payload, occurred_at FROM outbox_events WHERE relayed_at IS NULL ORDER BY occurred_at, id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut endpoints: HashMap<TenantId, Vec<Endpoint>> = HashMap::new();
        for e in &events {
            if let std::collections::hash_map::Entry::Vacant(slot) = endpoints.entry(e.tenant_id) {
                let rows = sqlx::query("SELECT tenant_id, id, url, description, event_types::text AS event_types, enabled, disabled_reason, secrets::text AS secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = $1 AND enabled")
                    .bind(e.tenant_id.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                slot.insert(
                    rows.iter()
                        .map(endpoint_from_row)
                        .collect::<Result<_, _>>()?,
                );
            }
            let mine = endpoints
                .get(&e.tenant_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for m in fan_out(e, mine) {
                insert_message(&mut tx, &m).await?;
            }
        }
        mark_relayed(&mut tx, &events, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(events.len())
    }

    async fn relay_via(
        &self,
        limit: i64,
        now: OffsetDateTime,
        publisher: &dyn keel_kernel::bus::EventPublisher,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let rows = sqlx::query("SELECT tenant_id, id, event_type, payload::text AS payload, occurred_at FROM outbox_events WHERE relayed_at IS NULL ORDER BY occurred_at, id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        for e in &events {
            if let Err(err) = publisher.publish(e).await {
                tx.rollback().await.map_err(map_err)?;
                return Err(StoreError::unavailable(std::io::Error::other(err)));
            }
        }
        mark_relayed(&mut tx, &events, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(events.len())
    }

    async fn prune_events(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut gone = 0;
        for q in [
            "DELETE FROM outbox_events WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM outbox_events WHERE relayed_at IS NOT NULL AND occurred_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM processed_events WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM processed_events WHERE processed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        ] {
            gone += sqlx::query(q)
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let rows = sqlx::query("SELECT tenant_id, id, url, description, event_types::text AS event_types, enabled, disabled_reason, secrets::text AS secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = $1 AND enabled")
            .bind(event.tenant_id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let endpoints = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut added = 0;
        for m in fan_out(event, &endpoints) {
            added += insert_message(&mut tx, &m).await?;
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let now_us = now;
        let busy_rows = sqlx::query("SELECT tenant_id, endpoint_id, count(*) AS n FROM webhook_messages WHERE status = 'delivering' AND locked_until > $1 GROUP BY tenant_id, endpoint_id")
            .bind(now_us)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let mut busy: HashMap<(uuid::Uuid, uuid::Uuid), i64> = HashMap::new();
        for r in &busy_rows {
            busy.insert(
                (
                    r.try_get("tenant_id").map_err(map_err)?,
                    r.try_get("endpoint_id").map_err(map_err)?,
                ),
                r.try_get("n").map_err(map_err)?,
            );
        }
        let rows = sqlx::query("SELECT m.tenant_id, m.id, m.endpoint_id, m.event_id, m.event_type, m.body, m.status, m.attempts, m.next_attempt_at, m.created_at FROM webhook_messages m \
             JOIN webhook_endpoints e ON e.tenant_id = m.tenant_id AND e.id = m.endpoint_id \
             WHERE e.enabled AND ((m.status = 'pending' AND m.next_attempt_at <= $1) OR (m.status = 'delivering' AND m.locked_until <= $1)) \
             ORDER BY m.next_attempt_at, m.id LIMIT $2 FOR UPDATE OF m SKIP LOCKED")
            .bind(now_us)
            .bind(limit.saturating_mul(4))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
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
            sqlx::query("UPDATE webhook_messages SET status = 'delivering', locked_until = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(m.tenant_id.as_uuid())
                .bind(m.id.as_uuid())
                .bind(lock_until)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            let e = sqlx::query("SELECT tenant_id, id, url, description, event_types::text AS event_types, enabled, disabled_reason, secrets::text AS secrets, failing_since, created_at, updated_at, version FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                .bind(m.tenant_id.as_uuid())
                .bind(m.endpoint_id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
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
            sqlx::query("INSERT INTO webhook_attempts (tenant_id, id, message_id, endpoint_id, attempted_at, status_code, latency_ms, error, response_body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(a.tenant_id.as_uuid())
                .bind(a.id.as_uuid())
                .bind(a.message_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(a.attempted_at)
                .bind(a.status_code.map(i64::from))
                .bind(a.latency_ms)
                .bind(a.error.as_deref())
                .bind(a.response_body.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query("UPDATE webhook_messages SET status = $3, attempts = attempts + 1, next_attempt_at = $4, locked_until = NULL WHERE tenant_id = $1 AND id = $2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.message_id.as_uuid())
                .bind(outcome.status.as_str())
                .bind(outcome.next_attempt_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query("UPDATE webhook_endpoints SET failing_since = CASE WHEN $3::boolean THEN NULL ELSE COALESCE(failing_since, $4::timestamptz) END, \
                 enabled = CASE WHEN $5::text IS NULL THEN enabled ELSE false END, disabled_reason = COALESCE($5::text, disabled_reason), \
                 version = CASE WHEN $5::text IS NULL THEN version ELSE version + 1 END WHERE tenant_id = $1 AND id = $2")
                .bind(a.tenant_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(outcome.endpoint_ok)
                .bind(a.attempted_at)
                .bind(outcome.disable.as_deref())
                .execute(&mut *tx)
                .await
                .map(|_| ())
                .map_err(map_err)
        })
    }
}

/// Inserts a message unless the endpoint already has one for the event; answers 1 or 0.
async fn insert_message(tx: &mut PgConnection, m: &Message) -> Result<usize, StoreError> {
    sqlx::query("INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, locked_until, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10) ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING")
        .bind(m.tenant_id.as_uuid())
        .bind(m.id.as_uuid())
        .bind(m.endpoint_id.as_uuid())
        .bind(m.event_id.as_uuid())
        .bind(&m.event_type)
        .bind(&m.body)
        .bind(m.status.as_str())
        .bind(m.attempts)
        .bind(m.next_attempt_at)
        .bind(m.created_at)
        .execute(&mut *tx)
        .await
        .map(|d| usize::try_from(d.rows_affected()).unwrap_or(0))
        .map_err(map_err)
}
