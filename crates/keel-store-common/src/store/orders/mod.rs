//! Pricing setup, carts, orders and idempotency keys, written once for both backends (ADR
//! 0032). Carts and orders are versioned aggregates stored as JSON (integer minor units only)
//! beside the columns that lists and jobs query; the checkout writes the order, its stock
//! reservations, the promotion use and the order number in one transaction.
//!
//! What a SQLite writer job must own is prepared here before the write is handed over (a
//! cart's row with its JSON rendered: [`CartRow`]; a checkout: [`Placing`]; an idempotent
//! request's answer: [`Answer`]), so the single writer is never held while a body is rendered,
//! and PostgreSQL renders nothing inside its transactions either.

mod carts;
mod checkout;
mod idempotency;
pub(crate) mod order;
mod setup;

use keel_kernel::StoreError;

pub use carts::{CartRow, create_cart, get_cart, prune_carts, save_cart};
pub use checkout::{Placing, place_order};
pub use idempotency::{begin_key, finish_key, purge_keys};
pub use order::{
    Answer, OrderWrite, expired_unpaid, get_order, list_orders, order_events, save_order,
};
pub use setup::{
    PRICING_RECORDS_SQL, create_record, delete_record, find_record, get_record, list_records,
    pricing_records, pricing_settings, set_pricing_settings, update_record,
};

fn conflict(name: &str) -> StoreError {
    StoreError::Conflict {
        constraint: name.into(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::other)
}

/// An order's columns `$1`..`$14`, as its insert and its update both bind them.
pub(super) fn order_columns<'a>(
    o: &'a keel_orders::order::Order,
    body: &'a str,
) -> [crate::exec::Arg<'a>; 14] {
    use crate::exec::Arg;
    [
        o.tenant_id.as_uuid().into(),
        o.id.as_uuid().into(),
        o.number.into(),
        o.status.as_str().into(),
        o.payment_status.as_str().into(),
        o.currency.code().into(),
        o.customer_id.map(|c| c.as_uuid()).into(),
        o.email.as_deref().into(),
        o.totals.total.into(),
        Arg::json(body),
        o.version.into(),
        o.created_at.into(),
        o.updated_at.into(),
        o.expires_at.into(),
    ]
}
