//! Webhook endpoints, messages, attempts and the outbox relay on PostgreSQL.

use std::collections::HashMap;

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
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;

use crate::{
    PgStore,
    error::map_err,
    tenants::{event_from_row, insert_events},
};
use keel_store_common::rows::webhooks::{attempt_from_row, endpoint_from_row, message_from_row};

/// The endpoint columns every read takes, in `endpoint_from_row`'s terms (a macro so that
/// statements are joined at compile time, never formatted at run time).
macro_rules! endpoint_cols {
    () => {
        "tenant_id, id, channel, url, description, event_types::text AS event_types, enabled, \
         disabled_reason, secrets::text AS secrets, failing_since, consecutive_failures, \
         paused_until, created_at, updated_at, version"
    };
}

/// The message columns every read takes.
macro_rules! message_cols {
    () => {
        "tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, \
         next_attempt_at, created_at"
    };
}

/// The due messages of endpoint `$2` of shop `$1` at `$3` among its `$5` oldest candidates
/// (pending and due, or delivering with a lapsed claim), each kind read in order from its own
/// index; the caller orders, limits and locks. The ids are an uncorrelated `ARRAY(...)`,
/// computed once: as an `IN` subquery, the generic plan of the prepared statement scanned
/// every pending message of the shop and ran the subquery for each (50 ms with 4,000
/// waiting). The due condition is checked again on the rows as locked.
macro_rules! due_sql {
    () => {
        "SELECT * FROM webhook_messages WHERE tenant_id = $1 AND id = ANY(ARRAY(SELECT id FROM ( \
           (SELECT id, next_attempt_at FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT $5) \
           UNION ALL (SELECT id, next_attempt_at FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' AND locked_until <= $3 \
             ORDER BY next_attempt_at, id LIMIT $5)) d ORDER BY next_attempt_at, id LIMIT $5)) \
         AND ((status = 'pending' AND next_attempt_at <= $3) OR (status = 'delivering' AND locked_until <= $3))"
    };
}

