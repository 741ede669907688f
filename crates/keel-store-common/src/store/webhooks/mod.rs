//! Webhook endpoints, messages and attempts, written once for both backends (ADR 0032); the
//! outbox relay in [`relay`], delivery claims and attempts in [`deliveries`].
//!
//! PostgreSQL may run on several nodes at once: its writes that count before they write take
//! a shop's advisory lock or lock the rows they read (`FOR UPDATE SKIP LOCKED`, never waiting
//! on another claim). SQLite's single writer already serialises every write transaction, so
//! the same statements there go without the locks.

use keel_identity::domain::notice::AccountNotice;
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Cursor, Page, PageRequest},
};
use keel_webhooks::{
    domain::{Attempt, Channel, Endpoint, EndpointId, Message, MessageId},
    ports::{ENDPOINT_LIMIT, VERSION_CONFLICT},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Arg, Dialect, Exec, decode},
    for_update,
    rows::{
        ReadRow,
        webhooks::{attempt_from_row, endpoint_from_row, message_from_row},
    },
    store::tenants::insert_events,
};

/// The endpoint columns every read takes, in `endpoint_from_row`'s terms (a macro so that
/// statements are joined at compile time, never formatted at run time).
macro_rules! endpoint_cols {
    () => {
        "tenant_id, id, channel, url, description, event_types, enabled, disabled_reason, \
         secrets, failing_since, consecutive_failures, paused_until, created_at, updated_at, \
         version"
    };
}

/// The message columns every read takes.
macro_rules! message_cols {
    () => {
        "tenant_id, id, endpoint_id, event_id, event_type, body, status, attempts, \
         next_attempt_at, created_at"
    };
}

/// `$sql` followed by PostgreSQL's row-lock clause `$lock` (`" FOR UPDATE SKIP LOCKED"`), or
/// `$sql` alone on SQLite, whose single writer holds the database's write lock for the whole
/// transaction.
macro_rules! pg_lock {
    ($e:ty, $sql:expr, $lock:literal) => {
        $crate::exec::pick::<$e>(concat!($sql, $lock), $sql)
    };
}

pub mod deliveries;
pub mod relay;

/// The classes of the transaction-scoped advisory locks of one shop on PostgreSQL (the
/// two-key form: their own lock spaces, apart from the throttle's): its delivery claims, its
/// endpoint creations.
const SHOP_CLAIM_LOCK: i32 = 0x5748;
const SHOP_ENDPOINTS_LOCK: i32 = 0x5745;

/// A shop's advisory-lock key: the id's last (random) four bytes. A shared key only makes two
/// shops wait for each other.
fn shop_key(tenant: TenantId) -> i32 {
    let id = tenant.as_uuid();
    let bytes = id.as_bytes();
    i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}

/// Takes one of the shop's locks of `class` until the transaction ends, on PostgreSQL; SQLite's
/// single writer serialises the transactions it would order.
async fn lock_shop<E: Exec>(e: &mut E, class: i32, tenant: TenantId) -> Result<(), StoreError> {
    if E::DIALECT == Dialect::Postgres {
        // `Arg` binds integers as `int8`; the two-key form takes two `int4`s.
        e.run(
            "SELECT pg_advisory_xact_lock($1::int4, $2::int4)",
            args![class, shop_key(tenant)],
        )
        .await?;
    }
    Ok(())
}

