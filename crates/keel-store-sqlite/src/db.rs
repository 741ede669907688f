//! Statements on rusqlite, run on the calling thread (ADR 0015).
//!
//! sqlx's SQLite driver hands every statement to its connection's own OS thread and the rows
//! back across channels: two thread wake-ups per statement, about 120 µs for a point read
//! through the pool against 2 µs for the same read here (`cargo bench -p keel-store-sqlite
//! --bench statement`). The adapter's reads therefore run on rusqlite connections, inline:
//! a point read is shorter than a thread hand-off, and every read is bounded (by key or by a
//! page limit of at most 100 rows), so it holds the runtime thread for microseconds.
//!
//! [`Lite`] runs the shared statements (ADR 0032): every value is a bound parameter, never
//! part of the SQL text.

use std::{
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use keel_kernel::StoreError;
use keel_store_common::exec::{Arg, Dialect, Exec};
use rusqlite::{
    Connection, OpenFlags,
    config::DbConfig,
    types::{FromSql, ToSql, ToSqlOutput, Value, ValueRef},
};

use crate::error::map_err;

/// Prepared statements kept per connection: every distinct statement of the adapter fits.
const STATEMENT_CACHE: usize = 256;

/// SQL statements run by this process's SQLite adapter (transaction control included), for
/// `/metrics` and for counting statements per request. One process serves one database, so
/// a process-wide count is the database's count.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Statements run so far by this process (see [`STATEMENTS`]).
pub fn statements_run() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Counts a statement about to run and, at `debug` on this target, logs its SQL: the text
/// only, whose values are all bound parameters, so no secret or PII reaches the log.
pub(crate) fn note(sql: &str) {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(target: "keel_store_sqlite::statement", sql);
}

/// Runs statements without parameters (transaction control), counted like the rest.
pub(crate) fn batch(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    note(sql);
    conn.execute_batch(sql).map_err(map_err)
}

/// Opens a connection the adapter's way: read-write (plus `extra` flags), locked by the
/// adapter rather than by SQLite, waiting `busy_timeout` on other processes' locks, with room
/// for every distinct statement in its prepared-statement cache.
pub(crate) fn open(
    path: &Path,
    extra: OpenFlags,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra,
    )
    .map_err(map_err)?;
    conn.busy_timeout(busy_timeout).map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One plan per statement, whatever values are bound: without the query planner stability
    // guarantee SQLite (3.47 and later) reads a bound `LIMIT ?` while planning and then
    // recompiles the cached statement on every new value (see the test below).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(map_err)?;
    Ok(conn)
}

/// One row, owned (rusqlite's rows borrow their statement).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn read(r: &rusqlite::Row<'_>, names: &Arc<[String]>) -> Result<Self, StoreError> {
        let values = (0..names.len())
            .map(|i| r.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?;
        Ok(Self {
            names: names.clone(),
            values,
        })
    }

    /// The column `name`, decoded by rusqlite.
    fn col<T: FromSql>(&self, name: &str) -> Result<T, StoreError> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| StoreError::other(format!("no column {name}")))?;
        T::column_result(ValueRef::from(&self.values[i]))
            .map_err(|e| StoreError::other(format!("column {name}: {e}")))
    }
}

