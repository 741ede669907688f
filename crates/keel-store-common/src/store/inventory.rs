//! Stock locations, inventory levels, the adjustment ledger and reservations, written once for
//! both backends (ADR 0032). Every change of a level is one conditional `UPDATE` whose `WHERE`
//! states the invariant, so no interleaving of requests can break `0 <= reserved <= on_hand`
//! (the table's CHECK is the second wall).

use keel_catalog::{
    domain::{
        Adjustment, InventoryLevel, Location, LocationId, Reservation, ReservationId, VariantId,
        limits,
    },
    ports::{INSUFFICIENT_STOCK, LOCATION_IN_USE, StorefrontSettings, VERSION_CONFLICT},
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Cursor, Page, PageRequest},
};
use keel_orders::order::StockMove;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Exec, decode, pick},
    rows::{
        ReadRow,
        catalog::{level as level_from_row, location as location_from_row},
    },
    store::tenants::insert_events,
};

pub(crate) fn insufficient() -> StoreError {
    StoreError::Conflict {
        constraint: INSUFFICIENT_STOCK.into(),
    }
}

fn version_conflict() -> StoreError {
    StoreError::Conflict {
        constraint: VERSION_CONFLICT.into(),
    }
}

async fn read_level<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variant: VariantId,
    location: LocationId,
) -> Result<InventoryLevel, StoreError> {
    let row = e
        .one(
            "SELECT tenant_id, variant_id, location_id, on_hand, reserved, updated_at \
             FROM inventory_levels WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3",
            args![tenant.as_uuid(), variant.as_uuid(), location.as_uuid()],
        )
        .await?;
    level_from_row(&row)
}

/// Applies the adjustment inside the caller's transaction.
async fn apply_adjustment<E: Exec>(
    e: &mut E,
    a: &Adjustment,
) -> Result<InventoryLevel, StoreError> {
    let known = e
        .one(
            "SELECT (SELECT count(*) FROM variants WHERE tenant_id = $1 AND id = $2) \
             * (SELECT count(*) FROM stock_locations WHERE tenant_id = $1 AND id = $3) AS n",
            args![
                a.tenant_id.as_uuid(),
                a.variant_id.as_uuid(),
                a.location_id.as_uuid()
            ],
        )
        .await?
        .int("n")?;
    if known != 1 {
        return Err(StoreError::NotFound);
    }
    let now = a.created_at;
    e.run(
        "INSERT INTO inventory_levels (tenant_id, id, variant_id, location_id, on_hand, reserved, \
         updated_at) VALUES ($1, $2, $3, $4, 0, 0, $5) \
         ON CONFLICT (tenant_id, variant_id, location_id) DO NOTHING",
        args![
            a.tenant_id.as_uuid(),
            Uuid::now_v7(),
            a.variant_id.as_uuid(),
            a.location_id.as_uuid(),
            now
        ],
    )
    .await?;
    let done = e
        .run(
            "UPDATE inventory_levels SET on_hand = on_hand + $4, updated_at = $5 \
             WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3 \
             AND on_hand + $4 >= reserved AND on_hand + $4 <= $6",
            args![
                a.tenant_id.as_uuid(),
                a.variant_id.as_uuid(),
                a.location_id.as_uuid(),
                a.delta,
                now,
                limits::QUANTITY_MAX
            ],
        )
        .await?;
    if done != 1 {
        return Err(insufficient());
    }
    e.run(
        "INSERT INTO inventory_adjustments (tenant_id, id, variant_id, location_id, delta, reason, \
         note, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            a.tenant_id.as_uuid(),
            a.id.as_uuid(),
            a.variant_id.as_uuid(),
            a.location_id.as_uuid(),
            a.delta,
            a.reason.as_str(),
            a.note.as_deref(),
            &a.actor,
            now
        ],
    )
    .await?;
    read_level(e, a.tenant_id, a.variant_id, a.location_id).await
}

/// Holds a reservation's units at its location inside the caller's transaction; refused
/// (`INSUFFICIENT_STOCK`) unless that many are available.
pub async fn apply_reservation<E: Exec>(
    e: &mut E,
    r: &Reservation,
) -> Result<InventoryLevel, StoreError> {
    let now = r.created_at;
    // The conditional update answers the new level itself (one statement fewer per line in
    // the checkout transaction: a round trip on PostgreSQL, time holding the single writer on
    // SQLite).
    let level = e
        .opt(
            "UPDATE inventory_levels SET reserved = reserved + $4, updated_at = $5 \
             WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3 \
             AND on_hand - reserved >= $4 \
             RETURNING tenant_id, variant_id, location_id, on_hand, reserved, updated_at",
            args![
                r.tenant_id.as_uuid(),
                r.variant_id.as_uuid(),
                r.location_id.as_uuid(),
                r.quantity,
                now
            ],
        )
        .await?
        .ok_or_else(insufficient)?;
    e.run(
        "INSERT INTO reservations (tenant_id, id, variant_id, location_id, quantity, created_at, \
         released_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        args![
            r.tenant_id.as_uuid(),
            r.id.as_uuid(),
            r.variant_id.as_uuid(),
            r.location_id.as_uuid(),
            r.quantity,
            now
        ],
    )
    .await?;
    level_from_row(&level)
}

