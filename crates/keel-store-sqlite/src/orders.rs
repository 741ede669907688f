//! Pricing setup, carts, orders and idempotency keys on SQLite. Carts and orders are versioned
//! aggregates stored as JSON (integer minor units only) beside the columns that lists and
//! jobs query; the checkout writes the order, its stock reservations, the promotion use and
//! the order number in one transaction.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    idempotency::{IdempotencyBegin, IdempotencyKey, IdempotencyStore, claim_held},
    page::{Page, PageRequest},
};
use keel_orders::{
    cart::{Cart, CartId},
    order::{Order, OrderId},
    ports::{
        CART_CHANGED, CartStore, OrderFilter, OrderReceipt, OrderStore, PROMOTION_CUSTOMER_LIMIT,
        PROMOTION_EXHAUSTED, PlaceOrder, PricingLookup, PricingRecords, PricingSettings, SetupKind,
        SetupRecord, SetupStore, StockChange, UNPAID_ORDER_LIMIT, UnpaidHolder, UnpaidLimits,
        VERSION_CONFLICT,
    },
};
use time::OffsetDateTime;

use crate::db::{self, Get};
use crate::writer::Heard;
use crate::{
    SqliteStore,
    error::map_err,
    inventory::{apply_reservation, commit_reserved, release_reserved},
    tenants::{event_from_row, insert_events},
    to_micros,
};
use keel_store_common::rows::orders::record_from_row;

fn conflict(name: &str) -> StoreError {
    StoreError::Conflict {
        constraint: name.into(),
    }
}

fn version_or_missing(exists: bool) -> StoreError {
    if exists {
        conflict(VERSION_CONFLICT)
    } else {
        StoreError::NotFound
    }
}

/// A cart answer's pricing inputs in one statement: the settings row (always there, without a
/// kind), and each kind of record by its own index seek. A plain compound statement: no `OR`
/// across kinds (with which SQLite walked every record of the shop, 7-9 ms per cart answer
/// for a shop with 20,000 promotion codes), and no `MULTI-INDEX OR` (three seeks and a row
/// set, measurably slower for a small shop).
const PRICING_RECORDS_SQL: &str = "SELECT (SELECT prices_include_tax FROM pricing_settings WHERE tenant_id = ?1) AS prices_include_tax, \
     NULL AS tenant_id, NULL AS id, NULL AS kind, NULL AS key, NULL AS body, NULL AS usage_limit, NULL AS times_used, NULL AS version \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = ?1 AND kind = 'tax_rate' AND key IN (?2, ?3) \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = ?1 AND kind = 'shipping_option' AND id = ?4 \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = ?1 AND kind = 'promotion' AND key = ?5";