/// Writes the endpoint: inserted when `expected` is none, else updated if it is still at the
/// `expected` version; answers whether a row was written.
async fn write_endpoint<E: Exec>(
    e: &mut E,
    endpoint: &Endpoint,
    expected: Option<i64>,
) -> Result<bool, StoreError> {
    let types = serde_json::to_string(&endpoint.event_types).map_err(StoreError::other)?;
    let secrets = serde_json::to_string(&endpoint.secrets).map_err(StoreError::other)?;
    let fields = [
        Arg::from(endpoint.tenant_id.as_uuid()),
        endpoint.id.as_uuid().into(),
        endpoint.url.as_str().into(),
        endpoint.description.as_str().into(),
        Arg::json(&types),
        endpoint.enabled.into(),
        endpoint.disabled_reason.as_deref().into(),
        Arg::json(&secrets),
        endpoint.failing_since.into(),
        endpoint.created_at.into(),
        endpoint.updated_at.into(),
        endpoint.version.into(),
        endpoint.channel.as_str().into(),
        endpoint.consecutive_failures.into(),
        endpoint.paused_until.into(),
    ];
    let written = match expected {
        None => {
            e.run(
                "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, \
                 enabled, disabled_reason, secrets, failing_since, created_at, updated_at, \
                 version, channel, consecutive_failures, paused_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &fields,
            )
            .await?
        }
        // An update writes the endpoint as read and changed (as for `failing_since`): a
        // failure counted meanwhile may be lost, which at worst gives a changed endpoint a
        // fresh start.
        Some(version) => {
            let mut with_version = fields.to_vec();
            with_version.push(version.into());
            e.run(
                "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, \
                 enabled = $6, disabled_reason = $7, secrets = $8, failing_since = $9, \
                 created_at = $10, updated_at = $11, version = $12, \
                 consecutive_failures = $14, paused_until = $15 \
                 WHERE tenant_id = $1 AND id = $2 AND version = $16 AND channel = $13",
                &with_version,
            )
            .await?
        }
    };
    Ok(written == 1)
}

/// Creates the endpoint unless its shop already has `max` of its channel. On PostgreSQL the
/// shop's endpoint lock is held until the commit: two creations on any nodes count one after
/// the other (each statement sees what the previous one committed). On SQLite the one writer
/// makes the count and the insert see every other creation.
pub async fn create_endpoint<E: Exec>(
    e: &mut E,
    endpoint: &Endpoint,
    max: i64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    lock_shop(e, SHOP_ENDPOINTS_LOCK, endpoint.tenant_id).await?;
    let have = e
        .one(
            "SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = $1 AND channel = $2",
            args![endpoint.tenant_id.as_uuid(), endpoint.channel.as_str()],
        )
        .await?
        .int("n")?;
    if have >= max {
        return Err(StoreError::Conflict {
            constraint: ENDPOINT_LIMIT.into(),
        });
    }
    write_endpoint(e, endpoint, None).await?;
    insert_events(e, events).await
}

pub async fn get_endpoint<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    channel: Channel,
    id: EndpointId,
) -> Result<Endpoint, StoreError> {
    let row = e
        .one(
            concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 AND channel = $3"
            ),
            args![tenant.as_uuid(), id.as_uuid(), channel.as_str()],
        )
        .await?;
    endpoint_from_row(&row)
}

pub async fn list_endpoints<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    channel: Channel,
    page: PageRequest,
) -> Result<Page<Endpoint>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = $1 AND channel = $4 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            args![
                tenant.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count(),
                channel.as_str()
            ],
        )
        .await?;
    let items = decode(&rows, endpoint_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |ep| {
        ep.id.as_uuid()
    }))
}

/// Writes the endpoint if it is still at `expected_version` (else `Conflict {
/// VERSION_CONFLICT }`).
pub async fn update_endpoint<E: Exec>(
    e: &mut E,
    endpoint: &Endpoint,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if !write_endpoint(e, endpoint, Some(expected_version)).await? {
        return Err(StoreError::Conflict {
            constraint: VERSION_CONFLICT.into(),
        });
    }
    insert_events(e, events).await
}

/// Deletes the endpoint with its messages and their attempts. PostgreSQL locks the endpoint
/// first, so no attempt or claim of it is half-way meanwhile.
pub async fn delete_endpoint<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    channel: Channel,
    id: EndpointId,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let found = e
        .opt(
            for_update!(
                E,
                "SELECT 1 AS found FROM webhook_endpoints \
                 WHERE tenant_id = $1 AND id = $2 AND channel = $3"
            ),
            args![tenant.as_uuid(), id.as_uuid(), channel.as_str()],
        )
        .await?;
    if found.is_none() {
        return Err(StoreError::NotFound);
    }
    for sql in [
        "DELETE FROM webhook_attempts WHERE tenant_id = $1 AND endpoint_id = $2",
        "DELETE FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2",
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
    ] {
        e.run(sql, args![tenant.as_uuid(), id.as_uuid()]).await?;
    }
    insert_events(e, events).await
}