/// Takes `quantity` units of a reservation out of stock (fulfilment): `on_hand` and
/// `reserved` both drop, and the ledger records it. Conditional on the reservation still
/// holding that many units.
pub async fn commit_reserved<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    m: &StockMove,
    actor: &str,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    let held = e
        .run(
            "UPDATE reservations SET fulfilled = fulfilled + $3 WHERE tenant_id = $1 AND id = $2 \
             AND released_at IS NULL AND quantity - fulfilled >= $3",
            args![tenant.as_uuid(), m.reservation_id.as_uuid(), m.quantity],
        )
        .await?;
    let taken = e
        .run(
            "UPDATE inventory_levels SET on_hand = on_hand - $4, reserved = reserved - $4, \
             updated_at = $5 WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3 \
             AND reserved >= $4",
            args![
                tenant.as_uuid(),
                m.variant_id.as_uuid(),
                m.location_id.as_uuid(),
                m.quantity,
                at_time
            ],
        )
        .await?;
    if held != 1 || taken != 1 {
        return Err(insufficient());
    }
    e.run(
        "INSERT INTO inventory_adjustments (tenant_id, id, variant_id, location_id, delta, reason, \
         note, actor, created_at) VALUES ($1, $2, $3, $4, $5, 'fulfilled', NULL, $6, $7)",
        args![
            tenant.as_uuid(),
            Uuid::now_v7(),
            m.variant_id.as_uuid(),
            m.location_id.as_uuid(),
            -m.quantity,
            actor,
            at_time
        ],
    )
    .await?;
    Ok(())
}

/// Releases what a reservation still holds (once): `reserved` drops by its unfulfilled units.
/// False when it was released already (nothing is written).
pub async fn release_reserved<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    reservation: ReservationId,
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let Some(r) = e
        .opt(
            "UPDATE reservations SET released_at = $3 WHERE tenant_id = $1 AND id = $2 \
             AND released_at IS NULL \
             RETURNING variant_id, location_id, quantity - fulfilled AS held",
            args![tenant.as_uuid(), reservation.as_uuid(), at_time],
        )
        .await?
    else {
        return Ok(false);
    };
    e.run(
        "UPDATE inventory_levels SET reserved = reserved - $4, updated_at = $5 \
         WHERE tenant_id = $1 AND variant_id = $2 AND location_id = $3",
        args![
            tenant.as_uuid(),
            r.uuid("variant_id")?,
            r.uuid("location_id")?,
            r.int("held")?,
            at_time
        ],
    )
    .await?;
    Ok(true)
}

pub async fn create_location<E: Exec>(
    e: &mut E,
    l: &Location,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO stock_locations (tenant_id, id, name, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            l.tenant_id.as_uuid(),
            l.id.as_uuid(),
            &l.name,
            l.created_at,
            l.updated_at,
            l.version
        ],
    )
    .await?;
    insert_events(e, events).await
}

pub async fn get_location<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: LocationId,
) -> Result<Location, StoreError> {
    let row = e
        .one(
            "SELECT tenant_id, id, name, created_at, updated_at, version FROM stock_locations \
             WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    location_from_row(&row)
}

pub async fn list_locations<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    page: PageRequest,
) -> Result<Page<Location>, StoreError> {
    let rows = e
        .all(
            "SELECT tenant_id, id, name, created_at, updated_at, version FROM stock_locations \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
            args![
                tenant.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, location_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |l| l.id.as_uuid()))
}

/// Renames a location at the expected version and appends the events.
pub async fn update_location<E: Exec>(
    e: &mut E,
    l: &Location,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE stock_locations SET name = $3, updated_at = $4, version = $5 \
             WHERE tenant_id = $1 AND id = $2 AND version = $6",
            args![
                l.tenant_id.as_uuid(),
                l.id.as_uuid(),
                &l.name,
                l.updated_at,
                l.version,
                expected_version
            ],
        )
        .await?;
    if done != 1 {
        return Err(version_conflict());
    }
    insert_events(e, events).await
}

