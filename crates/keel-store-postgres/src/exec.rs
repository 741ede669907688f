//! The shared statements (ADR 0032) on PostgreSQL: on a pooled connection taken for the
//! first statement, or inside a transaction.

use keel_kernel::StoreError;
use keel_store_common::{
    exec::{Arg, Dialect, Exec},
    rows::postgres::JsonText,
};
use sqlx::{
    PgConnection, Postgres,
    postgres::{PgArguments, PgRow},
    query::Query,
};

use crate::{
    error::map_err,
    pool::{Conn, Pool, Tx},
};

/// Statements outside a transaction: the first one takes a connection from the pool, and it
/// goes back when this is dropped (checked first if a statement did not run to its end).
pub(crate) struct Pg<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
}

impl<'p> Pg<'p> {
    pub(crate) fn new(pool: &'p Pool) -> Self {
        Self { pool, conn: None }
    }

    async fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await.map_err(map_err)?);
        }
        Ok(self.conn.as_mut().expect("taken just above"))
    }
}

/// SQL statements sent by this process's PostgreSQL adapter (transaction control included),
/// for `/metrics` and for counting statements per request (one process serves one database).
static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Statements sent so far by this process (see [`STATEMENTS`]).
pub fn statements_run() -> u64 {
    STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a statement about to be sent.
pub(crate) fn note() {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: &'q [Arg<'q>],
) -> Query<'q, Postgres, PgArguments> {
    note();
    for a in args {
        q = match *a {
            Arg::Uuid(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Time(v) => q.bind(v),
            Arg::Flag(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
            Arg::Json(v) => q.bind(v.map(JsonText)),
            Arg::Uuids(v) => q.bind(v),
            Arg::Texts(v) => q.bind(v),
            Arg::Strs(v) => q.bind(v),
            Arg::Ints(v) => q.bind(v),
            Arg::Times(v) => q.bind(v),
        };
    }
    q
}

async fn all(
    c: &mut PgConnection,
    sql: &'static str,
    args: &[Arg<'_>],
) -> Result<Vec<PgRow>, StoreError> {
    bind(sqlx::query(sql), args)
        .fetch_all(c)
        .await
        .map_err(map_err)
}

async fn opt(
    c: &mut PgConnection,
    sql: &'static str,
    args: &[Arg<'_>],
) -> Result<Option<PgRow>, StoreError> {
    bind(sqlx::query(sql), args)
        .fetch_optional(c)
        .await
        .map_err(map_err)
}

async fn run(c: &mut PgConnection, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
    let done = bind(sqlx::query(sql), args)
        .execute(c)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}

impl Exec for Pg<'_> {
    type Row = PgRow;
    const DIALECT: Dialect = Dialect::Postgres;

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        let c = self.conn().await?;
        c.settle(false);
        let rows = all(c, sql, args).await?;
        c.settle(true);
        Ok(rows)
    }

    async fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<PgRow>, StoreError> {
        let c = self.conn().await?;
        c.settle(false);
        let row = opt(c, sql, args).await?;
        c.settle(true);
        Ok(row)
    }

    async fn run(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        c.settle(false);
        let n = run(c, sql, args).await?;
        c.settle(true);
        Ok(n)
    }
}

impl Exec for Tx {
    type Row = PgRow;
    const DIALECT: Dialect = Dialect::Postgres;

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        all(self, sql, args).await
    }

    async fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<PgRow>, StoreError> {
        opt(self, sql, args).await
    }

    async fn run(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        run(self, sql, args).await
    }
}

/// A connection the caller already holds (inside its own transaction).
pub(crate) struct Raw<'c>(pub(crate) &'c mut PgConnection);

impl Exec for Raw<'_> {
    type Row = PgRow;
    const DIALECT: Dialect = Dialect::Postgres;

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        all(self.0, sql, args).await
    }

    async fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<PgRow>, StoreError> {
        opt(self.0, sql, args).await
    }

    async fn run(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        run(self.0, sql, args).await
    }
}
