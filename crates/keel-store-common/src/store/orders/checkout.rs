//! The checkout: one transaction that marks the cart converted, reserves the stock, counts
//! the promotion use, numbers the order and inserts it (counting its holder's unpaid orders),
//! with the events and the request's stored answer.

use keel_catalog::domain::Reservation;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_orders::{
    order::{Order, OrderId},
    ports::{
        CART_CHANGED, OrderReceipt, PROMOTION_CUSTOMER_LIMIT, PROMOTION_EXHAUSTED, PlaceOrder,
        PromotionUse, UNPAID_ORDER_LIMIT, UnpaidHolder, UnpaidLimits, stock_lock_order,
    },
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CartRow, carts::write_cart, conflict, finish_key, json, order_columns};
use crate::{
    args,
    exec::{Dialect, Exec},
    rows::ReadRow,
    store::{inventory::apply_reservation, tenants::insert_events},
};

/// A checkout as the write owns it: taken from the caller's borrowed one (the converted cart
/// rendered) before the write starts, so a SQLite writer job can own it. Every decision in it
/// was made by `keel-orders` (`PlaceOrder`).
#[derive(Debug, Clone)]
pub struct Placing {
    order: Order,
    converted: CartRow,
    cart_version: i64,
    reservations: Vec<Reservation>,
    first_number: i64,
    promotion: Option<PromotionUse>,
    holder: UnpaidHolder,
    limits: UnpaidLimits,
}

impl Placing {
    pub fn of(p: &PlaceOrder<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            order: p.order.clone(),
            converted: CartRow::of(&p.converted)?,
            cart_version: p.cart_version,
            reservations: p.reservations.to_vec(),
            first_number: p.first_number,
            promotion: p.promotion.clone(),
            holder: p.holder.clone(),
            limits: p.limits,
        })
    }
}

/// The checkout transaction (`OrderStore::place_order`), all or nothing: answers the order's
/// number.
pub async fn place_order<E: Exec>(
    e: &mut E,
    p: Placing,
    events: &[NewEvent],
    receipt: Option<&OrderReceipt>,
) -> Result<i64, StoreError> {
    // PostgreSQL writes the events first: they take no row lock, and the checkout's locks (the
    // stock rows, the shop's order counter) are then held one round trip less before the
    // commit. SQLite's statements cost no round trip: the events follow the checkout, so a
    // refused checkout never wrote them.
    if E::DIALECT == Dialect::Postgres {
        insert_events(e, events).await?;
    }
    let number = place(e, p, receipt).await?;
    if E::DIALECT == Dialect::Sqlite {
        insert_events(e, events).await?;
    }
    Ok(number)
}

async fn place<E: Exec>(
    e: &mut E,
    p: Placing,
    receipt: Option<&OrderReceipt>,
) -> Result<i64, StoreError> {
    let Placing {
        mut order,
        converted,
        cart_version,
        reservations,
        first_number,
        promotion,
        holder,
        limits,
    } = p;
    // The rows are locked in the context's order (`stock_lock_order`), so two checkouts of
    // the same items cannot deadlock; a caller that broke it is refused before any lock.
    if !reservations.is_sorted_by_key(|r| stock_lock_order(r.variant_id, r.location_id)) {
        return Err(StoreError::other("reservations not in stock lock order"));
    }
    let tenant = order.tenant_id;
    if !write_cart(e, &converted, cart_version, &[]).await? {
        return Err(conflict(CART_CHANGED));
    }
    reserve_all(e, tenant, &reservations).await?;
    if let Some(promotion) = &promotion {
        redeem(e, tenant, order.id, promotion, order.created_at).await?;
    }
    let number = next_number(e, tenant, first_number).await?;
    // The shop's counter row is locked from here to the commit (on SQLite the single writer
    // holds the whole database), so the checkouts of one shop count their holders' unpaid
    // orders one after another, in the order's insert.
    order.number = number;
    if !insert_order(e, &order, &holder, limits).await? {
        return Err(conflict(UNPAID_ORDER_LIMIT));
    }
    // Rendered here, inside the transaction: the answer carries the number just assigned.
    if let Some(r) = receipt {
        finish_key(e, &r.key, r.status, &r.body(&order)?).await?;
    }
    Ok(number)
}