/// SQLite's column codecs for the shared decoders (ADR 0032): UUIDs as 16-byte blobs, times as
/// microseconds since the epoch, integers as `INTEGER`.
impl keel_store_common::rows::ReadRow for Row {
    fn uuid(&self, col: &str) -> Result<uuid::Uuid, StoreError> {
        self.col(col)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.col(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.col(col)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.col(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.col(col)
    }
    fn time(&self, col: &str) -> Result<time::OffsetDateTime, StoreError> {
        crate::from_micros(self.col(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<time::OffsetDateTime>, StoreError> {
        self.col::<Option<i64>>(col)?
            .map(crate::from_micros)
            .transpose()
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<uuid::Uuid>, StoreError> {
        self.col(col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.col(col)
    }
    /// SQLite has no boolean type: 0 or 1 in an `INTEGER`.
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        self.col(col)
    }
    fn json_text(&self, col: &str) -> Result<String, StoreError> {
        self.col(col)
    }
}

/// The shared statements (ADR 0032) on a SQLite connection: a reader, or the writer inside a
/// transaction. Every future it returns is ready at its first poll ([`now`]).
pub(crate) struct Lite<'c>(pub(crate) &'c Connection);

impl Exec for Lite<'_> {
    type Row = Row;
    const DIALECT: Dialect = Dialect::Sqlite;

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        each(self.0, sql, args, |r, names| Row::read(r, names).map(Some))
    }

    async fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<Row>, StoreError> {
        // Stops stepping after the first row.
        let mut first = None;
        each(self.0, sql, args, |r, names| {
            first = Some(Row::read(r, names)?);
            Ok(None::<()>)
        })?;
        Ok(first)
    }

    async fn run(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        note(sql);
        let mut stmt = self.0.prepare_cached(sql).map_err(map_err)?;
        bind(&mut stmt, args)?;
        let n = stmt.raw_execute().map_err(map_err)?;
        u64::try_from(n).map_err(StoreError::other)
    }
}

/// Runs a shared statement's future, which on [`Lite`] is ready at once: SQLite's work is
/// synchronous, on the calling thread. One that is not ready is a bug (something awaited
/// other than a statement), reported rather than blocked on.
pub(crate) fn now<T>(work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut work = std::pin::pin!(work);
    match work
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => Err(StoreError::other(
            "a SQLite storage future waited on something other than a statement",
        )),
    }
}

fn each<R>(
    conn: &Connection,
    sql: &'static str,
    args: &[Arg<'_>],
    mut f: impl FnMut(&rusqlite::Row<'_>, &Arc<[String]>) -> Result<Option<R>, StoreError>,
) -> Result<Vec<R>, StoreError> {
    note(sql);
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    bind(&mut stmt, args)?;
    let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        match f(r, &names)? {
            Some(v) => out.push(v),
            None => break,
        }
    }
    Ok(out)
}

/// Binds each parameter `$n` (SQLite's name for it) to `args[n - 1]`. The statement must name
/// every argument, as PostgreSQL requires.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<(), StoreError> {
    let count = stmt.parameter_count();
    if count != args.len() {
        return Err(StoreError::other(format!(
            "a statement names {count} parameters and was given {}",
            args.len()
        )));
    }
    for index in 1..=count {
        let arg = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| args.get(n))
            .ok_or_else(|| StoreError::other(format!("parameter {index} is not $1..${count}")))?;
        stmt.raw_bind_parameter(index, Bound(arg))
            .map_err(map_err)?;
    }
    Ok(())
}

/// An [`Arg`] in its SQLite column form.
struct Bound<'b, 'a>(&'b Arg<'a>);

impl ToSql for Bound<'_, '_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let list = |v: serde_json::Value| ToSqlOutput::Owned(Value::Text(v.to_string()));
        let conversion = |e: StoreError| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
        Ok(match self.0 {
            Arg::Uuid(Some(u)) => ToSqlOutput::Borrowed(ValueRef::Blob(u.as_bytes())),
            Arg::Text(Some(t)) | Arg::Json(Some(t)) => {
                ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes()))
            }
            Arg::Int(Some(i)) => ToSqlOutput::Owned(Value::Integer(*i)),
            Arg::Flag(Some(b)) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
            Arg::Bytes(Some(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Arg::Time(Some(t)) => {
                ToSqlOutput::Owned(Value::Integer(crate::to_micros(*t).map_err(conversion)?))
            }
            Arg::Uuid(None)
            | Arg::Text(None)
            | Arg::Json(None)
            | Arg::Int(None)
            | Arg::Flag(None)
            | Arg::Bytes(None)
            | Arg::Time(None) => ToSqlOutput::Owned(Value::Null),
            Arg::Uuids(ids) => list(ids.iter().map(|u| u.simple().to_string()).collect()),
            Arg::Texts(v) => list(v.iter().map(String::as_str).collect()),
            Arg::Strs(v) => list(v.iter().copied().collect()),
            Arg::Ints(v) => list(v.iter().copied().collect()),
            Arg::Times(v) => list(
                v.iter()
                    .map(|t| crate::to_micros(*t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(conversion)?
                    .into(),
            ),
        })
    }
}

/// The reader connections: `query_only`, each behind its own lock, used on the calling thread.
#[derive(Debug)]
pub(crate) struct Readers {
    conns: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl Readers {
    /// Opens `count` reader connections to an existing database file.
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        count: u32,
    ) -> Result<Self, StoreError> {
        let conns = (0..count)
            .map(|_| {
                let conn = open(path, OpenFlags::empty(), busy_timeout)?;
                // A reader never writes, whatever a bug might ask of it.
                conn.pragma_update(None, "query_only", true)
                    .map_err(map_err)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if conns.is_empty() {
            return Err(StoreError::other(
                "at least one reader connection is needed",
            ));
        }
        Ok(Self {
            conns: conns.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a free reader (the first one not in use, starting round-robin; waits for
    /// one only when all are busy, which needs more threads reading than readers).
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(conn) = self.conns[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        // A panic while reading leaves the connection usable: rusqlite resets its statements
        // when they drop, so a poisoned lock is taken over.
        let conn = self.conns[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// The workspace builds SQLite without its process-wide memory-statistics and page-cache
    /// mutexes (ADR 0024, `.cargo/config.toml`); a build that lost the flags would still work,
    /// only slower, so this test is what notices.
    #[test]
    fn sqlite_is_built_without_global_memory_mutexes() {
        let conn = Connection::open_in_memory().expect("open");
        let used = |option: &str| -> bool {
            conn.query_row("SELECT sqlite_compileoption_used(?1)", [option], |r| {
                r.get(0)
            })
            .expect("compile option")
        };
        assert!(!used("ENABLE_MEMORY_MANAGEMENT"));
        assert!(used("DEFAULT_MEMSTATUS=0"));
    }

    /// Three values bound in turn, and the keys each must answer.
    type Runs = [(i64, &'static [i64]); 3];

    /// A cached statement must stay compiled across calls. Since SQLite 3.47 the planner
    /// may read a bound `LIMIT ?` (and, with STAT4, bound comparison values) and then
    /// recompiles the statement each time a new value is bound: the relay's read of the
    /// outbox was parsed and planned anew on every pass, 2 % of the server's CPU under the
    /// checkout load. The connections run with the query planner stability guarantee.
    #[test]
    fn bound_values_do_not_recompile_cached_statements() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open(
            &dir.path().join("t.db"),
            OpenFlags::SQLITE_OPEN_CREATE,
            Duration::from_secs(1),
        )
        .expect("open");
        conn.execute_batch(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, at INTEGER NOT NULL, done INTEGER);
             CREATE INDEX t_open ON t (at, k) WHERE done IS NULL;
             INSERT INTO t (k, at) VALUES (1, 10), (2, 20), (3, 30), (4, 40);",
        )
        .expect("schema");
        let cases: [(&str, Runs); 2] = [
            (
                "SELECT k FROM t WHERE done IS NULL ORDER BY at, k LIMIT ?1",
                [(1, &[1]), (3, &[1, 2, 3]), (2, &[1, 2])],
            ),
            (
                "SELECT k FROM t WHERE at >= ?1 ORDER BY at, k LIMIT 2",
                [(10, &[1, 2]), (30, &[3, 4]), (40, &[4])],
            ),
        ];
        for (sql, runs) in cases {
            for (bound, want) in runs {
                let mut stmt = conn.prepare_cached(sql).expect("prepare");
                let got: Vec<i64> = stmt
                    .query_map([bound], |r| r.get(0))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                assert_eq!(got, want, "{sql} with {bound}");
                assert_eq!(
                    stmt.get_status(StatementStatus::RePrepare),
                    0,
                    "{sql} was recompiled for the value bound"
                );
            }
        }
    }
}
