//! Pricing setup: tax rates, shipping options and promotions (typed JSON with their unique
//! keys and promotion usage counters), and the shop's pricing settings.

use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Cursor, Page, PageRequest},
};
use keel_orders::ports::{
    PricingLookup, PricingRecords, PricingSettings, SetupKind, SetupRecord, VERSION_CONFLICT,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::conflict;
use crate::{
    args,
    exec::{Arg, Exec, decode},
    rows::{ReadRow, orders::record_from_row},
    store::tenants::insert_events,
};

/// A cart answer's pricing inputs in one statement: the settings row (always there, without a
/// kind), and each kind of record by its own index seek. A plain compound statement: no `OR`
/// across kinds (with which SQLite walked every record of the shop, 7-9 ms per cart answer
/// for a shop with 20,000 promotion codes, and a generic PostgreSQL plan was seen to read
/// every record of the shop, 14 ms, where most tenants had none), and no `MULTI-INDEX OR` on
/// SQLite (three seeks and a row set, measurably slower for a small shop). This shape gives
/// each kind a full-key condition. The first row's `NULL`s take their types from the rows
/// under it on PostgreSQL (a union resolves an untyped `NULL` against its other inputs).
pub const PRICING_RECORDS_SQL: &str = "SELECT coalesce((SELECT prices_include_tax FROM pricing_settings WHERE tenant_id = $1), false) AS prices_include_tax, \
     NULL AS tenant_id, NULL AS id, NULL AS kind, NULL AS key, NULL AS body, NULL AS usage_limit, NULL AS times_used, NULL AS version \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = $1 AND kind = 'tax_rate' AND key IN ($2, $3) \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = $1 AND kind = 'shipping_option' AND id = $4 \
     UNION ALL SELECT NULL, tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
     WHERE tenant_id = $1 AND kind = 'promotion' AND key = $5";

fn version_or_missing(exists: bool) -> StoreError {
    if exists {
        conflict(VERSION_CONFLICT)
    } else {
        StoreError::NotFound
    }
}

async fn record_exists<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    kind: SetupKind,
    id: Uuid,
) -> Result<bool, StoreError> {
    let n = e
        .one(
            "SELECT count(*) AS n FROM pricing_records WHERE tenant_id = $1 AND kind = $2 AND id = $3",
            args![tenant.as_uuid(), kind.as_str(), id],
        )
        .await?
        .int("n")?;
    Ok(n == 1)
}

pub async fn create_record<E: Exec>(
    e: &mut E,
    r: &SetupRecord,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let body = r.body.to_string();
    e.run(
        "INSERT INTO pricing_records (tenant_id, id, kind, key, body, usage_limit, times_used, version, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8)",
        args![
            r.tenant_id.as_uuid(),
            r.id,
            r.kind.as_str(),
            &r.key,
            Arg::json(&body),
            r.usage_limit,
            r.version,
            OffsetDateTime::now_utc()
        ],
    )
    .await?;
    insert_events(e, events).await
}

pub async fn get_record<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    kind: SetupKind,
    id: Uuid,
) -> Result<SetupRecord, StoreError> {
    let row = e
        .one(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = $1 AND kind = $2 AND id = $3",
            args![tenant.as_uuid(), kind.as_str(), id],
        )
        .await?;
    record_from_row(&row)
}

pub async fn find_record<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    kind: SetupKind,
    key: &str,
) -> Result<Option<SetupRecord>, StoreError> {
    let row = e
        .opt(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = $1 AND kind = $2 AND key = $3",
            args![tenant.as_uuid(), kind.as_str(), key],
        )
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

pub async fn list_records<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    kind: SetupKind,
    page: PageRequest,
) -> Result<Page<SetupRecord>, StoreError> {
    let rows = e
        .all(
            "SELECT tenant_id, id, kind, key, body, usage_limit, times_used, version FROM pricing_records \
             WHERE tenant_id = $1 AND kind = $2 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
            args![
                tenant.as_uuid(),
                kind.as_str(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, record_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |r| r.id))
}

/// Replaces the record if its version is still `expected_version`; else `NotFound` when it is
/// gone, a version conflict when it changed (and the caller's transaction is rolled back).
pub async fn update_record<E: Exec>(
    e: &mut E,
    r: &SetupRecord,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let body = r.body.to_string();
    let done = e
        .run(
            "UPDATE pricing_records SET key = $4, body = $5, usage_limit = $6, version = $7 \
             WHERE tenant_id = $1 AND kind = $2 AND id = $3 AND version = $8",
            args![
                r.tenant_id.as_uuid(),
                r.kind.as_str(),
                r.id,
                &r.key,
                Arg::json(&body),
                r.usage_limit,
                r.version,
                expected_version
            ],
        )
        .await?;
    if done != 1 {
        let exists = record_exists(e, r.tenant_id, r.kind, r.id).await?;
        return Err(version_or_missing(exists));
    }
    insert_events(e, events).await
}

/// Deletes the record (at `expected_version` when given); errors as [`update_record`].
pub async fn delete_record<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    kind: SetupKind,
    id: Uuid,
    expected_version: Option<i64>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "DELETE FROM pricing_records WHERE tenant_id = $1 AND kind = $2 AND id = $3 \
             AND ($4 IS NULL OR version = $4)",
            args![tenant.as_uuid(), kind.as_str(), id, expected_version],
        )
        .await?;
    if done != 1 {
        let exists = record_exists(e, tenant, kind, id).await?;
        return Err(version_or_missing(exists));
    }
    insert_events(e, events).await
}

pub async fn pricing_settings<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<PricingSettings, StoreError> {
    let row = e
        .opt(
            "SELECT prices_include_tax FROM pricing_settings WHERE tenant_id = $1",
            args![tenant.as_uuid()],
        )
        .await?;
    Ok(PricingSettings {
        prices_include_tax: row.map_or(Ok(false), |r| r.flag("prices_include_tax"))?,
    })
}

/// A cart answer's pricing inputs ([`PRICING_RECORDS_SQL`]).
pub async fn pricing_records<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    lookup: &PricingLookup,
) -> Result<PricingRecords, StoreError> {
    // One row at least (the settings ride on every row); the records' columns are NULL when
    // none matches.
    let rows = e
        .all(
            PRICING_RECORDS_SQL,
            args![
                tenant.as_uuid(),
                lookup.tax_region.as_deref(),
                lookup.tax_country.as_deref(),
                lookup.shipping_option,
                lookup.promotion_code.as_deref()
            ],
        )
        .await?;
    // The settings row is the one without a kind (a compound statement promises no order).
    let mut found = PricingRecords::default();
    for r in &rows {
        if r.opt_text("kind")?.is_some() {
            found.records.push(record_from_row(r)?);
        } else {
            found.settings.prices_include_tax = r.flag("prices_include_tax")?;
        }
    }
    Ok(found)
}

pub async fn set_pricing_settings<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    settings: PricingSettings,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO pricing_settings (tenant_id, prices_include_tax) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET prices_include_tax = excluded.prices_include_tax",
        args![tenant.as_uuid(), settings.prices_include_tax],
    )
    .await?;
    insert_events(e, events).await
}
