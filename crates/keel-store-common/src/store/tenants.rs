//! Tenants and the event log.

use keel_identity::{Tenant, TenantSlug};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, NewEvent, RecordedEvent, ReplayFilter},
    page::{Cursor, Limit, Page, PageRequest},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Arg, Dialect, Exec, decode, pick},
    rows::{ReadRow, events::event_from_row, identity::tenant_from_row},
};

/// The `SELECT` that turns five bound arrays into outbox rows, for an `INSERT INTO
/// outbox_events (tenant_id, id, event_type, payload, occurred_at)` in a PostgreSQL-only
/// statement; the arguments are the parameter numbers of the arrays, bound in
/// `EventArrays`' order.
macro_rules! events_from_arrays {
    ($tenants:literal, $ids:literal, $types:literal, $payloads:literal, $occurred:literal) => {
        concat!(
            "SELECT e.tenant_id, e.id, e.event_type, e.payload::jsonb, e.occurred_at FROM unnest(",
            $tenants,
            "::uuid[], ",
            $ids,
            "::uuid[], ",
            $types,
            "::text[], ",
            $payloads,
            "::text[], ",
            $occurred,
            "::timestamptz[]) AS e (tenant_id, id, event_type, payload, occurred_at)"
        )
    };
}
pub(crate) use events_from_arrays;

/// A write's events as parallel arrays, so any number of them is one part of the write's own
/// statement (PostgreSQL).
#[derive(Debug)]
pub(crate) struct EventArrays {
    pub(crate) tenants: Vec<Uuid>,
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<&'static str>,
    pub(crate) payloads: Vec<String>,
    pub(crate) occurred: Vec<OffsetDateTime>,
}

impl EventArrays {
    pub(crate) fn of(events: &[NewEvent]) -> Self {
        Self {
            tenants: events.iter().map(|e| e.tenant_id.as_uuid()).collect(),
            ids: events.iter().map(|e| e.id.as_uuid()).collect(),
            types: events.iter().map(|e| e.event_type).collect(),
            payloads: events.iter().map(|e| e.payload.to_string()).collect(),
            occurred: events.iter().map(|e| e.occurred_at).collect(),
        }
    }
}