/// The endpoint's messages, newest first.
pub async fn list_messages<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    endpoint: EndpointId,
    page: PageRequest,
) -> Result<Page<Message>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                message_cols!(),
                " FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2 \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ),
            args![
                tenant.as_uuid(),
                endpoint.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, message_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |m| m.id.as_uuid()))
}

/// A message of an endpoint of `channel`.
pub async fn get_message<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    channel: Channel,
    id: MessageId,
) -> Result<Message, StoreError> {
    let row = e
        .one(
            concat!(
                "SELECT ",
                message_cols!(),
                " FROM webhook_messages m WHERE tenant_id = $1 AND id = $2 AND EXISTS \
                 (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = m.tenant_id \
                 AND e.id = m.endpoint_id AND e.channel = $3)"
            ),
            args![tenant.as_uuid(), id.as_uuid(), channel.as_str()],
        )
        .await?;
    message_from_row(&row)
}

pub async fn list_attempts<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    message: MessageId,
    page: PageRequest,
) -> Result<Page<Attempt>, StoreError> {
    let rows = e
        .all(
            "SELECT tenant_id, id, message_id, endpoint_id, attempted_at, status_code, \
             latency_ms, error, response_body FROM webhook_attempts \
             WHERE tenant_id = $1 AND message_id = $2 AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4",
            args![
                tenant.as_uuid(),
                message.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, attempt_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |a| a.id.as_uuid()))
}

/// Queues a finished webhook message again, due at `now`.
pub async fn replay_message<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: MessageId,
    now: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    // Webhook messages only: an account notification's body is gone once it is done.
    let webhook = e
        .one(
            "SELECT count(*) AS n FROM webhook_messages m JOIN webhook_endpoints e \
             ON e.tenant_id = m.tenant_id AND e.id = m.endpoint_id \
             WHERE m.tenant_id = $1 AND m.id = $2 AND e.channel = 'webhook'",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?
        .int("n")?;
    if webhook != 1 {
        return Err(StoreError::NotFound);
    }
    // A message still pending or delivering is already queued: nothing to do.
    e.run(
        "UPDATE webhook_messages SET status = 'pending', next_attempt_at = $3, \
         locked_until = NULL WHERE tenant_id = $1 AND id = $2 \
         AND status IN ('delivered', 'failed')",
        args![tenant.as_uuid(), id.as_uuid(), now],
    )
    .await?;
    insert_events(e, events).await
}

/// Queues again the webhook endpoint's messages that failed since `since`; answers how many.
pub async fn replay_failed_since<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    endpoint: EndpointId,
    since: OffsetDateTime,
    now: OffsetDateTime,
    events: &[NewEvent],
) -> Result<u64, StoreError> {
    let queued = e
        .run(
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = $4, \
             locked_until = NULL WHERE tenant_id = $1 AND endpoint_id = $2 \
             AND status = 'failed' AND created_at >= $3 AND EXISTS (SELECT 1 \
             FROM webhook_endpoints e WHERE e.tenant_id = $1 AND e.id = $2 \
             AND e.channel = 'webhook')",
            args![tenant.as_uuid(), endpoint.as_uuid(), since, now],
        )
        .await?;
    insert_events(e, events).await?;
    Ok(queued)
}

/// Gives up the endpoint's pending messages (their bodies dropped); answers how many.
pub async fn abandon_pending<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    endpoint: EndpointId,
    at: OffsetDateTime,
) -> Result<u64, StoreError> {
    e.run(
        "UPDATE webhook_messages SET status = 'failed', body = '', next_attempt_at = $3, \
         locked_until = NULL WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending'",
        args![tenant.as_uuid(), endpoint.as_uuid(), at],
    )
    .await
}

