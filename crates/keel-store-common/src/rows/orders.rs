//! Orders rows: pricing setup records.

use keel_kernel::{StoreError, TenantId};
use keel_orders::ports::{SetupKind, SetupRecord};

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
