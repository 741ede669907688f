//! Stock locations, inventory levels, the adjustment ledger and reservations on SQLite. Every
//! change of a level is one conditional `UPDATE` whose `WHERE` states the invariant, so no
//! interleaving of requests can break `0 <= reserved <= on_hand` (the table's CHECK is the
//! second wall).

use async_trait::async_trait;
use keel_catalog::{
    domain::{
        Adjustment, InventoryLevel, Location, LocationId, Reservation, ReservationId, VariantId,
        limits,
    },
    ports::{
        INSUFFICIENT_STOCK, InventoryStore, LOCATION_IN_USE, StorefrontSettings, VERSION_CONFLICT,
    },
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::db::{self, Get};
use crate::{SqliteStore, error::map_err, tenants::insert_events, to_micros};
use keel_store_common::rows::catalog::{level as level_from_row, location as location_from_row};

fn read_level(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    variant: VariantId,
    location: LocationId,
) -> Result<InventoryLevel, StoreError> {
    let r = db::query(
        "SELECT tenant_id, variant_id, location_id, on_hand, reserved, updated_at FROM inventory_levels \
         WHERE tenant_id = ?1 AND variant_id = ?2 AND location_id = ?3",
    )
    .bind(tenant.as_uuid())
    .bind(variant.as_uuid())
    .bind(location.as_uuid())
    .fetch_one(tx)?;
    level_from_row(&r)
}

fn insufficient() -> StoreError {
    StoreError::Conflict {
        constraint: INSUFFICIENT_STOCK.into(),
    }
}

/// Applies the adjustment inside the caller's transaction.
fn apply_adjustment(
    tx: &rusqlite::Connection,
    a: &Adjustment,
) -> Result<InventoryLevel, StoreError> {
    let known: i64 = db::query(
        "SELECT (SELECT count(*) FROM variants WHERE tenant_id = ?1 AND id = ?2) \
         * (SELECT count(*) FROM stock_locations WHERE tenant_id = ?1 AND id = ?3)",
    )
    .bind(a.tenant_id.as_uuid())
    .bind(a.variant_id.as_uuid())
    .bind(a.location_id.as_uuid())
    .scalar(tx)?;
    if known != 1 {
        return Err(StoreError::NotFound);
    }
    let now = to_micros(a.created_at)?;
    db::query(
        "INSERT INTO inventory_levels (tenant_id, id, variant_id, location_id, on_hand, reserved, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 0, 0, ?5) ON CONFLICT (tenant_id, variant_id, location_id) DO NOTHING",
    )
    .bind(a.tenant_id.as_uuid())
    .bind(uuid::Uuid::now_v7())
    .bind(a.variant_id.as_uuid())
    .bind(a.location_id.as_uuid())
    .bind(now)
    .execute(tx)?;
    let done = db::query(
        "UPDATE inventory_levels SET on_hand = on_hand + ?4, updated_at = ?5 \
         WHERE tenant_id = ?1 AND variant_id = ?2 AND location_id = ?3 \
         AND on_hand + ?4 >= reserved AND on_hand + ?4 <= ?6",
    )
    .bind(a.tenant_id.as_uuid())
    .bind(a.variant_id.as_uuid())
    .bind(a.location_id.as_uuid())
    .bind(a.delta)
    .bind(now)
    .bind(limits::QUANTITY_MAX)
    .execute(tx)?;
    if done.rows_affected() != 1 {
        return Err(insufficient());
    }
    db::query(
        "INSERT INTO inventory_adjustments (tenant_id, id, variant_id, location_id, delta, reason, note, actor, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(a.tenant_id.as_uuid())
    .bind(a.id.as_uuid())
    .bind(a.variant_id.as_uuid())
    .bind(a.location_id.as_uuid())
    .bind(a.delta)
    .bind(a.reason.as_str())
    .bind(a.note.as_deref())
    .bind(&a.actor)
    .bind(now)
    .execute(tx)?;
    read_level(tx, a.tenant_id, a.variant_id, a.location_id)
}

pub(crate) fn apply_reservation(
    tx: &rusqlite::Connection,
    r: &Reservation,
) -> Result<InventoryLevel, StoreError> {
    let now = to_micros(r.created_at)?;
    // The conditional update answers the new level itself (one statement fewer per line in
    // the checkout transaction, which holds the single writer).
    let level = db::query(
        "UPDATE inventory_levels SET reserved = reserved + ?4, updated_at = ?5 \
         WHERE tenant_id = ?1 AND variant_id = ?2 AND location_id = ?3 AND on_hand - reserved >= ?4 \
         RETURNING tenant_id, variant_id, location_id, on_hand, reserved, updated_at",
    )
    .bind(r.tenant_id.as_uuid())
    .bind(r.variant_id.as_uuid())
    .bind(r.location_id.as_uuid())
    .bind(r.quantity)
    .bind(now)
    .fetch_optional(tx)?
    .ok_or_else(insufficient)?;
    db::query(
        "INSERT INTO reservations (tenant_id, id, variant_id, location_id, quantity, created_at, released_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
    )
    .bind(r.tenant_id.as_uuid())
    .bind(r.id.as_uuid())
    .bind(r.variant_id.as_uuid())
    .bind(r.location_id.as_uuid())
    .bind(r.quantity)
    .bind(now)
    .execute(tx)?;
    level_from_row(&level)
}

/// Takes `quantity` units of a reservation out of stock (fulfilment): `on_hand` and
/// `reserved` both drop, and the ledger records it. Conditional on the reservation still
/// holding that many units.
pub(crate) fn commit_reserved(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    m: &keel_orders::order::StockMove,
    actor: &str,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    let now = to_micros(at_time)?;
    let held = db::query(
        "UPDATE reservations SET fulfilled = fulfilled + ?3 WHERE tenant_id = ?1 AND id = ?2 \
         AND released_at IS NULL AND quantity - fulfilled >= ?3",
    )
    .bind(tenant.as_uuid())
    .bind(m.reservation_id.as_uuid())
    .bind(m.quantity)
    .execute(tx)?;
    let taken = db::query(
        "UPDATE inventory_levels SET on_hand = on_hand - ?4, reserved = reserved - ?4, updated_at = ?5 \
         WHERE tenant_id = ?1 AND variant_id = ?2 AND location_id = ?3 AND reserved >= ?4",
    )
    .bind(tenant.as_uuid())
    .bind(m.variant_id.as_uuid())
    .bind(m.location_id.as_uuid())
    .bind(m.quantity)
    .bind(now)
    .execute(tx)?;
    if held.rows_affected() != 1 || taken.rows_affected() != 1 {
        return Err(insufficient());
    }
    db::query(
        "INSERT INTO inventory_adjustments (tenant_id, id, variant_id, location_id, delta, reason, note, actor, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'fulfilled', NULL, ?6, ?7)",
    )
    .bind(tenant.as_uuid())
    .bind(uuid::Uuid::now_v7())
    .bind(m.variant_id.as_uuid())
    .bind(m.location_id.as_uuid())
    .bind(-m.quantity)
    .bind(actor)
    .bind(now)
    .execute(tx)?;
    Ok(())
}

/// Releases what a reservation still holds (once): `reserved` drops by its unfulfilled units.
pub(crate) fn release_reserved(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    reservation: ReservationId,
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let row = db::query(
        "UPDATE reservations SET released_at = ?3 WHERE tenant_id = ?1 AND id = ?2 AND released_at IS NULL \
         RETURNING variant_id, location_id, quantity - fulfilled AS held",
    )
    .bind(tenant.as_uuid())
    .bind(reservation.as_uuid())
    .bind(to_micros(at_time)?)
    .fetch_optional(tx)?;
    let Some(r) = row else {
        return Ok(false);
    };
    db::query(
        "UPDATE inventory_levels SET reserved = reserved - ?4, updated_at = ?5 \
         WHERE tenant_id = ?1 AND variant_id = ?2 AND location_id = ?3",
    )
    .bind(tenant.as_uuid())
    .bind(r.col::<uuid::Uuid>("variant_id")?)
    .bind(r.col::<uuid::Uuid>("location_id")?)
    .bind(r.col::<i64>("held")?)
    .bind(to_micros(at_time)?)
    .execute(tx)?;
    Ok(true)
}

fn remove_location(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    id: LocationId,
    expected_version: Option<i64>,
) -> Result<(), StoreError> {
    let version: Option<i64> =
        db::query("SELECT version FROM stock_locations WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .scalar_optional(tx)?;
    match version {
        None => return Err(StoreError::NotFound),
        Some(v) if expected_version.is_some_and(|e| e != v) => {
            return Err(StoreError::Conflict {
                constraint: VERSION_CONFLICT.into(),
            });
        }
        Some(_) => {}
    }
    let stocked: i64 = db::query(
        "SELECT count(*) FROM inventory_levels WHERE tenant_id = ?1 AND location_id = ?2 \
         AND (on_hand <> 0 OR reserved <> 0)",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .scalar(tx)?;
    if stocked > 0 {
        return Err(StoreError::Conflict {
            constraint: LOCATION_IN_USE.into(),
        });
    }
    for sql in [
        "DELETE FROM inventory_levels WHERE tenant_id = ?1 AND location_id = ?2",
        "DELETE FROM stock_locations WHERE tenant_id = ?1 AND id = ?2",
    ] {
        db::query(sql)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(tx)?;
    }
    Ok(())
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
impl InventoryStore for SqliteStore {
    async fn create_location(&self, l: &Location, events: &[NewEvent]) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            db::query(
                "INSERT INTO stock_locations (tenant_id, id, name, created_at, updated_at, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(l.tenant_id.as_uuid())
            .bind(l.id.as_uuid())
            .bind(&l.name)
            .bind(to_micros(l.created_at)?)
            .bind(to_micros(l.updated_at)?)
            .bind(l.version)
            .execute(&tx)
            .map(|_| ())
            .map_err(map_err)
        })
    }

    async fn get_location(&self, tenant: TenantId, id: LocationId) -> Result<Location, StoreError> {
        let r = self.read(|c| {
            db::query(
                "SELECT tenant_id, id, name, created_at, updated_at, version FROM stock_locations \
             WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c)
        })?;
        location_from_row(&r)
    }

    async fn list_locations(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Location>, StoreError> {
        let rows = self.read(|c| {
            db::query(
                "SELECT tenant_id, id, name, created_at, updated_at, version FROM stock_locations \
             WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
            )
            .bind(tenant.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c)
        })?;
        let items = rows
            .iter()
            .map(location_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |l| l.id.as_uuid()))
    }

    async fn update_location(
        &self,
        l: &Location,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            let done = db::query(
                "UPDATE stock_locations SET name = ?3, updated_at = ?4, version = ?5 \
                 WHERE tenant_id = ?1 AND id = ?2 AND version = ?6",
            )
            .bind(l.tenant_id.as_uuid())
            .bind(l.id.as_uuid())
            .bind(&l.name)
            .bind(to_micros(l.updated_at)?)
            .bind(l.version)
            .bind(expected_version)
            .execute(&tx)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    constraint: VERSION_CONFLICT.into(),
                })
            }
        })
    }

    async fn delete_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| remove_location(
            &tx,
            tenant,
            id,
            expected_version
        ))
    }

    async fn list_levels(
        &self,
        tenant: TenantId,
        variant: Option<VariantId>,
        location: Option<LocationId>,
        page: PageRequest,
    ) -> Result<Page<InventoryLevel>, StoreError> {
        let rows = self.read(|c| db::query(
            "SELECT id, tenant_id, variant_id, location_id, on_hand, reserved, updated_at FROM inventory_levels \
             WHERE tenant_id = ?1 AND (?2 IS NULL OR variant_id = ?2) AND (?3 IS NULL OR location_id = ?3) \
             AND (?4 IS NULL OR id > ?4) ORDER BY id LIMIT ?5",
        )
        .bind(tenant.as_uuid())
        .bind(variant.map(|v| v.as_uuid()))
        .bind(location.map(|l| l.as_uuid()))
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .fetch_all(c))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: uuid::Uuid = r.col("id")?;
            items.push((id, level_from_row(r)?));
        }
        Ok(Page::from_overfetch(items, page.limit, |(id, _)| *id).map(|(_, l)| l))
    }

    async fn location_with_stock(
        &self,
        tenant: TenantId,
        variant: VariantId,
        quantity: i64,
    ) -> Result<Option<LocationId>, StoreError> {
        let id: Option<uuid::Uuid> = self.read(|c| {
            db::query(
                "SELECT location_id FROM inventory_levels \
                 WHERE tenant_id = ?1 AND variant_id = ?2 AND on_hand - reserved >= ?3 ORDER BY id LIMIT 1",
            )
            .bind(tenant.as_uuid())
            .bind(variant.as_uuid())
            .bind(quantity)
            .scalar_optional(c)
        })?;
        Ok(id.map(LocationId::from_uuid))
    }

    async fn adjust(
        &self,
        adjustment: &Adjustment,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        in_write!(self, events, |tx| apply_adjustment(&tx, adjustment))
    }

    async fn reserve(
        &self,
        reservation: &Reservation,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        in_write!(self, events, |tx| apply_reservation(&tx, reservation))
    }

    async fn release(
        &self,
        tenant: TenantId,
        id: ReservationId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let tx = self.write().await?;
        if !release_reserved(&tx, tenant, id, at_time)? {
            tx.rollback().map_err(map_err)?;
            return Ok(false);
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn available(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
    ) -> Result<Vec<(VariantId, i64)>, StoreError> {
        if variants.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::Value::from(
            variants
                .iter()
                .map(|v| v.as_uuid().simple().to_string())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let rows = self.read(|c| db::query(
            "SELECT variant_id, sum(on_hand - reserved) AS available FROM inventory_levels \
             WHERE tenant_id = ?1 AND variant_id IN (SELECT unhex(value) FROM json_each(?2)) GROUP BY variant_id",
        )
        .bind(tenant.as_uuid())
        .bind(list)
        .fetch_all(c))?;
        rows.iter()
            .map(|r| {
                Ok((
                    VariantId::from_uuid(r.col("variant_id")?),
                    r.col("available")?,
                ))
            })
            .collect()
    }

    async fn storefront_settings(
        &self,
        tenant: TenantId,
    ) -> Result<StorefrontSettings, StoreError> {
        let show: Option<bool> = self.read(|c| {
            db::query("SELECT show_stock_counts FROM storefront_settings WHERE tenant_id = ?1")
                .bind(tenant.as_uuid())
                .scalar_optional(c)
        })?;
        Ok(StorefrontSettings {
            show_stock_counts: show.unwrap_or(false),
        })
    }

    async fn set_storefront_settings(
        &self,
        tenant: TenantId,
        settings: StorefrontSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_write!(self, events, |tx| {
            db::query(
                "INSERT INTO storefront_settings (tenant_id, show_stock_counts) VALUES (?1, ?2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET show_stock_counts = excluded.show_stock_counts",
            )
            .bind(tenant.as_uuid())
            .bind(settings.show_stock_counts)
            .execute(&tx)
            .map(|_| ())
            .map_err(map_err)
        })
    }
}