async fn write_endpoint(
    tx: &mut PgConnection,
    e: &Endpoint,
    expected: Option<i64>,
) -> Result<bool, StoreError> {
    let types = serde_json::to_string(&e.event_types).map_err(StoreError::other)?;
    let secrets = serde_json::to_string(&e.secrets).map_err(StoreError::other)?;
    // An update writes the endpoint as read and changed (as for `failing_since`): a failure
    // counted meanwhile may be lost, which at worst gives a changed endpoint a fresh start.
    let sql = if expected.is_none() {
        "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, disabled_reason, secrets, failing_since, created_at, updated_at, version, channel, consecutive_failures, paused_until) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15)"
    } else {
        "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5::jsonb, enabled = $6, disabled_reason = $7, secrets = $8::jsonb, \
         failing_since = $9, created_at = $10, updated_at = $11, version = $12, consecutive_failures = $14, paused_until = $15 \
         WHERE tenant_id = $1 AND id = $2 AND version = $16 AND channel = $13"
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
        .bind(e.version)
        .bind(e.channel.as_str())
        .bind(e.consecutive_failures)
        .bind(e.paused_until);
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

/// The enabled endpoints with something due (their id pairs), the one whose oldest due
/// message waited longest first. Pending messages are found by skipping through
/// `webhook_messages_pending` one endpoint at a time (a recursive probe of the next
/// `(shop, endpoint)` after the last), so a claim reads one index entry per endpoint with
/// pending messages, whatever their backlogs and however many endpoints have none; lapsed
/// claims come from the index of deliveries in flight.
const WAITING_ENDPOINTS: &str = "WITH RECURSIVE pending(tenant_id, endpoint_id, due_at) AS ( \
       (SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages WHERE status = 'pending' \
         ORDER BY tenant_id, endpoint_id, next_attempt_at LIMIT 1) \
       UNION ALL \
       SELECT n.tenant_id, n.endpoint_id, n.next_attempt_at FROM pending p CROSS JOIN LATERAL ( \
         SELECT m.tenant_id, m.endpoint_id, m.next_attempt_at FROM webhook_messages m \
         WHERE m.status = 'pending' AND (m.tenant_id, m.endpoint_id) > (p.tenant_id, p.endpoint_id) \
         ORDER BY m.tenant_id, m.endpoint_id, m.next_attempt_at LIMIT 1) n), \
     due AS ( \
       SELECT tenant_id, endpoint_id, due_at FROM pending WHERE due_at <= $1 \
       UNION ALL SELECT tenant_id, endpoint_id, next_attempt_at FROM webhook_messages \
         WHERE status = 'delivering' AND locked_until <= $1) \
     SELECT e.tenant_id, e.id FROM due d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
     WHERE e.enabled AND (e.paused_until IS NULL OR e.paused_until <= $1) \
     GROUP BY e.tenant_id, e.id ORDER BY min(d.due_at), e.id";

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_endpoint(
        &self,
        e: &Endpoint,
        max: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            async {
                // The shop's endpoint lock until the commit: two creations on any nodes count
                // one after the other (each statement sees what the previous one committed).
                shop_lock(&mut tx, SHOP_ENDPOINTS_LOCK, e.tenant_id).await?;
                let have: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1 AND channel = $2",
                )
                .bind(e.tenant_id.as_uuid())
                .bind(e.channel.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                if have >= max {
                    return Err(StoreError::Conflict {
                        constraint: ENDPOINT_LIMIT.into(),
                    });
                }
                write_endpoint(&mut tx, e, None).await.map(|_| ())
            }
            .await
        })
    }

    async fn get_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
    ) -> Result<Endpoint, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            endpoint_cols!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND channel = $3"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(channel.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        endpoint_from_row(&r)
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        channel: Channel,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            endpoint_cols!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 AND channel = $4 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_uuid())
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .bind(channel.as_str())
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
        channel: Channel,
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            let found = sqlx::query(
                "SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND channel = $3 FOR UPDATE",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(channel.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            if found.is_none() {
                Err(StoreError::NotFound)
            } else {
                for sql in [
                    "DELETE FROM webhook_attempts WHERE tenant_id = $1 AND endpoint_id = $2",
                    "DELETE FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2",
                    "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                ] {
                    sqlx::query(sql)
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                Ok(())
            }
        })
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_cols!(),
            " FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
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

    async fn get_message(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: MessageId,
    ) -> Result<Message, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            message_cols!(),
            " FROM webhook_messages m WHERE tenant_id = $1 AND id = $2 AND EXISTS \
             (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = m.tenant_id AND e.id = m.endpoint_id AND e.channel = $3)"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(channel.as_str())
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
            // Webhook messages only: an account notification's body is gone once it is done.
            let webhook: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_messages m JOIN webhook_endpoints e ON e.tenant_id = m.tenant_id AND e.id = m.endpoint_id \
                 WHERE m.tenant_id = $1 AND m.id = $2 AND e.channel = 'webhook'",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if webhook == 1 {
                // A message still pending or delivering is already queued: nothing to do.
                sqlx::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = $3, locked_until = NULL WHERE tenant_id = $1 AND id = $2 AND status IN ('delivered', 'failed')")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            } else {
                Err(StoreError::NotFound)
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
            sqlx::query("UPDATE webhook_messages SET status = 'pending', next_attempt_at = $4, locked_until = NULL WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'failed' AND created_at >= $3 \
                 AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = $1 AND e.id = $2 AND e.channel = 'webhook')")
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
                slot.insert(webhook_endpoints_of(&mut tx, e.tenant_id).await?);
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
        let endpoints = webhook_endpoints_of(&mut tx, event.tenant_id).await?;
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
        lock_until: OffsetDateTime,
        policy: &DeliveryPolicy,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError> {
        let cap = usize::try_from(limit).unwrap_or(0);
        if cap == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The endpoints with something due, the one waiting longest first, unlocked.
        let waiting = sqlx::query(WAITING_ENDPOINTS)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        // In that order, the endpoints that get a delivery in the claim's first round (at
        // most `cap`; the fair round robin then shares the rest out among them). Each row is
        // locked for the claim (`NO KEY UPDATE`: the relay's foreign-key checks do not keep
        // it out) and skipped when an attempt of the endpoint is recording, another claim or
        // an admin change holds it: nothing else counts the endpoint's deliveries meanwhile. A
        // shop's claim lock is only tried: a shop another node is claiming for waits for the
        // next claim, and no claim ever waits for a lock (so none can deadlock with another).
        let mut candidates = Vec::new();
        let mut shop_room: HashMap<TenantId, i64> = HashMap::new();
        let mut shop_left: HashMap<TenantId, i64> = HashMap::new();
        for row in &waiting {
            if candidates.len() >= cap {
                break;
            }
            let tenant = TenantId::from_uuid(row.try_get("tenant_id").map_err(map_err)?);
            let id: uuid::Uuid = row.try_get("id").map_err(map_err)?;
            if let std::collections::hash_map::Entry::Vacant(slot) = shop_room.entry(tenant) {
                let room = if try_lock_shop(&mut tx, tenant).await? {
                    policy.shop_max_in_flight - shop_busy(&mut tx, tenant, now).await?
                } else {
                    0
                };
                slot.insert(room);
                shop_left.insert(tenant, room);
            }
            let left = shop_left.entry(tenant).or_insert(0);
            if *left <= 0 {
                continue;
            }
            let Some(e) = sqlx::query(concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND enabled \
                 AND (paused_until IS NULL OR paused_until <= $3) FOR NO KEY UPDATE SKIP LOCKED"
            ))
            .bind(tenant.as_uuid())
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()?
            else {
                continue;
            };
            let free = e.slots(policy, now) - busy(&mut tx, &e, now).await?;
            if free > 0 {
                let due = due_of(&mut tx, &e, now, free, policy).await?;
                if !due.is_empty() {
                    *left -= 1;
                    candidates.push((e, due));
                }
            }
        }
        let claimed = fair_claims(candidates, shop_room, cap);
        claim(&mut tx, claimed.iter().map(|(m, _)| m), lock_until).await?;
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
            async {
                // The attempt and its message's new state in one statement (a round trip
                // fewer for every delivery).
                sqlx::query("WITH attempt AS (INSERT INTO webhook_attempts (tenant_id, id, message_id, endpoint_id, attempted_at, status_code, latency_ms, error, response_body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) \
                     UPDATE webhook_messages SET status = $10, attempts = attempts + 1, next_attempt_at = $11, locked_until = NULL, \
                     body = CASE WHEN $12::boolean THEN '' ELSE body END WHERE tenant_id = $1 AND id = $3")
                    .bind(a.tenant_id.as_uuid())
                    .bind(a.id.as_uuid())
                    .bind(a.message_id.as_uuid())
                    .bind(a.endpoint_id.as_uuid())
                    .bind(a.attempted_at)
                    .bind(a.status_code.map(i64::from))
                    .bind(a.latency_ms)
                    .bind(a.error.as_deref())
                    .bind(a.response_body.as_deref())
                    .bind(outcome.status.as_str())
                    .bind(outcome.next_attempt_at)
                    .bind(outcome.drop_body)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                // The circuit counts in the row (locked by this update until the commit), so
                // concurrent attempts of one endpoint on any node add up. A success that
                // changes nothing (no failures to clear) leaves the row alone: the endpoint's
                // attempts then commit side by side instead of one after another.
                let changed = sqlx::query(concat!(
                    "UPDATE webhook_endpoints SET failing_since = CASE WHEN $3::boolean THEN NULL ELSE COALESCE(failing_since, $4::timestamptz) END, \
                     consecutive_failures = CASE WHEN $3::boolean THEN 0 ELSE consecutive_failures + 1 END, \
                     paused_until = CASE WHEN $3::boolean THEN NULL WHEN consecutive_failures + 1 >= $6 THEN $7::timestamptz ELSE paused_until END, \
                     enabled = CASE WHEN $5::text IS NULL THEN enabled ELSE false END, disabled_reason = COALESCE($5::text, disabled_reason), \
                     version = CASE WHEN $5::text IS NULL THEN version ELSE version + 1 END WHERE tenant_id = $1 AND id = $2 \
                     AND NOT ($3::boolean AND $5::text IS NULL AND consecutive_failures = 0 AND failing_since IS NULL AND paused_until IS NULL) RETURNING ",
                    endpoint_cols!()
                ))
                .bind(a.tenant_id.as_uuid())
                .bind(a.endpoint_id.as_uuid())
                .bind(outcome.endpoint_ok)
                .bind(a.attempted_at)
                .bind(outcome.disable.as_deref())
                .bind(outcome.circuit_failures)
                .bind(outcome.open_until)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(r) = refill else {
                    return Ok(None);
                };
                // A refill replaces this attempt's message (no longer in flight in this
                // transaction; the worker refills only while its claim had not lapsed) one for
                // one, so it never raises the endpoint's or the shop's count. It holds the
                // endpoint row shared, so the endpoint's attempts refill side by side while no
                // claim counts the endpoint and no change to it is half seen; when the row is
                // held otherwise, there is no refill and the next claim serves the endpoint.
                let e = match changed {
                    Some(row) => endpoint_from_row(&row)?,
                    None => match sqlx::query(concat!(
                        "SELECT ",
                        endpoint_cols!(),
                        " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR SHARE SKIP LOCKED"
                    ))
                    .bind(a.tenant_id.as_uuid())
                    .bind(a.endpoint_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?
                    {
                        Some(row) => endpoint_from_row(&row)?,
                        None => return Ok(None),
                    },
                };
                // The counts' check (for limits that shrank: a circuit that opened, a lower
                // configuration), the next due message and its claim, in one statement.
                let next = sqlx::query(concat!(
                    "WITH room AS (SELECT \
                       (SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' AND locked_until > $3) < $6 \
                       AND (SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND status = 'delivering' AND locked_until > $3) < $7 AS free), \
                     next AS (SELECT id AS next_id FROM (",
                    due_sql!(),
                    " AND (SELECT free FROM room) ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) d) \
                     UPDATE webhook_messages m SET status = 'delivering', locked_until = $4 FROM next \
                     WHERE m.tenant_id = $1 AND m.id = next.next_id RETURNING ",
                    message_cols!()
                ))
                .bind(e.tenant_id.as_uuid())
                .bind(e.id.as_uuid())
                .bind(r.now)
                .bind(r.lock_until)
                .bind(1 + r.policy.max_in_flight)
                .bind(e.slots(r.policy, r.now))
                .bind(r.policy.shop_max_in_flight)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                match next {
                    Some(row) => Ok(Some((message_from_row(&row)?, e))),
                    None => Ok(None),
                }
            }
            .await
        })
    }

    async fn abandon_pending(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE webhook_messages SET status = 'failed', body = '', next_attempt_at = $3, locked_until = NULL \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(endpoint.as_uuid())
        .bind(at)
        .execute(&self.pool)
        .await
        .map(|d| d.rows_affected())
        .map_err(map_err)
    }

    async fn prune_messages(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let gone: Vec<PgRow> = sqlx::query(
            "SELECT tenant_id, id FROM webhook_messages WHERE status IN ('delivered', 'failed') AND next_attempt_at < $1 \
             ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let tenants = gone
            .iter()
            .map(|r| r.try_get::<uuid::Uuid, _>("tenant_id").map_err(map_err))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = gone
            .iter()
            .map(|r| r.try_get::<uuid::Uuid, _>("id").map_err(map_err))
            .collect::<Result<Vec<_>, _>>()?;
        for sql in [
            "DELETE FROM webhook_attempts a USING unnest($1::uuid[], $2::uuid[]) AS g (tenant_id, id) WHERE a.tenant_id = g.tenant_id AND a.message_id = g.id",
            "DELETE FROM webhook_messages m USING unnest($1::uuid[], $2::uuid[]) AS g (tenant_id, id) WHERE m.tenant_id = g.tenant_id AND m.id = g.id",
        ] {
            sqlx::query(sql)
                .bind(&tenants)
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
    }
}

/// The shop's enabled webhook endpoints (the fan-out's; never the account channel).
async fn webhook_endpoints_of(
    tx: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<Endpoint>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        endpoint_cols!(),
        " FROM webhook_endpoints WHERE tenant_id = $1 AND enabled AND channel = 'webhook'"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?
    .iter()
    .map(endpoint_from_row)
    .collect()
}

/// The endpoint's deliveries in flight (claimed, lock not lapsed), on every node.
async fn busy(tx: &mut PgConnection, e: &Endpoint, now: OffsetDateTime) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'delivering' AND locked_until > $3",
    )
    .bind(e.tenant_id.as_uuid())
    .bind(e.id.as_uuid())
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)
}

