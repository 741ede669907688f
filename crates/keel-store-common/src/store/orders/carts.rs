//! Carts: versioned aggregates stored as JSON beside the columns jobs query. On PostgreSQL a
//! cart is written together with its events in one statement (one round trip, and on the
//! pool its own transaction); on SQLite the writer job around the statements is the
//! transaction.

use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_orders::{
    cart::{Cart, CartId, CartStatus},
    ports::VERSION_CONFLICT,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{conflict, json};
use crate::{
    args,
    exec::{Arg, Dialect, Exec, pick},
    rows::{ReadRow, orders::cart_from_row},
    store::tenants::{EventArrays, events_from_arrays, insert_events},
};

/// A cart's columns, taken from it (and its JSON body rendered) before the write starts: a
/// SQLite writer job owns them without a copy of the cart, and the single writer is not held
/// while the body is rendered.
#[derive(Debug, Clone)]
pub struct CartRow {
    tenant_id: Uuid,
    id: Uuid,
    customer_id: Option<Uuid>,
    status: &'static str,
    body: String,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl CartRow {
    pub fn of(cart: &Cart) -> Result<Self, StoreError> {
        Ok(Self {
            tenant_id: cart.tenant_id.as_uuid(),
            id: cart.id.as_uuid(),
            customer_id: cart.customer_id.map(|c| c.as_uuid()),
            status: match cart.status {
                CartStatus::Open => "open",
                CartStatus::Converted => "converted",
            },
            body: json(cart)?,
            version: cart.version,
            created_at: cart.created_at,
            updated_at: cart.updated_at,
        })
    }
}

pub async fn create_cart<E: Exec>(
    e: &mut E,
    row: &CartRow,
    secret_hash: Option<&str>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    match E::DIALECT {
        // One statement, so one round trip and its own transaction: no `BEGIN`/`COMMIT`.
        Dialect::Postgres => {
            let arrays = EventArrays::of(events);
            e.run(
                concat!(
                    "WITH cart AS (INSERT INTO carts (tenant_id, id, customer_id, secret_hash, status, body, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) \
                     INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) ",
                    events_from_arrays!("$10", "$11", "$12", "$13", "$14")
                ),
                args![
                    row.tenant_id,
                    row.id,
                    row.customer_id,
                    secret_hash,
                    row.status,
                    Arg::json(&row.body),
                    row.version,
                    row.created_at,
                    row.updated_at,
                    &arrays.tenants,
                    &arrays.ids,
                    Arg::Strs(&arrays.types),
                    &arrays.payloads,
                    &arrays.occurred
                ],
            )
            .await?;
        }
        // In-process statements cost no round trip; the writer job is the transaction.
        Dialect::Sqlite => {
            e.run(
                "INSERT INTO carts (tenant_id, id, customer_id, secret_hash, status, body, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    row.tenant_id,
                    row.id,
                    row.customer_id,
                    secret_hash,
                    row.status,
                    Arg::json(&row.body),
                    row.version,
                    row.created_at,
                    row.updated_at
                ],
            )
            .await?;
            insert_events(e, events).await?;
        }
    }
    Ok(())
}

pub async fn get_cart<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: CartId,
) -> Result<(Cart, Option<String>), StoreError> {
    let row = e
        .one(
            "SELECT body, secret_hash FROM carts WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    cart_from_row(&row)
}

/// Writes a cart over the version `expected_version` with its events. The events are written
/// only when the versioned update matched; false when it did not, and then nothing was
/// written.
pub(super) async fn write_cart<E: Exec>(
    e: &mut E,
    row: &CartRow,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<bool, StoreError> {
    match E::DIALECT {
        // One statement (so on the pool its own transaction and one round trip).
        Dialect::Postgres => {
            let arrays = EventArrays::of(events);
            let saved = e
                .one(
                    concat!(
                        "WITH saved AS (UPDATE carts SET status = $3, body = $4, version = $5, updated_at = $6 \
                         WHERE tenant_id = $1 AND id = $2 AND version = $7 RETURNING 1), \
                         events AS (INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) ",
                        events_from_arrays!("$8", "$9", "$10", "$11", "$12"),
                        " WHERE EXISTS (SELECT 1 FROM saved)) SELECT count(*) AS n FROM saved"
                    ),
                    args![
                        row.tenant_id,
                        row.id,
                        row.status,
                        Arg::json(&row.body),
                        row.version,
                        row.updated_at,
                        expected_version,
                        &arrays.tenants,
                        &arrays.ids,
                        Arg::Strs(&arrays.types),
                        &arrays.payloads,
                        &arrays.occurred
                    ],
                )
                .await?
                .int("n")?;
            Ok(saved == 1)
        }
        // In-process statements cost no round trip; the caller's transaction holds them.
        Dialect::Sqlite => {
            let done = e
                .run(
                    "UPDATE carts SET status = $3, body = $4, version = $5, updated_at = $6 \
                     WHERE tenant_id = $1 AND id = $2 AND version = $7",
                    args![
                        row.tenant_id,
                        row.id,
                        row.status,
                        Arg::json(&row.body),
                        row.version,
                        row.updated_at,
                        expected_version
                    ],
                )
                .await?;
            if done != 1 {
                return Ok(false);
            }
            insert_events(e, events).await?;
            Ok(true)
        }
    }
}

/// Writes the cart at `expected_version` with its events, or a version conflict.
pub async fn save_cart<E: Exec>(
    e: &mut E,
    row: &CartRow,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if write_cart(e, row, expected_version, events).await? {
        Ok(())
    } else {
        Err(conflict(VERSION_CONFLICT))
    }
}

/// Retention: deletes up to `limit` carts last changed before `before`.
pub async fn prune_carts<E: Exec>(
    e: &mut E,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, StoreError> {
    e.run(
        pick::<E>(
            // Any node may prune: carts another transaction holds are skipped, not waited on.
            "DELETE FROM carts WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM carts WHERE updated_at < $1 \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            // One writer, no row locks: the batch is chosen by rowid, the table's own key.
            "DELETE FROM carts WHERE rowid IN (SELECT rowid FROM carts WHERE updated_at < $1 ORDER BY updated_at LIMIT $2)",
        ),
        args![before, limit],
    )
    .await
}
