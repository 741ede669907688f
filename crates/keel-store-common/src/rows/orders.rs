//! Orders rows: pricing setup records, carts, orders and idempotency keys.

use keel_kernel::{StoreError, TenantId, idempotency::IdempotencyBegin};
use keel_orders::{
    cart::Cart,
    order::Order,
    ports::{SetupKind, SetupRecord},
};

use super::ReadRow;

fn kind_of(s: &str) -> Result<SetupKind, StoreError> {
    [
        SetupKind::TaxRate,
        SetupKind::ShippingOption,
        SetupKind::Promotion,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| StoreError::other("corrupt pricing record kind"))
}

pub fn record_from_row(r: &impl ReadRow) -> Result<SetupRecord, StoreError> {
    let kind: String = r.col("kind")?;
    let body = r.json_text("body")?;
    Ok(SetupRecord {
        id: r.col("id")?,
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        kind: kind_of(&kind)?,
        key: r.col("key")?,
        body: serde_json::from_str(&body).map_err(StoreError::other)?,
        usage_limit: r.col("usage_limit")?,
        times_used: r.col("times_used")?,
        version: r.col("version")?,
    })
}

/// An order, from its JSON `body`.
pub fn order_from_row(r: &impl ReadRow) -> Result<Order, StoreError> {
    serde_json::from_str(&r.json_text("body")?).map_err(StoreError::other)
}

/// A cart, from its JSON `body`, with the hash of its secret (`secret_hash`, a guest's cart).
pub fn cart_from_row(r: &impl ReadRow) -> Result<(Cart, Option<String>), StoreError> {
    let cart = serde_json::from_str(&r.json_text("body")?).map_err(StoreError::other)?;
    Ok((cart, r.col("secret_hash")?))
}

/// What a refused claim found in an idempotency key's row: the stored answer of a finished
/// request, or another request still in flight.
pub fn begin_from_row(r: &impl ReadRow) -> Result<IdempotencyBegin, StoreError> {
    let status: String = r.col("status")?;
    if status != "done" {
        return Ok(IdempotencyBegin::InFlight);
    }
    let code: i64 = r.col("response_status")?;
    Ok(IdempotencyBegin::Done {
        request_hash: r.col("request_hash")?,
        status: u16::try_from(code).map_err(StoreError::other)?,
        body: r.col("response_body")?,
    })
}
