//! Rows decoded once for both backends (ADR 0032). A decoder reads columns by name through
//! [`ReadRow`] in the domain's column types; each adapter implements [`ReadRow`] for its rows,
//! and that implementation is the only place its column codecs live (SQLite: UUIDs as blobs,
//! times as microseconds; PostgreSQL: `uuid`, `timestamptz`). A value the domain refuses is
//! the same [`StoreError`] on both backends.

use keel_kernel::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

pub mod catalog;
pub mod events;
pub mod identity;
pub mod orders;
pub mod payments;
pub mod postgres;
pub mod webhooks;

/// One row, read by column name.
pub trait ReadRow {
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn time(&self, col: &str) -> Result<OffsetDateTime, StoreError>;
    fn opt_time(&self, col: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
    /// A JSON column's text (`jsonb` on PostgreSQL, text on SQLite).
    fn json_text(&self, col: &str) -> Result<String, StoreError>;

    /// A column in the type the caller asks for (see [`Column`]).
    fn col<T: Column>(&self, col: &str) -> Result<T, StoreError>
    where
        Self: Sized,
    {
        T::read(self, col)
    }
}

/// A column type the shared decoders read, through the driver's codec for it.
pub trait Column: Sized {
    fn read(r: &impl ReadRow, col: &str) -> Result<Self, StoreError>;
}

macro_rules! columns {
    ($($t:ty => $method:ident),* $(,)?) => {
        $(impl Column for $t {
            fn read(r: &impl ReadRow, col: &str) -> Result<Self, StoreError> {
                r.$method(col)
            }
        })*
    };
}

columns! {
    Uuid => uuid,
    Option<Uuid> => opt_uuid,
    String => text,
    Option<String> => opt_text,
    i64 => int,
    Option<i64> => opt_int,
    OffsetDateTime => time,
    Option<OffsetDateTime> => opt_time,
    Vec<u8> => bytes,
    bool => flag,
}

/// A stored value the domain refuses: the row was written by something other than Keel, or
/// by a Keel whose rules were looser. Never shown to clients (a 500 with the request id).
pub fn corrupt(table: &str, what: &str) -> StoreError {
    StoreError::other(format!("corrupt {table} row: {what}"))
}

/// A JSON column (`jsonb` on PostgreSQL, text on SQLite).
pub fn json<T: serde::de::DeserializeOwned>(
    r: &impl ReadRow,
    col: &str,
    table: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(&r.json_text(col)?).map_err(|_| corrupt(table, col))
}