/// The classes of the transaction-scoped advisory locks of one shop (the two-key form: their
/// own lock spaces, apart from the throttle's): its delivery claims, its endpoint creations.
const SHOP_CLAIM_LOCK: i32 = 0x5748;
const SHOP_ENDPOINTS_LOCK: i32 = 0x5745;

/// Takes the shop's claim lock until the transaction ends if nobody holds it (so two nodes
/// never both count a shop below its in-flight limit and both claim past it); answers
/// whether it did.
async fn try_lock_shop(tx: &mut PgConnection, tenant: TenantId) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
        .bind(SHOP_CLAIM_LOCK)
        .bind(shop_key(tenant))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)
}

/// A shop's advisory-lock key: the id's last (random) four bytes. A shared key only makes two
/// shops wait for each other.
fn shop_key(tenant: TenantId) -> i32 {
    let id = tenant.as_uuid();
    let bytes = id.as_bytes();
    i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}

/// Takes one of the shop's locks of `class` until the transaction ends.
async fn shop_lock(tx: &mut PgConnection, class: i32, tenant: TenantId) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(class)
        .bind(shop_key(tenant))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// The shop's deliveries in flight, over all its endpoints and every node.
async fn shop_busy(
    tx: &mut PgConnection,
    tenant: TenantId,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_messages WHERE tenant_id = $1 AND status = 'delivering' AND locked_until > $2",
    )
    .bind(tenant.as_uuid())
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)
}