/// Appends events inside the caller's transaction.
pub async fn insert_events<E: Exec>(e: &mut E, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    match E::DIALECT {
        // Any number of events in one statement, as parallel arrays: one round trip.
        Dialect::Postgres => {
            let arrays = EventArrays::of(events);
            e.run(
                concat!(
                    "INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) ",
                    events_from_arrays!("$1", "$2", "$3", "$4", "$5")
                ),
                args![
                    &arrays.tenants,
                    &arrays.ids,
                    Arg::Strs(&arrays.types),
                    &arrays.payloads,
                    &arrays.occurred
                ],
            )
            .await?;
        }
        // In-process statements cost no round trip.
        Dialect::Sqlite => {
            for ev in events {
                let payload = ev.payload.to_string();
                e.run(
                    "INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        ev.tenant_id.as_uuid().into(),
                        ev.id.as_uuid().into(),
                        ev.event_type.into(),
                        Arg::json(&payload),
                        ev.occurred_at.into(),
                    ],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Inserts a tenant inside the caller's transaction.
pub async fn insert_tenant<E: Exec>(e: &mut E, tenant: &Tenant) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)",
        args![
            tenant.id.as_uuid(),
            tenant.slug.as_str(),
            tenant.name.as_str(),
            tenant.created_at
        ],
    )
    .await?;
    Ok(())
}

pub async fn create<E: Exec>(
    e: &mut E,
    tenant: &Tenant,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_tenant(e, tenant).await?;
    insert_events(e, events).await
}

pub async fn get<E: Exec>(e: &mut E, id: TenantId) -> Result<Tenant, StoreError> {
    let row = e
        .one(
            "SELECT id, slug, name, created_at FROM tenants WHERE id = $1",
            args![id.as_uuid()],
        )
        .await?;
    tenant_from_row(&row)
}

pub async fn get_by_slug<E: Exec>(e: &mut E, slug: &TenantSlug) -> Result<Tenant, StoreError> {
    let row = e
        .one(
            "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1",
            args![slug.as_str()],
        )
        .await?;
    tenant_from_row(&row)
}

pub async fn list<E: Exec>(e: &mut E, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
    let rows = e
        .all(
            "SELECT id, slug, name, created_at FROM tenants \
             WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
            args![page.after.map(Cursor::after_id), page.limit.fetch_count()],
        )
        .await?;
    let tenants = decode(&rows, tenant_from_row)?;
    Ok(Page::from_overfetch(tenants, page.limit, |t| {
        t.id.as_uuid()
    }))
}

pub async fn get_event<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: EventId,
) -> Result<RecordedEvent, StoreError> {
    let row = e
        .one(
            "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    event_from_row(&row)
}

/// See [`keel_kernel::event::EventLog::replay`]: the last event's relay number first, then
/// the events numbered after it (their index is on the tenant and the number).
pub async fn replay_events<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    last: EventId,
    filter: &ReplayFilter,
    limit: Limit,
) -> Result<Page<RecordedEvent>, StoreError> {
    let seq = e
        .opt(
            "SELECT relay_seq FROM outbox_events WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), last.as_uuid()],
        )
        .await?
        .map(|r| r.opt_int("relay_seq"))
        .transpose()?
        .flatten();
    // Without a number for `last`, id order over relayed events only (what reached streams).
    let (after, fallback) = match seq {
        Some(seq) => (Arg::from(seq), false),
        None => (Arg::from(last.as_uuid()), true),
    };
    // The filter's value is `$4` in every statement: a type prefix, or an order id.
    let (sql, value) = match (filter, fallback) {
        (ReplayFilter::Shop { type_prefix }, false) => (
            "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND relay_seq > $2 \
             AND ($4 IS NULL OR substr(event_type, 1, length($4)) = $4) \
             ORDER BY relay_seq LIMIT $3",
            type_prefix.as_deref(),
        ),
        (ReplayFilter::Shop { type_prefix }, true) => (
            "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND id > $2 AND relayed_at IS NOT NULL \
             AND ($4 IS NULL OR substr(event_type, 1, length($4)) = $4) \
             ORDER BY id LIMIT $3",
            type_prefix.as_deref(),
        ),
        // Each dialect's order expression is the one its index is built on.
        (ReplayFilter::Order(order), false) => (
            pick::<E>(
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND payload ->> 'order_id' = $4 AND relay_seq > $2 \
                 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 ORDER BY relay_seq LIMIT $3",
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND json_extract(payload, '$.order_id') = $4 AND relay_seq > $2 \
                 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 ORDER BY relay_seq LIMIT $3",
            ),
            Some(order.as_str()),
        ),
        (ReplayFilter::Order(order), true) => (
            pick::<E>(
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND payload ->> 'order_id' = $4 AND id > $2 \
                 AND relayed_at IS NOT NULL \
                 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 ORDER BY id LIMIT $3",
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND json_extract(payload, '$.order_id') = $4 AND id > $2 \
                 AND relayed_at IS NOT NULL \
                 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 ORDER BY id LIMIT $3",
            ),
            Some(order.as_str()),
        ),
    };
    let rows = e
        .all(
            sql,
            &[
                Arg::from(tenant.as_uuid()),
                after,
                Arg::from(limit.fetch_count()),
                Arg::from(value),
            ],
        )
        .await?;
    let events = decode(&rows, event_from_row)?;
    Ok(Page::from_overfetch(events, limit, |e| e.id.as_uuid()))
}

pub async fn list_events<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    page: PageRequest,
    type_prefix: Option<&str>,
) -> Result<Page<RecordedEvent>, StoreError> {
    let rows = e
        .all(
            "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) \
             AND ($4 IS NULL OR substr(event_type, 1, length($4)) = $4) ORDER BY id LIMIT $3",
            args![
                tenant.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count(),
                type_prefix
            ],
        )
        .await?;
    let events = decode(&rows, event_from_row)?;
    Ok(Page::from_overfetch(events, page.limit, |e| e.id.as_uuid()))
}
