//! PostgreSQL's column codecs for the shared decoders: native `uuid`, `text`, `int8` and
//! `timestamptz`. Here rather than in the PostgreSQL adapter because Rust lets a trait be
//! implemented for sqlx's row type only in the trait's own crate.

use keel_kernel::StoreError;
use sqlx::{Row as _, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ReadRow;

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    r: &'r PgRow,
    col: &str,
) -> Result<T, StoreError> {
    r.try_get(col)
        .map_err(|e| StoreError::other(format!("column {col}: {e}")))
}

impl ReadRow for PgRow {
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError> {
        get(self, col)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        get(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        get(self, col)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        get(self, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        get(self, col)
    }
    fn time(&self, col: &str) -> Result<OffsetDateTime, StoreError> {
        get(self, col)
    }
    fn opt_time(&self, col: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        get(self, col)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        get(self, col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        get(self, col)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        get(self, col)
    }
}