#[async_trait]
impl SetupStore for SqliteStore {
    async fn create_record(&self, r: &SetupRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query(
            "INSERT INTO pricing_records (tenant_id, id, kind, key, body, usage_limit, times_used, version, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
        )
        .bind(r.tenant_id.as_uuid())
        .bind(r.id)
        .bind(r.kind.as_str())
        .bind(&r.key)
        .bind(r.body.to_string())
        .bind(r.usage_limit)
        .bind(r.version)
        .bind(to_micros(OffsetDateTime::now_utc())?)
        .execute(&tx)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
    ) -> Result<SetupRecord, StoreError> {
        let r = self.read(|c| db::query(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(kind.as_str())
        .bind(id)
        .fetch_one(c))?;
        record_from_row(&r)
    }

    async fn find_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        key: &str,
    ) -> Result<Option<SetupRecord>, StoreError> {
        let r = self.read(|c| db::query(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = ?1 AND kind = ?2 AND key = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(c))?;
        r.as_ref().map(record_from_row).transpose()
    }

    async fn list_records(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        page: PageRequest,
    ) -> Result<Page<SetupRecord>, StoreError> {
        let rows = self.read(|c| db::query(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = ?1 AND kind = ?2 AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4",
        )
        .bind(tenant.as_uuid())
        .bind(kind.as_str())
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .fetch_all(c))?;
        let items = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |r| r.id))
    }

    async fn update_record(
        &self,
        r: &SetupRecord,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE pricing_records SET key = ?4, body = ?5, usage_limit = ?6, version = ?7 \
             WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3 AND version = ?8",
        )
        .bind(r.tenant_id.as_uuid())
        .bind(r.kind.as_str())
        .bind(r.id)
        .bind(&r.key)
        .bind(r.body.to_string())
        .bind(r.usage_limit)
        .bind(r.version)
        .bind(expected_version)
        .execute(&tx)?;
        if done.rows_affected() != 1 {
            let exists = record_exists(&tx, r.tenant_id, r.kind, r.id)?;
            tx.rollback().map_err(map_err)?;
            return Err(version_or_missing(exists));
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "DELETE FROM pricing_records WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3 \
             AND (?4 IS NULL OR version = ?4)",
        )
        .bind(tenant.as_uuid())
        .bind(kind.as_str())
        .bind(id)
        .bind(expected_version)
        .execute(&tx)?;
        if done.rows_affected() != 1 {
            let exists = record_exists(&tx, tenant, kind, id)?;
            tx.rollback().map_err(map_err)?;
            return Err(version_or_missing(exists));
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, StoreError> {
        let v: Option<bool> = self.read(|c| {
            db::query("SELECT prices_include_tax FROM pricing_settings WHERE tenant_id = ?1")
                .bind(tenant.as_uuid())
                .scalar_optional(c)
        })?;
        Ok(PricingSettings {
            prices_include_tax: v.unwrap_or(false),
        })
    }

    async fn pricing_records(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
    ) -> Result<PricingRecords, StoreError> {
        // One row at least (the settings ride on every row); the records' columns are NULL
        // when none matches.
        let rows = self.read(|c| {
            db::query(PRICING_RECORDS_SQL)
                .bind(tenant.as_uuid())
                .bind(lookup.tax_region.as_deref())
                .bind(lookup.tax_country.as_deref())
                .bind(lookup.shipping_option)
                .bind(lookup.promotion_code.as_deref())
                .fetch_all(c)
        })?;
        // The settings row is the one without a kind (a compound statement promises no order).
        let mut found = PricingRecords::default();
        for r in &rows {
            let kind: Option<String> = r.col("kind")?;
            if kind.is_some() {
                found.records.push(record_from_row(r)?);
            } else {
                let include: Option<bool> = r.col("prices_include_tax")?;
                found.settings.prices_include_tax = include.unwrap_or(false);
            }
        }
        Ok(found)
    }

    async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query(
            "INSERT INTO pricing_settings (tenant_id, prices_include_tax) VALUES (?1, ?2) \
             ON CONFLICT (tenant_id) DO UPDATE SET prices_include_tax = excluded.prices_include_tax",
        )
        .bind(tenant.as_uuid())
        .bind(settings.prices_include_tax)
        .execute(&tx)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }
}

fn record_exists(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    kind: SetupKind,
    id: uuid::Uuid,
) -> Result<bool, StoreError> {
    let n: i64 = db::query(
        "SELECT count(*) FROM pricing_records WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
    )
    .bind(tenant.as_uuid())
    .bind(kind.as_str())
    .bind(id)
    .scalar(tx)?;
    Ok(n == 1)
}

fn cart_status(c: &Cart) -> &'static str {
    match c.status {
        keel_orders::cart::CartStatus::Open => "open",
        keel_orders::cart::CartStatus::Converted => "converted",
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::other)
}

fn parse<T: serde::de::DeserializeOwned, R: Get>(r: &R) -> Result<T, StoreError> {
    let body: String = r.col("body")?;
    serde_json::from_str(&body).map_err(StoreError::other)
}

