//! Orders after the checkout: reads, the staff list, versioned changes with their stock
//! moves and stored answers, the timeline, and the expiry job's query.

use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    idempotency::IdempotencyKey,
    page::{Cursor, Page, PageRequest},
};
use keel_orders::{
    order::{Order, OrderId, OrderStatus},
    ports::{OrderFilter, OrderReceipt, StockChange, VERSION_CONFLICT},
};
use time::OffsetDateTime;

use super::{conflict, finish_key, json, order_columns};
use crate::{
    args,
    exec::{Dialect, Exec, decode, pick},
    rows::{ReadRow, events::event_from_row, orders::order_from_row},
    store::{
        inventory::{commit_reserved, release_reserved},
        tenants::insert_events,
    },
};

/// An idempotent request's answer about an order, rendered before the write (so a SQLite
/// writer job owns it, and the single writer is not held while it is rendered).
#[derive(Debug, Clone)]
pub struct Answer {
    key: IdempotencyKey,
    status: u16,
    body: String,
}

impl Answer {
    /// The receipt's answer for `order` as it will be written.
    pub fn of(receipt: Option<&OrderReceipt>, order: &Order) -> Result<Option<Self>, StoreError> {
        let Some(r) = receipt else {
            return Ok(None);
        };
        Ok(Some(Self {
            key: r.key.clone(),
            status: r.status,
            body: r.body(order)?,
        }))
    }
}

/// An order change (`OrderStore::save_order`), as one write.
#[derive(Debug, Clone, Copy)]
pub struct OrderWrite<'a> {
    pub order: &'a Order,
    pub expected_version: i64,
    pub stock: &'a [StockChange],
    /// Give the order's promotion redemption back.
    pub give_back: bool,
    pub events: &'a [NewEvent],
    pub answer: Option<&'a Answer>,
}