/// Deletes up to `limit` messages finished before `before`, with their attempts; answers how
/// many messages. PostgreSQL skips the rows another node's prune holds.
pub async fn prune_messages<E: Exec>(
    e: &mut E,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, StoreError> {
    let rows = e
        .all(
            pg_lock!(
                E,
                "SELECT tenant_id, id FROM webhook_messages \
                 WHERE status IN ('delivered', 'failed') AND next_attempt_at < $1 \
                 ORDER BY next_attempt_at LIMIT $2",
                " FOR UPDATE SKIP LOCKED"
            ),
            args![before, limit],
        )
        .await?;
    let gone = decode(&rows, |r| Ok((r.uuid("tenant_id")?, r.uuid("id")?)))?;
    match E::DIALECT {
        // The whole batch in one statement per table, the keys as arrays (the rows are locked
        // by this transaction).
        Dialect::Postgres => {
            let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = gone.iter().copied().unzip();
            for sql in [
                "DELETE FROM webhook_attempts a USING unnest($1, $2) AS g (tenant_id, id) \
                 WHERE a.tenant_id = g.tenant_id AND a.message_id = g.id",
                "DELETE FROM webhook_messages m USING unnest($1, $2) AS g (tenant_id, id) \
                 WHERE m.tenant_id = g.tenant_id AND m.id = g.id",
            ] {
                e.run(sql, args![&tenants, &ids]).await?;
            }
        }
        // In-process statements cost no round trip.
        Dialect::Sqlite => {
            for &(shop, message) in &gone {
                for sql in [
                    "DELETE FROM webhook_attempts WHERE tenant_id = $1 AND message_id = $2",
                    "DELETE FROM webhook_messages WHERE tenant_id = $1 AND id = $2 \
                     AND status IN ('delivered', 'failed')",
                ] {
                    e.run(sql, args![shop, message]).await?;
                }
            }
        }
    }
    Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
}

/// Queues an account notice for the shop's enabled account-notification endpoint, if it has
/// one (written in the caller's transaction, with the token it carries).
pub async fn queue_notice<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    notice: &AccountNotice,
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, body, \
         status, attempts, next_attempt_at, locked_until, created_at) \
         SELECT tenant_id, $2, id, $3, $4, $5, 'pending', 0, $6, NULL, $6 \
         FROM webhook_endpoints WHERE tenant_id = $1 AND channel = 'account' AND enabled",
        args![
            tenant.as_uuid(),
            notice.message_id,
            notice.event_id.as_uuid(),
            notice.event_type,
            notice.sealed_body.as_str(),
            notice.created_at
        ],
    )
    .await?;
    Ok(())
}

/// The shop's enabled webhook endpoints (the fan-out's; never the account channel).
async fn webhook_endpoints_of<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<Vec<Endpoint>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints WHERE tenant_id = $1 AND enabled AND channel = 'webhook'"
            ),
            args![tenant.as_uuid()],
        )
        .await?;
    decode(&rows, endpoint_from_row)
}

/// Inserts a message unless the endpoint already has one for the event; answers 1 or 0.
async fn insert_message<E: Exec>(e: &mut E, m: &Message) -> Result<usize, StoreError> {
    let added = e
        .run(
            "INSERT INTO webhook_messages (tenant_id, id, endpoint_id, event_id, event_type, \
             body, status, attempts, next_attempt_at, locked_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10) \
             ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING",
            args![
                m.tenant_id.as_uuid(),
                m.id.as_uuid(),
                m.endpoint_id.as_uuid(),
                m.event_id.as_uuid(),
                &m.event_type,
                &m.body,
                m.status.as_str(),
                m.attempts,
                m.next_attempt_at,
                m.created_at
            ],
        )
        .await?;
    Ok(usize::try_from(added).unwrap_or(0))
}
