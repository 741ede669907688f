//! PostgreSQL's column codecs for the shared decoders: native `uuid`, `text`, `int8` and
//! `timestamptz`. Here rather than in the PostgreSQL adapter because Rust lets a trait be
//! implemented for sqlx's row type only in the trait's own crate.

use keel_kernel::StoreError;
use sqlx::{
    Decode, Encode, Postgres, Row as _, Type, TypeInfo as _, ValueRef as _,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgRow, PgTypeInfo, PgValueFormat, PgValueRef, types::Oid},
};
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

/// Whether `col` is an `integer` (32-bit) column rather than a `bigint`.
fn narrow(r: &PgRow, col: &str) -> bool {
    r.try_get_raw(col)
        .is_ok_and(|v| v.type_info().name() == "INT4")
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
    /// `bigint`, or a narrower integer column widened (SQLite has one integer type).
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        if narrow(self, col) {
            return get::<i32>(self, col).map(i64::from);
        }
        get(self, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        if narrow(self, col) {
            return get::<Option<i32>>(self, col).map(|v| v.map(i64::from));
        }
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
    fn json_text(&self, col: &str) -> Result<String, StoreError> {
        get::<JsonText<'_>>(self, col).map(|j| j.0.to_owned())
    }
}

/// JSON as its text, bound as `jsonb` and read from `jsonb` (or `json`, or text): the
/// statements need no casts, and no value is parsed only to be written out again.
#[derive(Debug, Clone, Copy)]
pub struct JsonText<'a>(pub &'a str);

/// `jsonb`'s object id in the `pg_type` catalogue (fixed for built-in types).
const JSONB_OID: u32 = 3802;

/// The version byte that starts `jsonb`'s binary form.
const JSONB_VERSION: u8 = 1;

impl Type<Postgres> for JsonText<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(JSONB_OID))
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        matches!(ty.name(), "JSONB" | "JSON" | "TEXT")
    }
}

impl Encode<'_, Postgres> for JsonText<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.push(JSONB_VERSION);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

impl<'r> Decode<'r, Postgres> for JsonText<'r> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let binary_jsonb =
            value.format() == PgValueFormat::Binary && value.type_info().name() == "JSONB";
        let text = value.as_str()?;
        if binary_jsonb {
            return text
                .strip_prefix(char::from(JSONB_VERSION))
                .map(JsonText)
                .ok_or_else(|| "unsupported jsonb format version".into());
        }
        Ok(JsonText(text))
    }
}