/// Holds every line's units at its location, in stock lock order; refused
/// (`INSUFFICIENT_STOCK`) unless every line's units are available. PostgreSQL does it in two
/// statements whatever the number of lines (issue 25: two statements per line were a fifth of
/// a checkout's): the rows are locked in lock order first (`ORDER BY ... FOR NO KEY UPDATE`),
/// then each is updated on its condition and the reservations inserted; fewer rows held than
/// lines refuses the checkout, and its transaction writes nothing. SQLite's statements cost no round
/// trip: one line at a time.
async fn reserve_all<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    reservations: &[Reservation],
) -> Result<(), StoreError> {
    // One line per stock row (a cart line is one variant, reserved at one location); two
    // lines on one row would be held once by one UPDATE, so they go one at a time.
    let distinct = reservations.windows(2).all(|w| {
        stock_lock_order(w[0].variant_id, w[0].location_id)
            != stock_lock_order(w[1].variant_id, w[1].location_id)
    });
    if E::DIALECT == Dialect::Sqlite || reservations.len() < 2 || !distinct {
        for r in reservations {
            apply_reservation(e, r).await?;
        }
        return Ok(());
    }
    let ids: Vec<Uuid> = reservations.iter().map(|r| r.id.as_uuid()).collect();
    let variants: Vec<Uuid> = reservations
        .iter()
        .map(|r| r.variant_id.as_uuid())
        .collect();
    let locations: Vec<Uuid> = reservations
        .iter()
        .map(|r| r.location_id.as_uuid())
        .collect();
    let quantities: Vec<i64> = reservations.iter().map(|r| r.quantity).collect();
    let at: Vec<OffsetDateTime> = reservations.iter().map(|r| r.created_at).collect();
    // The rows are locked first, in lock order, by a statement of their own: the update
    // that follows then reads them with a snapshot taken after the locks (READ COMMITTED),
    // so stock another transaction committed while this one waited counts; and the order of
    // the locks does not depend on how the planner runs the update.
    e.run(
        "SELECT 1 FROM inventory_levels \
         WHERE tenant_id = $1 \
         AND (variant_id, location_id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[])) \
         ORDER BY variant_id, location_id FOR NO KEY UPDATE",
        args![tenant.as_uuid(), &variants, &locations],
    )
    .await?;
    let held = e
        .one(
            "WITH wanted AS ( \
                 SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], \
                 $6::timestamptz[]) AS w (id, variant_id, location_id, quantity, at)), \
             held AS ( \
                 UPDATE inventory_levels l SET reserved = l.reserved + w.quantity, updated_at = w.at \
                 FROM wanted w \
                 WHERE l.tenant_id = $1 AND l.variant_id = w.variant_id \
                 AND l.location_id = w.location_id AND l.on_hand - l.reserved >= w.quantity \
                 RETURNING l.variant_id), \
             inserted AS ( \
                 INSERT INTO reservations (tenant_id, id, variant_id, location_id, quantity, \
                 created_at, released_at) \
                 SELECT $1, w.id, w.variant_id, w.location_id, w.quantity, w.at, NULL FROM wanted w \
                 RETURNING 1) \
             SELECT (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM inserted) AS rows",
            args![tenant.as_uuid(), &ids, &variants, &locations, &quantities, &at],
        )
        .await?
        .int("held")?;
    if usize::try_from(held).ok() != Some(reservations.len()) {
        return Err(crate::store::inventory::insufficient());
    }
    Ok(())
}

/// The next order number of the shop (`first` when it has none yet), inside the checkout
/// transaction.
async fn next_number<E: Exec>(e: &mut E, tenant: TenantId, first: i64) -> Result<i64, StoreError> {
    e.one(
        "INSERT INTO order_counters (tenant_id, next_number) VALUES ($1, $2 + 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET next_number = order_counters.next_number + 1 \
         RETURNING next_number - 1 AS number",
        args![tenant.as_uuid(), first],
    )
    .await?
    .int("number")
}

/// Inserts the new order of a checkout, refused (answers false) when its holder already has
/// its limit of open unpaid orders (any of the three). The caps are counted in the insert
/// itself, which runs with the shop's order counter locked (see `place`; on SQLite, in the
/// checkout's transaction on the single writer): each statement sees what the previous
/// holders of the lock committed, so the caps hold under any concurrency without another
/// round trip while the lock is held.
async fn insert_order<E: Exec>(
    e: &mut E,
    o: &Order,
    holder: &UnpaidHolder,
    limits: UnpaidLimits,
) -> Result<bool, StoreError> {
    let body = json(o)?;
    let done = e
        .run(
            "INSERT INTO orders (tenant_id, id, number, status, payment_status, currency, customer_id, email, total, body, version, created_at, updated_at, expires_at, email_key, client_key) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 \
             WHERE (SELECT count(*) FROM orders WHERE tenant_id = $1 AND status = 'pending_payment' AND expires_at > $17 AND customer_id = $7) < $18 \
               AND (SELECT count(*) FROM orders WHERE tenant_id = $1 AND status = 'pending_payment' AND expires_at > $17 AND email_key = $15) < $19 \
               AND (SELECT count(*) FROM orders WHERE tenant_id = $1 AND status = 'pending_payment' AND expires_at > $17 AND client_key = $16) < $20",
            &[
                order_columns(o, &body).as_slice(),
                args![
                    holder.email_key.as_deref(),
                    holder.client_key.as_deref(),
                    limits.now,
                    limits.per_customer,
                    limits.per_email,
                    limits.per_client
                ],
            ]
            .concat(),
        )
        .await?;
    Ok(done == 1)
}

/// Counts one use of the promotion against its limits inside the checkout transaction. The
/// conditional update of the promotion's row comes first, so concurrent checkouts with one
/// promotion queue on it and the per-customer count after it is exact.
async fn redeem<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    order: OrderId,
    promotion: &PromotionUse,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE pricing_records SET times_used = times_used + 1 WHERE tenant_id = $1 AND kind = 'promotion' \
             AND id = $2 AND (usage_limit IS NULL OR times_used < usage_limit)",
            args![tenant.as_uuid(), promotion.promotion_id.as_uuid()],
        )
        .await?;
    if done != 1 {
        return Err(conflict(PROMOTION_EXHAUSTED));
    }
    if let Some(limit) = promotion.per_customer_limit {
        let used = e
            .one(
                "SELECT count(*) AS n FROM promotion_redemptions WHERE tenant_id = $1 AND promotion_id = $2 AND customer_key = $3",
                args![
                    tenant.as_uuid(),
                    promotion.promotion_id.as_uuid(),
                    &promotion.customer_key
                ],
            )
            .await?
            .int("n")?;
        if used >= limit {
            return Err(conflict(PROMOTION_CUSTOMER_LIMIT));
        }
    }
    e.run(
        "INSERT INTO promotion_redemptions (tenant_id, order_id, promotion_id, customer_key, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![
            tenant.as_uuid(),
            order.as_uuid(),
            promotion.promotion_id.as_uuid(),
            &promotion.customer_key,
            at_time
        ],
    )
    .await?;
    Ok(())
}