/// Deletes a location (at the expected version, if given) with its empty levels, refusing
/// while any stock is on hand or reserved there; appends the events.
pub async fn delete_location<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: LocationId,
    expected_version: Option<i64>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let version = e
        .opt(
            "SELECT version FROM stock_locations WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?
        .map(|r| r.int("version"))
        .transpose()?;
    match version {
        None => return Err(StoreError::NotFound),
        Some(v) if expected_version.is_some_and(|x| x != v) => return Err(version_conflict()),
        Some(_) => {}
    }
    let stocked = e
        .one(
            "SELECT count(*) AS n FROM inventory_levels WHERE tenant_id = $1 AND location_id = $2 \
             AND (on_hand <> 0 OR reserved <> 0)",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?
        .int("n")?;
    if stocked > 0 {
        return Err(StoreError::Conflict {
            constraint: LOCATION_IN_USE.into(),
        });
    }
    for sql in [
        "DELETE FROM inventory_levels WHERE tenant_id = $1 AND location_id = $2",
        "DELETE FROM stock_locations WHERE tenant_id = $1 AND id = $2",
    ] {
        e.run(sql, args![tenant.as_uuid(), id.as_uuid()]).await?;
    }
    insert_events(e, events).await
}

pub async fn list_levels<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variant: Option<VariantId>,
    location: Option<LocationId>,
    page: PageRequest,
) -> Result<Page<InventoryLevel>, StoreError> {
    let rows = e
        .all(
            "SELECT id, tenant_id, variant_id, location_id, on_hand, reserved, updated_at \
             FROM inventory_levels WHERE tenant_id = $1 AND ($2 IS NULL OR variant_id = $2) \
             AND ($3 IS NULL OR location_id = $3) AND ($4 IS NULL OR id > $4) \
             ORDER BY id LIMIT $5",
            args![
                tenant.as_uuid(),
                variant.map(|v| v.as_uuid()),
                location.map(|l| l.as_uuid()),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    // The level's own id is the page's key; the domain's level does not carry it.
    let items = decode(&rows, |r| Ok((r.uuid("id")?, level_from_row(r)?)))?;
    Ok(Page::from_overfetch(items, page.limit, |(id, _)| *id).map(|(_, l)| l))
}

pub async fn location_with_stock<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variant: VariantId,
    quantity: i64,
) -> Result<Option<LocationId>, StoreError> {
    let row = e
        .opt(
            "SELECT location_id FROM inventory_levels \
             WHERE tenant_id = $1 AND variant_id = $2 AND on_hand - reserved >= $3 \
             ORDER BY id LIMIT 1",
            args![tenant.as_uuid(), variant.as_uuid(), quantity],
        )
        .await?;
    row.map(|r| r.uuid("location_id").map(LocationId::from_uuid))
        .transpose()
}

/// Applies an adjustment and appends the events; answers the new level.
pub async fn adjust<E: Exec>(
    e: &mut E,
    adjustment: &Adjustment,
    events: &[NewEvent],
) -> Result<InventoryLevel, StoreError> {
    let level = apply_adjustment(e, adjustment).await?;
    insert_events(e, events).await?;
    Ok(level)
}

/// Holds a reservation and appends the events; answers the new level.
pub async fn reserve<E: Exec>(
    e: &mut E,
    reservation: &Reservation,
    events: &[NewEvent],
) -> Result<InventoryLevel, StoreError> {
    let level = apply_reservation(e, reservation).await?;
    insert_events(e, events).await?;
    Ok(level)
}

/// Releases a reservation and appends the events; false, with nothing written (not even the
/// events), when it was released already.
pub async fn release<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: ReservationId,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<bool, StoreError> {
    if !release_reserved(e, tenant, id, at_time).await? {
        return Ok(false);
    }
    insert_events(e, events).await?;
    Ok(true)
}

pub async fn available<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variants: &[VariantId],
) -> Result<Vec<(VariantId, i64)>, StoreError> {
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<Uuid> = variants.iter().map(VariantId::as_uuid).collect();
    // A list of ids: an array on PostgreSQL, a JSON array of hex forms on SQLite. PostgreSQL
    // sums `bigint`s into a `numeric`, hence its cast back.
    let rows = e
        .all(
            pick::<E>(
                "SELECT variant_id, sum(on_hand - reserved)::bigint AS available \
                 FROM inventory_levels WHERE tenant_id = $1 AND variant_id = ANY($2) \
                 GROUP BY variant_id",
                "SELECT variant_id, sum(on_hand - reserved) AS available \
                 FROM inventory_levels WHERE tenant_id = $1 \
                 AND variant_id IN (SELECT unhex(value) FROM json_each($2)) GROUP BY variant_id",
            ),
            args![tenant.as_uuid(), &list],
        )
        .await?;
    decode(&rows, |r| {
        Ok((
            VariantId::from_uuid(r.uuid("variant_id")?),
            r.int("available")?,
        ))
    })
}

pub async fn storefront_settings<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<StorefrontSettings, StoreError> {
    let show = e
        .opt(
            "SELECT show_stock_counts FROM storefront_settings WHERE tenant_id = $1",
            args![tenant.as_uuid()],
        )
        .await?
        .map(|r| r.flag("show_stock_counts"))
        .transpose()?;
    Ok(StorefrontSettings {
        show_stock_counts: show.unwrap_or(false),
    })
}

pub async fn set_storefront_settings<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    settings: StorefrontSettings,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO storefront_settings (tenant_id, show_stock_counts) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET show_stock_counts = excluded.show_stock_counts",
        args![tenant.as_uuid(), settings.show_stock_counts],
    )
    .await?;
    insert_events(e, events).await
}