/// The endpoint's oldest due messages (pending and due, or delivering with a lapsed lock), at
/// most `n`, locked: a bounded number of index entries read, so neither its own backlog nor
/// the other endpoints' make the read longer. The candidates are `n` plus the endpoint's
/// slots: attempts of the endpoint recording at the same time (at most its slots) may each
/// hold the next one locked, and are skipped.
async fn due_of(
    tx: &mut PgConnection,
    e: &Endpoint,
    now: OffsetDateTime,
    n: i64,
    policy: &DeliveryPolicy,
) -> Result<Vec<Message>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        message_cols!(),
        " FROM (",
        due_sql!(),
        " ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) due ORDER BY next_attempt_at, id"
    ))
    .bind(e.tenant_id.as_uuid())
    .bind(e.id.as_uuid())
    .bind(now)
    .bind(n)
    .bind(n.saturating_add(policy.max_in_flight))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?
    .iter()
    .map(message_from_row)
    .collect()
}

/// Marks messages delivering until `lock_until`, in one statement.
async fn claim(
    tx: &mut PgConnection,
    messages: impl Iterator<Item = &Message>,
    lock_until: OffsetDateTime,
) -> Result<(), StoreError> {
    let (tenants, ids): (Vec<uuid::Uuid>, Vec<uuid::Uuid>) = messages
        .map(|m| (m.tenant_id.as_uuid(), m.id.as_uuid()))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE webhook_messages m SET status = 'delivering', locked_until = $3 FROM unnest($1::uuid[], $2::uuid[]) AS c (tenant_id, id) \
         WHERE m.tenant_id = c.tenant_id AND m.id = c.id",
    )
    .bind(tenants)
    .bind(ids)
    .bind(lock_until)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Queues an account notice for the shop's enabled account-notification endpoint, if it has
/// one (written in the caller's transaction, with the token it carries).
pub(crate) async fn queue_notice(
    tx: &mut PgConnection,
    tenant: TenantId,
    notice: &keel_identity::notice::AccountNotice,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, next_attempt_at, locked_until, created_at) \
         SELECT tenant_id, $2, id, $3, $4, $5, 'pending', 0, $6, NULL, $6 FROM webhook_endpoints WHERE tenant_id = $1 AND channel = 'account' AND enabled")
        .bind(tenant.as_uuid())
        .bind(notice.message_id)
        .bind(notice.event_id.as_uuid())
        .bind(notice.event_type)
        .bind(&notice.sealed_body)
        .bind(notice.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(())
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