/// Writes a cart (`body` is its JSON, serialised before the transaction so the single writer
/// is not held for it) at `expected_version` inside the caller's transaction; false when it
/// changed.
/// A cart's columns, taken from it (and its JSON body rendered) before the write is handed to
/// the writer, so the writer's job owns them without a copy of the cart.
struct CartRow {
    tenant_id: uuid::Uuid,
    id: uuid::Uuid,
    customer_id: Option<uuid::Uuid>,
    status: &'static str,
    body: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl CartRow {
    fn of(cart: &Cart) -> Result<Self, StoreError> {
        Ok(Self {
            tenant_id: cart.tenant_id.as_uuid(),
            id: cart.id.as_uuid(),
            customer_id: cart.customer_id.map(|c| c.as_uuid()),
            status: cart_status(cart),
            body: json(cart)?,
            version: cart.version,
            created_at: to_micros(cart.created_at)?,
            updated_at: to_micros(cart.updated_at)?,
        })
    }
}

/// Writes the cart over the version `expected_version`; false if it is no longer there.
fn write_cart(
    tx: &rusqlite::Connection,
    cart: &CartRow,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let done = db::query(
        "UPDATE carts SET status = ?3, body = ?4, version = ?5, updated_at = ?6 \
         WHERE tenant_id = ?1 AND id = ?2 AND version = ?7",
    )
    .bind(cart.tenant_id)
    .bind(cart.id)
    .bind(cart.status)
    .bind(&cart.body)
    .bind(cart.version)
    .bind(cart.updated_at)
    .bind(expected_version)
    .execute(tx)?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl CartStore for SqliteStore {
    async fn create_cart(
        &self,
        cart: &Cart,
        secret_hash: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let (row, secret_hash, events) = (
            CartRow::of(cart)?,
            secret_hash.map(str::to_owned),
            events.to_vec(),
        );
        self.job(move |tx| {
            db::query(
                "INSERT INTO carts (tenant_id, id, customer_id, secret_hash, status, body, version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(row.tenant_id)
            .bind(row.id)
            .bind(row.customer_id)
            .bind(secret_hash)
            .bind(row.status)
            .bind(&row.body)
            .bind(row.version)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(tx)?;
            insert_events(tx, &events)
        })
        .await
    }

    async fn get_cart(
        &self,
        tenant: TenantId,
        id: CartId,
    ) -> Result<(Cart, Option<String>), StoreError> {
        let r = self.read(|c| {
            db::query("SELECT body, secret_hash FROM carts WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(c)
        })?;
        Ok((parse(&r)?, r.col("secret_hash")?))
    }

    async fn save_cart(
        &self,
        cart: &Cart,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let (row, events) = (CartRow::of(cart)?, events.to_vec());
        self.job(move |tx| {
            if !write_cart(tx, &row, expected_version)? {
                return Err(conflict(VERSION_CONFLICT));
            }
            insert_events(tx, &events)
        })
        .await
    }

    async fn prune_carts(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let gone = db::query(
            "DELETE FROM carts WHERE rowid IN (SELECT rowid FROM carts WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
        )
        .bind(to_micros(before)?)
        .bind(limit)
        .execute(&tx)?
        .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(gone)
    }
}

/// Gives an unpaid order's promotion use back, exactly once: only a redemption row that is
/// still there lowers the count.
fn return_redemption(tx: &rusqlite::Connection, order: &Order) -> Result<(), StoreError> {
    let returned: Option<uuid::Uuid> = db::query(
        "DELETE FROM promotion_redemptions WHERE tenant_id = ?1 AND order_id = ?2 RETURNING promotion_id",
    )
    .bind(order.tenant_id.as_uuid())
    .bind(order.id.as_uuid())
    .scalar_optional(tx)?;
    if let Some(promotion) = returned {
        db::query(
            "UPDATE pricing_records SET times_used = times_used - 1 WHERE tenant_id = ?1 AND kind = 'promotion' AND id = ?2 AND times_used > 0",
        )
        .bind(order.tenant_id.as_uuid())
        .bind(promotion)
        .execute(tx)?;
    }
    Ok(())
}

/// The next order number of the shop (1001 first), inside the checkout transaction.
fn next_number(tx: &rusqlite::Connection, tenant: TenantId) -> Result<i64, StoreError> {
    db::query(
        "INSERT INTO order_counters (tenant_id, next_number) VALUES (?1, 1002) \
         ON CONFLICT (tenant_id) DO UPDATE SET next_number = next_number + 1 \
         RETURNING next_number - 1",
    )
    .bind(tenant.as_uuid())
    .scalar(tx)
}

/// Writes an order: an update when `insert` is `None` (answers whether `expected` was the
/// version), else the new order of a checkout, refused (answers false) when its holder
/// already has its limit of open unpaid orders (any of the three). The caps are counted in
/// the insert itself, in the checkout's transaction on the single writer: no other checkout
/// commits between the count and the insert.
fn write_order(
    tx: &rusqlite::Connection,
    o: &Order,
    insert: Option<(&UnpaidHolder, &UnpaidLimits)>,
    expected: i64,
) -> Result<bool, StoreError> {
    let sql = if insert.is_some() {
        "INSERT INTO orders (tenant_id, id, number, status, payment_status, currency, customer_id, email, total, body, version, created_at, updated_at, expires_at, email_key, client_key) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16 \
         WHERE (SELECT count(*) FROM orders WHERE tenant_id = ?1 AND status = 'pending_payment' AND expires_at > ?17 AND customer_id = ?7) < ?18 \
           AND (SELECT count(*) FROM orders WHERE tenant_id = ?1 AND status = 'pending_payment' AND expires_at > ?17 AND email_key = ?15) < ?19 \
           AND (SELECT count(*) FROM orders WHERE tenant_id = ?1 AND status = 'pending_payment' AND expires_at > ?17 AND client_key = ?16) < ?20"
    } else {
        "UPDATE orders SET number = ?3, status = ?4, payment_status = ?5, currency = ?6, customer_id = ?7, email = ?8, \
         total = ?9, body = ?10, version = ?11, created_at = ?12, updated_at = ?13, expires_at = ?14 \
         WHERE tenant_id = ?1 AND id = ?2 AND version = ?15"
    };
    let mut q = db::query(sql)
        .bind(o.tenant_id.as_uuid())
        .bind(o.id.as_uuid())
        .bind(o.number)
        .bind(o.status.as_str())
        .bind(o.payment_status.as_str())
        .bind(o.currency.code())
        .bind(o.customer_id.map(|c| c.as_uuid()))
        .bind(o.email.as_deref())
        .bind(o.totals.total)
        .bind(json(o)?)
        .bind(o.version)
        .bind(to_micros(o.created_at)?)
        .bind(to_micros(o.updated_at)?)
        .bind(to_micros(o.expires_at)?);
    q = match insert {
        Some((holder, limits)) => q
            .bind(holder.email_key.clone())
            .bind(holder.client_key.clone())
            .bind(to_micros(limits.now)?)
            .bind(limits.per_customer)
            .bind(limits.per_email)
            .bind(limits.per_client),
        None => q.bind(expected),
    };
    let done = q.execute(tx)?;
    Ok(done.rows_affected() == 1)
}

/// Counts one use of the promotion against its limits inside the checkout transaction. The
/// conditional update of the promotion's row comes first, so concurrent checkouts with one
/// promotion queue on it and the per-customer count after it is exact.
fn redeem(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    order: OrderId,
    promotion: &keel_orders::ports::PromotionUse,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    let done = db::query(
        "UPDATE pricing_records SET times_used = times_used + 1 WHERE tenant_id = ?1 AND kind = 'promotion' \
         AND id = ?2 AND (usage_limit IS NULL OR times_used < usage_limit)",
    )
    .bind(tenant.as_uuid())
    .bind(promotion.promotion_id.as_uuid())
    .execute(tx)?;
    if done.rows_affected() != 1 {
        return Err(conflict(PROMOTION_EXHAUSTED));
    }
    if let Some(limit) = promotion.per_customer_limit {
        let used: i64 = db::query(
            "SELECT count(*) FROM promotion_redemptions WHERE tenant_id = ?1 AND promotion_id = ?2 AND customer_key = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(promotion.promotion_id.as_uuid())
        .bind(&promotion.customer_key)
        .scalar(tx)?;
        if used >= limit {
            return Err(conflict(PROMOTION_CUSTOMER_LIMIT));
        }
    }
    db::query(
        "INSERT INTO promotion_redemptions (tenant_id, order_id, promotion_id, customer_key, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(tenant.as_uuid())
    .bind(order.as_uuid())
    .bind(promotion.promotion_id.as_uuid())
    .bind(&promotion.customer_key)
    .bind(to_micros(at_time)?)
    .execute(tx)?;
    Ok(())
}

/// The cart as checkout leaves it: converted into the order.
fn converted_cart(p: &PlaceOrder<'_>) -> Cart {
    let mut converted = p.cart.clone();
    converted.status = keel_orders::cart::CartStatus::Converted;
    converted.order_id = Some(p.order.id);
    converted.version = p.cart_version + 1;
    converted.updated_at = p.order.created_at;
    converted
}

/// Marks an idempotency key done with its response, in the caller's transaction. The key
/// must be in flight: a claim committed ahead (ADR 0022) whose group failed is gone, and the
/// work that depended on it must fail with it.
fn finish_key(
    tx: &rusqlite::Connection,
    key: &IdempotencyKey,
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    let done = db::query(
        "UPDATE idempotency_keys SET status = 'done', response_status = ?4, response_body = ?5 \
         WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3 AND status = 'in_flight'",
    )
    .bind(key.tenant_id.as_uuid())
    .bind(&key.scope)
    .bind(&key.key)
    .bind(i64::from(status))
    .bind(body)
    .execute(tx)?;
    claim_held(done.rows_affected())
}

/// A checkout as the writer's job owns it: taken from the caller's borrowed one (the
/// converted cart rendered) before the hand-over.
struct Placing {
    order: Order,
    converted: CartRow,
    cart_version: i64,
    reservations: Vec<keel_catalog::domain::Reservation>,
    promotion: Option<keel_orders::ports::PromotionUse>,
    holder: UnpaidHolder,
    limits: UnpaidLimits,
}

impl Placing {
    fn of(p: &PlaceOrder<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            order: p.order.clone(),
            converted: CartRow::of(&converted_cart(p))?,
            cart_version: p.cart_version,
            reservations: p.reservations.to_vec(),
            promotion: p.promotion.clone(),
            holder: p.holder.clone(),
            limits: p.limits,
        })
    }
}

fn place(
    tx: &rusqlite::Connection,
    p: Placing,
    receipt: Option<&OrderReceipt>,
) -> Result<i64, StoreError> {
    let Placing {
        mut order,
        converted,
        cart_version,
        mut reservations,
        promotion,
        holder,
        limits,
    } = p;
    let tenant = order.tenant_id;
    if !write_cart(tx, &converted, cart_version)? {
        return Err(conflict(CART_CHANGED));
    }
    // Rows are locked in one global order (variant, location), so two checkouts of the same
    // items in different line orders cannot deadlock.
    reservations.sort_by_key(|r| (r.variant_id.as_uuid(), r.location_id.as_uuid()));
    for r in &reservations {
        apply_reservation(tx, r)?;
    }
    if let Some(promotion) = &promotion {
        redeem(tx, tenant, order.id, promotion, order.created_at)?;
    }
    let number = next_number(tx, tenant)?;
    order.number = number;
    if !write_order(tx, &order, Some((&holder, &limits)), 0)? {
        return Err(conflict(UNPAID_ORDER_LIMIT));
    }
    // Rendered here, inside the writer: the answer carries the number just assigned.
    if let Some(r) = receipt {
        finish_key(tx, &r.key, r.status, &r.body(&order)?)?;
    }
    Ok(number)
}

fn move_stock(
    tx: &rusqlite::Connection,
    order: &Order,
    stock: &[StockChange],
) -> Result<(), StoreError> {
    let actor = order.id.to_string();
    // One global lock order, as at checkout.
    let mut stock: Vec<_> = stock.iter().collect();
    stock.sort_by_key(|c| match c {
        StockChange::Commit(m) | StockChange::Release(m) => {
            (m.variant_id.as_uuid(), m.location_id.as_uuid())
        }
    });
    for change in stock {
        match change {
            StockChange::Commit(m) => {
                commit_reserved(tx, order.tenant_id, m, &actor, order.updated_at)?;
            }
            StockChange::Release(m) => {
                release_reserved(tx, order.tenant_id, m.reservation_id, order.updated_at)?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn place_order(
        &self,
        p: &PlaceOrder<'_>,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<i64, StoreError> {
        let (placing, receipt, events) = (Placing::of(p)?, receipt.cloned(), events.to_vec());
        self.job(move |tx| {
            let number = place(tx, placing, receipt.as_ref())?;
            insert_events(tx, &events)?;
            Ok(number)
        })
        .await
    }

    async fn get_order(&self, tenant: TenantId, id: OrderId) -> Result<Order, StoreError> {
        let r = self.read(|c| {
            db::query("SELECT body FROM orders WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(c)
        })?;
        parse(&r)
    }

    async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, StoreError> {
        let (number, email) = order_query(filter.q.as_deref());
        let rows = self.read(|c| {
            db::query(
                "SELECT id, body FROM orders WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4) \
             AND (?5 IS NULL OR customer_id = ?5) AND (?6 IS NULL OR number = ?6) \
             AND (?7 IS NULL OR instr(lower(coalesce(email, '')), lower(?7)) > 0) \
             AND (?8 IS NULL OR id < ?8) ORDER BY id DESC LIMIT ?9",
            )
            .bind(tenant.as_uuid())
            .bind(filter.status.map(keel_orders::order::OrderStatus::as_str))
            .bind(filter.created_from.map(to_micros).transpose()?)
            .bind(filter.created_to.map(to_micros).transpose()?)
            .bind(filter.customer.map(|c| c.as_uuid()))
            .bind(number)
            .bind(email)
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c)
        })?;
        let items = rows
            .iter()
            .map(parse::<Order, _>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |o| o.id.as_uuid()))
    }

    async fn save_order(
        &self,
        order: &Order,
        expected_version: i64,
        stock: &[StockChange],
        give_back: bool,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<(), StoreError> {
        // The answer is known before the write: rendered before handing the write over.
        let answer = receipt
            .map(|r| r.body(order).map(|body| (r.key.clone(), r.status, body)))
            .transpose()?;
        let (order, stock, events) = (order.clone(), stock.to_vec(), events.to_vec());
        self.job(move |tx| {
            if !write_order(tx, &order, None, expected_version)? {
                return Err(conflict(VERSION_CONFLICT));
            }
            move_stock(tx, &order, &stock)?;
            if give_back {
                return_redemption(tx, &order)?;
            }
            if let Some((key, status, body)) = &answer {
                finish_key(tx, key, *status, body)?;
            }
            insert_events(tx, &events)
        })
        .await
    }

    async fn order_events(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self.read(|c| db::query(
            "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = ?1 AND event_type LIKE 'order.%' AND json_extract(payload, '$.order_id') = ?2 \
             ORDER BY id",
        )
        .bind(tenant.as_uuid())
        .bind(id.to_string())
        .fetch_all(c))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn expired_unpaid(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>, StoreError> {
        let rows = self.read(|c| db::query(
            "SELECT tenant_id, id FROM orders WHERE status = 'pending_payment' AND expires_at <= ?1 \
             ORDER BY expires_at LIMIT ?2",
        )
        .bind(to_micros(now)?)
        .bind(limit)
        .fetch_all(c))?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_uuid(r.col("tenant_id")?),
                    OrderId::from_uuid(r.col("id")?),
                ))
            })
            .collect()
    }
}

/// `q` of the order list: an order number (`1001` or `#1001`) or part of an email.
fn order_query(q: Option<&str>) -> (Option<i64>, Option<&str>) {
    match q {
        None => (None, None),
        Some(q) => match q.strip_prefix('#').unwrap_or(q).parse::<i64>() {
            Ok(n) => (Some(n), None),
            Err(_) => (None, Some(q)),
        },
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &[u8],
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (key, request_hash) = (key.clone(), request_hash.to_vec());
        let (lock_until, expires_at, now) = (
            to_micros(lock_until)?,
            to_micros(expires_at)?,
            to_micros(now)?,
        );
        self.writer
            .run(move |tx| {
                // A new key, or one whose owner died in flight (or that expired), is taken over.
                let claimed = db::query(
                    "INSERT INTO idempotency_keys (tenant_id, scope, key, request_hash, status, locked_until, expires_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5, ?6, ?7) \
                     ON CONFLICT (tenant_id, scope, key) DO UPDATE SET request_hash = excluded.request_hash, status = 'in_flight', \
                     response_status = NULL, response_body = NULL, locked_until = excluded.locked_until, \
                     expires_at = excluded.expires_at, created_at = excluded.created_at \
                     WHERE (idempotency_keys.status = 'in_flight' AND idempotency_keys.locked_until <= ?7) \
                     OR idempotency_keys.expires_at <= ?7",
                )
                .bind(key.tenant_id.as_uuid())
                .bind(&key.scope)
                .bind(&key.key)
                .bind(request_hash)
                .bind(lock_until)
                .bind(expires_at)
                .bind(now)
                .execute(tx)?;
                if claimed.rows_affected() == 1 {
                    // A fresh claim is only ever acted on by this request's own writes, which
                    // find it on the writer at once and are committed after it; they check it
                    // is still in flight (`finish_key`). So it rides with their commit
                    // (ADR 0022): a checkout or a payment waits for one durable commit, not
                    // two. An answer read from a key that is done or in flight is told to a
                    // client, so it waits for its commit.
                    return Ok((IdempotencyBegin::Started, Heard::Ahead));
                }
                let r = db::query(
                    "SELECT request_hash, status, response_status, response_body FROM idempotency_keys \
                     WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
                )
                .bind(key.tenant_id.as_uuid())
                .bind(&key.scope)
                .bind(&key.key)
                .fetch_one(tx)?;
                let status: String = r.col("status")?;
                let outcome = if status == "done" {
                    let code: i64 = r.col("response_status")?;
                    IdempotencyBegin::Done {
                        request_hash: r.col("request_hash")?,
                        status: u16::try_from(code).map_err(StoreError::other)?,
                        body: r.col("response_body")?,
                    }
                } else {
                    IdempotencyBegin::InFlight
                };
                Ok((outcome, Heard::AfterCommit))
            })
            .await
    }

    async fn finish(
        &self,
        key: &IdempotencyKey,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        finish_key(&tx, key, status, body)?;
        tx.commit().await.map_err(map_err)
    }

    async fn purge(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let done = db::query("DELETE FROM idempotency_keys WHERE expires_at <= ?1")
            .bind(to_micros(now)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        SqliteSettings, SqliteStore, Synchronous,
        db::{self, Get as _},
    };

    /// The plan, not a timing: every access to `pricing_records` is a seek on the full key of
    /// an index, so the statement's cost does not grow with the shop's records.
    #[tokio::test]
    async fn a_carts_pricing_inputs_are_sought_by_key_whatever_the_shop_holds() {
        let file = keel_testdb::sqlite_file();
        let store = SqliteStore::open(&SqliteSettings {
            path: file.path.clone(),
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            readers: 1,
            synchronous: Synchronous::Full,
            group_commit: true,
        })
        .await
        .expect("open");
        store.migrate().await.expect("migrate");
        let explain = ["EXPLAIN QUERY PLAN ", super::PRICING_RECORDS_SQL].concat();
        let plan = store
            .read(|c| {
                db::query(&explain)
                    .bind(uuid::Uuid::nil())
                    .bind("US/NY")
                    .bind("US")
                    .bind(uuid::Uuid::nil())
                    .bind("SPRING")
                    .fetch_all(c)?
                    .iter()
                    .map(|r| r.col::<String>("detail"))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("plan");
        let records: Vec<&String> = plan
            .iter()
            .filter(|d| d.contains("pricing_records"))
            .collect();
        assert_eq!(records.len(), 3, "one seek per kind: {plan:?}");
        for detail in records {
            assert!(
                detail.starts_with("SEARCH pricing_records USING INDEX")
                    && (detail.ends_with("(tenant_id=? AND kind=? AND key=?)")
                        || detail.ends_with("(tenant_id=? AND id=?)")),
                "{detail} in {plan:?}"
            );
        }
    }
}
