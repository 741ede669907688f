//! Driver errors to [`StoreError`].

use keel_kernel::StoreError;
use sqlx::error::ErrorKind;

/// SQLSTATE classes meaning "the server cannot serve this now": 08 connection exception,
/// 53 insufficient resources, 57P01-57P03 admin shutdown / crash shutdown / cannot connect now.
fn is_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::unavailable(e),
        sqlx::Error::Database(db) => {
            if db.kind() == ErrorKind::UniqueViolation
                && let Some(name) = db.constraint()
            {
                return StoreError::Conflict {
                    constraint: name.to_owned(),
                };
            }
            // A quota trigger's refusal (migration 21).
            if db.code().as_deref() == Some("P0001")
                && let Some(quota) = StoreError::quota_in(db.message())
            {
                return quota;
            }
            if db.code().is_some_and(|c| is_unavailable(&c)) {
                StoreError::unavailable(db)
            } else {
                StoreError::other(db)
            }
        }
        other => StoreError::other(other),
    }
}