pub async fn get_order<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: OrderId,
) -> Result<Order, StoreError> {
    let row = e
        .one(
            "SELECT body FROM orders WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    order_from_row(&row)
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

/// The staff order list, newest first.
pub async fn list_orders<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    filter: &OrderFilter,
    page: PageRequest,
) -> Result<Page<Order>, StoreError> {
    let (number, email) = order_query(filter.q.as_deref());
    let rows = e
        .all(
            // The substring test is each dialect's own function (`strpos`, `instr`).
            pick::<E>(
                "SELECT id, body FROM orders WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR created_at >= $3) AND ($4 IS NULL OR created_at < $4) \
                 AND ($5 IS NULL OR customer_id = $5) AND ($6 IS NULL OR number = $6) \
                 AND ($7 IS NULL OR strpos(lower(coalesce(email, '')), lower($7)) > 0) \
                 AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9",
                "SELECT id, body FROM orders WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR created_at >= $3) AND ($4 IS NULL OR created_at < $4) \
                 AND ($5 IS NULL OR customer_id = $5) AND ($6 IS NULL OR number = $6) \
                 AND ($7 IS NULL OR instr(lower(coalesce(email, '')), lower($7)) > 0) \
                 AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9",
            ),
            args![
                tenant.as_uuid(),
                filter.status.map(OrderStatus::as_str),
                filter.created_from,
                filter.created_to,
                filter.customer.map(|c| c.as_uuid()),
                number,
                email,
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, order_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |o| o.id.as_uuid()))
}

/// Replaces the order if its version is still the expected one, moving the stock and (with
/// `give_back`) returning the promotion use, with the answer and the events: a version
/// conflict, and nothing written, when the order changed.
pub async fn save_order<E: Exec>(e: &mut E, w: &OrderWrite<'_>) -> Result<(), StoreError> {
    if !update_order(e, w.order, w.expected_version).await? {
        return Err(conflict(VERSION_CONFLICT));
    }
    move_stock(e, w.order, w.stock).await?;
    if w.give_back {
        return_redemption(e, w.order).await?;
    }
    if let Some(a) = w.answer {
        finish_key(e, &a.key, a.status, &a.body).await?;
    }
    insert_events(e, w.events).await
}

/// Writes the order over the version `expected`; false when that is no longer its version.
async fn update_order<E: Exec>(e: &mut E, o: &Order, expected: i64) -> Result<bool, StoreError> {
    let body = json(o)?;
    let done = e
        .run(
            "UPDATE orders SET number = $3, status = $4, payment_status = $5, currency = $6, customer_id = $7, email = $8, \
             total = $9, body = $10, version = $11, created_at = $12, updated_at = $13, expires_at = $14 \
             WHERE tenant_id = $1 AND id = $2 AND version = $15",
            &[
                order_columns(o, &body).as_slice(),
                args![
                    expected
                ],
            ]
            .concat(),
        )
        .await?;
    Ok(done == 1)
}

async fn move_stock<E: Exec>(
    e: &mut E,
    order: &Order,
    stock: &[StockChange],
) -> Result<(), StoreError> {
    let actor = order.id.to_string();
    // In the context's lock order (`stock_lock_order`), as at checkout: refused otherwise.
    if !stock.is_sorted_by_key(StockChange::lock_key) {
        return Err(StoreError::other("stock changes not in stock lock order"));
    }
    for change in stock {
        match change {
            StockChange::Commit(m) => {
                commit_reserved(e, order.tenant_id, m, &actor, order.updated_at).await?;
            }
            StockChange::Release(m) => {
                release_reserved(e, order.tenant_id, m.reservation_id, order.updated_at).await?;
            }
        }
    }
    Ok(())
}

/// Gives an unpaid order's promotion use back, exactly once: only a redemption row that is
/// still there lowers the count.
async fn return_redemption<E: Exec>(e: &mut E, order: &Order) -> Result<(), StoreError> {
    match E::DIALECT {
        // One statement: one round trip.
        Dialect::Postgres => {
            e.run(
                "WITH returned AS (DELETE FROM promotion_redemptions WHERE tenant_id = $1 AND order_id = $2 RETURNING promotion_id) \
                 UPDATE pricing_records SET times_used = times_used - 1 FROM returned \
                 WHERE pricing_records.tenant_id = $1 AND pricing_records.kind = 'promotion' AND pricing_records.id = returned.promotion_id \
                 AND pricing_records.times_used > 0",
                args![order.tenant_id.as_uuid(), order.id.as_uuid()],
            )
            .await?;
        }
        // SQLite has no data-modifying CTEs; in-process statements cost no round trip.
        Dialect::Sqlite => {
            let returned = e
                .opt(
                    "DELETE FROM promotion_redemptions WHERE tenant_id = $1 AND order_id = $2 RETURNING promotion_id",
                    args![order.tenant_id.as_uuid(), order.id.as_uuid()],
                )
                .await?;
            if let Some(r) = returned {
                e.run(
                    "UPDATE pricing_records SET times_used = times_used - 1 WHERE tenant_id = $1 AND kind = 'promotion' AND id = $2 AND times_used > 0",
                    args![order.tenant_id.as_uuid(), r.uuid("promotion_id")?],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The order's events, oldest first (its timeline), found through the index on the order id
/// in their payload: each dialect's expression is the one its index is built on.
pub async fn order_events<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: OrderId,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = e
        .all(
            pick::<E>(
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 AND payload ->> 'order_id' = $2 \
                 ORDER BY id",
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
                 WHERE tenant_id = $1 AND (event_type LIKE 'order.%' OR event_type LIKE 'payment.%' OR event_type LIKE 'refund.%') \
                 AND json_extract(payload, '$.order_id') = $2 \
                 ORDER BY id",
            ),
            args![tenant.as_uuid(), &id.to_string()],
        )
        .await?;
    decode(&rows, event_from_row)
}

/// Unpaid orders whose expiry passed at `now`, oldest first, at most `limit`.
pub async fn expired_unpaid<E: Exec>(
    e: &mut E,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(TenantId, OrderId)>, StoreError> {
    let rows = e
        .all(
            "SELECT tenant_id, id FROM orders WHERE status = 'pending_payment' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2",
            args![now, limit],
        )
        .await?;
    decode(&rows, |r| {
        Ok((
            TenantId::from_uuid(r.uuid("tenant_id")?),
            OrderId::from_uuid(r.uuid("id")?),
        ))
    })
}
