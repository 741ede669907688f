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
];

/// `SQLITE_BUSY` and `SQLITE_LOCKED` (primary codes): another process holds the lock.
const BUSY_CODES: &[&str] = &["5", "6"];

pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::unavailable(e)
        }
        sqlx::Error::Database(db) => {
            if db.kind() == ErrorKind::UniqueViolation {
                let message = db.message();
                if let Some((_, name)) = UNIQUE_CONSTRAINTS
                    .iter()
                    .find(|(cols, _)| message.ends_with(cols))
                {
                    return StoreError::Conflict {
                        constraint: (*name).to_owned(),
                    };
                }
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
