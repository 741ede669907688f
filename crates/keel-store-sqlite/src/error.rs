//! Driver errors to [`StoreError`].

use keel_kernel::StoreError;
use sqlx::error::ErrorKind;

/// SQLite names a violated unique index by its columns (`UNIQUE constraint failed:
/// tenants.slug`). This table gives each the canonical constraint name PostgreSQL reports,
/// so contexts match one name on every backend.
const UNIQUE_CONSTRAINTS: &[(&str, &str)] = &[
    ("tenants.slug", "tenants_slug_key"),
    (
        "staff_users.tenant_id, staff_users.email",
        "staff_users_email_key",
    ),
    (
        "customers.tenant_id, customers.email",
        "customers_email_key",
    ),
    ("products.tenant_id, products.handle", "products_handle_key"),
    ("variants.tenant_id, variants.sku", "variants_sku_key"),
    (
        "pricing_records.tenant_id, pricing_records.kind, pricing_records.key",
        "pricing_records_key",
    ),
    (
        "stock_locations.tenant_id, stock_locations.name",
        "stock_locations_name_key",
    ),
    (
        "payment_providers.tenant_id, payment_providers.provider",
        "payment_providers_pkey",
    ),
    // A partial unique index: one session without a final answer per order and provider.
    (
        "payment_sessions.tenant_id, payment_sessions.order_id, payment_sessions.provider",
        "payment_sessions_one_open",
    ),
    // A partial unique index: one account-notification endpoint per shop.
    (
        "webhook_endpoints.tenant_id",
        "webhook_endpoints_one_account",
    ),
];

/// `SQLITE_BUSY` and `SQLITE_LOCKED` (primary codes): another process holds the lock.
const BUSY_CODES: &[&str] = &["5", "6"];

/// A driver error (either driver's; ADR 0015), or a [`StoreError`] passed through.
pub(crate) fn map_err(e: impl DriverError) -> StoreError {
    e.into_store()
}

pub(crate) trait DriverError {
    fn into_store(self) -> StoreError;
}

impl DriverError for StoreError {
    fn into_store(self) -> StoreError {
        self
    }
}

fn unique_violation(message: &str) -> Option<StoreError> {
    UNIQUE_CONSTRAINTS
        .iter()
        .find(|(cols, _)| message.ends_with(cols))
        .map(|(_, name)| StoreError::Conflict {
            constraint: (*name).to_owned(),
        })
}

impl DriverError for rusqlite::Error {
    fn into_store(self) -> StoreError {
        use rusqlite::ffi;
        match self {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(ref f, ref message) => {
                let unique = f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY;
                if unique && let Some(conflict) = message.as_deref().and_then(unique_violation) {
                    return conflict;
                }
                // A quota trigger's refusal (migration 21).
                if f.extended_code == ffi::SQLITE_CONSTRAINT_TRIGGER
                    && let Some(quota) = message.as_deref().and_then(StoreError::quota_in)
                {
                    return quota;
                }
                match f.code {
                    ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                        StoreError::unavailable(self)
                    }
                    _ => StoreError::other(self),
                }
            }
            other => StoreError::other(other),
        }
    }
}

impl DriverError for sqlx::Error {
    fn into_store(self) -> StoreError {
        sqlx_error(self)
    }
}

fn sqlx_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::unavailable(e)
        }
        sqlx::Error::Database(db) => {
            if db.kind() == ErrorKind::UniqueViolation
                && let Some(conflict) = unique_violation(db.message())
            {
                return conflict;
            }
            if let Some(quota) = StoreError::quota_in(db.message()) {
                return quota;
            }
            let busy = db
                .code()
                .is_some_and(|c| BUSY_CODES.iter().any(|b| c.as_ref() == *b));
            if busy {
                StoreError::unavailable(db)
            } else {
                StoreError::other(db)
            }
        }
        other => StoreError::other(other),
    }
}
