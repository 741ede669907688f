//! Statements written once for both backends (ADR 0032).
//!
//! A port method's storage work is one `async fn` in this crate, generic over [`Exec`]: it
//! runs statements written with PostgreSQL's `$n` placeholders, binding [`Arg`]s, and decodes
//! the rows through [`ReadRow`]. Each adapter implements [`Exec`] once:
//!
//! - PostgreSQL over a pooled connection or a transaction; its futures wait on the network.
//! - SQLite over a reader or the writer connection, synchronously: SQLite reads `$1` as a
//!   parameter *named* `$1`, and the adapter binds each parameter by the number in its name, so
//!   a statement that names `$2` before `$1`, or names one twice, binds as on PostgreSQL. Its
//!   futures are ready on their first poll, and the adapter polls each once inside its reader
//!   closure or writer job.
//!
//! Statements are `&'static str`: no statement is assembled at run time, so no value can
//! reach SQL text. Statements whose dialects genuinely differ are chosen with [`pick`], side
//! by side where they are used, each with a comment saying why. Statements never cast a
//! parameter (`$1::jsonb` would be one SQLite parameter named `$1::jsonb`): the PostgreSQL
//! adapter binds every [`Arg`] with its exact type, JSON included.

use keel_kernel::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rows::ReadRow;

/// Which SQL a backend speaks, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// One bound parameter, typed: PostgreSQL needs the type of every value (a `NULL` included),
/// SQLite stores each in its column form (UUIDs as 16-byte blobs, times as microseconds since
/// the epoch, booleans as 0 or 1, lists as JSON arrays for `json_each`).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Uuid(Option<Uuid>),
    Text(Option<&'a str>),
    Int(Option<i64>),
    Time(Option<OffsetDateTime>),
    Flag(Option<bool>),
    Bytes(Option<&'a [u8]>),
    /// JSON text, stored as `jsonb` on PostgreSQL and as text on SQLite.
    Json(Option<&'a str>),
    /// Lists: PostgreSQL arrays (`= ANY($1)`, `unnest`); JSON arrays on SQLite.
    Uuids(&'a [Uuid]),
    Texts(&'a [String]),
    Strs(&'a [&'a str]),
    Ints(&'a [i64]),
    Times(&'a [OffsetDateTime]),
}

macro_rules! args_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(
            impl<'a> From<$t> for Arg<'a> {
                fn from(v: $t) -> Self {
                    Arg::$variant(Some(v))
                }
            }
            impl<'a> From<Option<$t>> for Arg<'a> {
                fn from(v: Option<$t>) -> Self {
                    Arg::$variant(v)
                }
            }
        )*
    };
}

args_from! {
    Uuid => Uuid,
    &'a str => Text,
    i64 => Int,
    OffsetDateTime => Time,
    bool => Flag,
    &'a [u8] => Bytes,
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}

impl From<Option<i32>> for Arg<'_> {
    fn from(v: Option<i32>) -> Self {
        Arg::Int(v.map(i64::from))
    }
}

impl From<Option<u32>> for Arg<'_> {
    fn from(v: Option<u32>) -> Self {
        Arg::Int(v.map(i64::from))
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a [Uuid]> for Arg<'a> {
    fn from(v: &'a [Uuid]) -> Self {
        Arg::Uuids(v)
    }
}

impl<'a> From<&'a Vec<Uuid>> for Arg<'a> {
    fn from(v: &'a Vec<Uuid>) -> Self {
        Arg::Uuids(v)
    }
}

impl<'a> From<&'a [String]> for Arg<'a> {
    fn from(v: &'a [String]) -> Self {
        Arg::Texts(v)
    }
}

impl<'a> From<&'a Vec<String>> for Arg<'a> {
    fn from(v: &'a Vec<String>) -> Self {
        Arg::Texts(v)
    }
}

impl<'a> From<&'a Vec<i64>> for Arg<'a> {
    fn from(v: &'a Vec<i64>) -> Self {
        Arg::Ints(v)
    }
}

impl<'a> From<&'a Vec<OffsetDateTime>> for Arg<'a> {
    fn from(v: &'a Vec<OffsetDateTime>) -> Self {
        Arg::Times(v)
    }
}

impl<'a> Arg<'a> {
    /// JSON text for a `jsonb` (PostgreSQL) or text (SQLite) column.
    pub fn json(text: &'a str) -> Self {
        Arg::Json(Some(text))
    }
}

/// The arguments of a statement, in `$n` order: `args![tenant.as_uuid(), limit]`.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        &[$($crate::exec::Arg::from($a)),*]
    };
}

/// Runs statements on one backend's connection (see the module comment).
// The adapters' futures are `Send` where they must be (PostgreSQL's); a generic caller never
// needs the bound, and SQLite's never leave the thread that polls them.
#[allow(async_fn_in_trait)]
pub trait Exec {
    type Row: ReadRow;
    const DIALECT: Dialect;

    /// Every row.
    async fn all(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Self::Row>, StoreError>;

    /// The first row, if any.
    async fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<Self::Row>, StoreError>;

    /// A statement that answers no rows; the rows it changed.
    async fn run(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError>;

    /// The first row; [`StoreError::NotFound`] without one.
    async fn one(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Self::Row, StoreError> {
        self.opt(sql, args).await?.ok_or(StoreError::NotFound)
    }
}

/// The statement of `E`'s dialect, where the two genuinely differ.
pub const fn pick<E: Exec>(postgres: &'static str, sqlite: &'static str) -> &'static str {
    match E::DIALECT {
        Dialect::Postgres => postgres,
        Dialect::Sqlite => sqlite,
    }
}

/// `SELECT ... FOR UPDATE` on PostgreSQL; the same `SELECT` on SQLite, whose single writer
/// already holds the database's write lock for the whole transaction.
#[macro_export]
macro_rules! for_update {
    ($e:ty, $sql:expr) => {
        $crate::exec::pick::<$e>(concat!($sql, " FOR UPDATE"), $sql)
    };
}

/// Decodes every row with `f`.
pub fn decode<R, T>(
    rows: &[R],
    f: impl Fn(&R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}
