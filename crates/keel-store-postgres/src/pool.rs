//! The adapter's own connection pool (ADR 0019).
//!
//! sqlx's pool pings every connection when it is returned (hard-coded in `sqlx-core`'s
//! `return_to_pool`): one extra round trip, and one more wake-up of a PostgreSQL backend, for
//! every statement run on the pool and every transaction, about 55 per checkout. That ping
//! exists for one reason: a connection whose future was dropped part-way (a request cancelled
//! mid-statement, a transaction never committed) must not reach the next request unsettled.
//! This pool knows when that happened instead of guessing: a connection comes back
//! *settled* only through the paths that finish their work (a statement run on the pool to its
//! end, [`Tx::commit`], [`Tx::rollback`], [`Conn::release`]). Everything else (an error, a
//! dropped future, an early return) sends the connection through a check first, off the
//! request's path: a `ROLLBACK` when a transaction may be open, a ping otherwise; a connection
//! that fails it is closed.
//!
//! Sizes and times are exact: at most `size` connections (a permit per connection in use,
//! and a connection is only opened while no idle one exists, so in use + idle never exceeds
//! it), an acquire waits at most `acquire_timeout`, an idle connection is pinged before use
//! after [`PING_IDLE_AFTER`], closed after [`IDLE_TIMEOUT`], and no connection lives past
//! [`MAX_LIFETIME`] (the same idle and lifetime limits sqlx's pool applied by default).

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{
    FutureExt as _, StreamExt as _, TryStreamExt as _,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use sqlx::{
    Connection as _, Either, Execute, Executor,
    postgres::{PgConnectOptions, PgConnection, PgQueryResult, PgRow, PgStatement, PgTypeInfo},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection idle at least this long is pinged before it is handed out: the server or the
/// network may have dropped it meanwhile.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);
/// An idle connection is closed after this long unused.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_mins(10);
/// A connection is closed (at its next return or by the reaper) once it is this old, so
/// server-side state (memory, plan caches) does not grow without bound.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_mins(30);
/// How often idle connections are checked against the two limits above.
const REAP_EVERY: Duration = Duration::from_mins(1);
/// How long the check of an unsettled connection (a `ROLLBACK` or a ping, which first waits
/// for whatever the abandoned statement still has to answer) may take before the connection
/// is closed instead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of PostgreSQL connections. Cheap to clone (one shared inner).
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connect: PgConnectOptions,
    size: u32,
    acquire_timeout: Duration,
    /// One permit per connection in use; fair, so waiters are served in arrival order.
    slots: Arc<Semaphore>,
    /// Most recently returned last: acquire takes from the back (a warm connection), the
    /// reaper looks at the front (the longest idle).
    idle: Mutex<VecDeque<Idle>>,
    closed: AtomicBool,
    stats: Stats,
}

/// What the pool did, for `/metrics` (counters only: monotonic, so rates come out right).
#[derive(Default)]
struct Stats {
    opened: AtomicU64,
    /// Returned unsettled and checked off the request's path (`ROLLBACK` or ping).
    checked: AtomicU64,
    /// Closed because broken (a failed check or ping) or past the idle or lifetime limit.
    closed: AtomicU64,
    acquire_timeouts: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Idle {
    raw: PgConnection,
    created: Instant,
    since: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Connect options hold the password: only the shape is shown.
        f.debug_struct("Pool")
            .field("size", &self.inner.size)
            .field("idle", &self.inner.idle_len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool that opens connections on demand (none at creation, so a node starts while the
    /// database is still coming up). Within a Tokio runtime a reaper task closes connections
    /// past the idle and lifetime limits; it ends when the pool is dropped.
    pub(crate) fn new(connect: PgConnectOptions, size: u32, acquire_timeout: Duration) -> Self {
        let inner = Arc::new(Inner {
            connect,
            size,
            acquire_timeout,
            slots: Arc::new(Semaphore::new(size as usize)),
            idle: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// A connection for several statements outside a transaction. Call [`Conn::release`]
    /// when done; a connection dropped without it is checked before reuse.
    pub(crate) async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        tokio::time::timeout(self.inner.acquire_timeout, self.acquire_within())
            .await
            .map_err(|_| {
                Stats::add(&self.inner.stats.acquire_timeouts);
                sqlx::Error::PoolTimedOut
            })?
    }

    async fn acquire_within(&self) -> Result<Conn, sqlx::Error> {
        let permit = Arc::clone(&self.inner.slots)
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        loop {
            let Some(mut idle) = self.inner.pop_idle() else {
                let raw = PgConnection::connect_with(&self.inner.connect).await?;
                Stats::add(&self.inner.stats.opened);
                return Ok(self.conn(raw, Instant::now(), permit));
            };
            if idle.created.elapsed() >= MAX_LIFETIME {
                Stats::add(&self.inner.stats.closed);
                close(idle.raw);
                continue;
            }
            if idle.since.elapsed() >= PING_IDLE_AFTER && idle.raw.ping().await.is_err() {
                // Broken: dropping it closes the socket; try the next one or open a new one.
                Stats::add(&self.inner.stats.closed);
                continue;
            }
            return Ok(self.conn(idle.raw, idle.created, permit));
        }
    }

    fn conn(&self, raw: PgConnection, created: Instant, permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            raw: Some(raw),
            created,
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
            settled: false,
            in_transaction: false,
        }
    }

    /// Begins a transaction on a connection of the pool. Finish it with [`Tx::commit`] or
    /// [`Tx::rollback`]; a transaction dropped without either is rolled back before its
    /// connection is reused.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut conn = self.acquire().await?;
        // Marked before `BEGIN` is sent: if this future is dropped after the server has
        // begun the transaction, the check must roll it back.
        conn.in_transaction = true;
        // READ COMMITTED whatever the server's default: the quota triggers (migration 21)
        // count after taking their lock and must see every write committed before it.
        crate::exec::note();
        sqlx::raw_sql("BEGIN ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        Ok(Tx { conn })
    }

    /// The pool's counters, named for `/metrics`.
    pub(crate) fn counters(&self) -> Vec<keel_kernel::health::StoreCounter> {
        use keel_kernel::health::StoreCounter;
        let stats = &self.inner.stats;
        let value = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            StoreCounter {
                name: "keel_postgres_statements_total",
                help: "SQL statements this node sent to PostgreSQL through its store, transaction control included.",
                value: crate::exec::statements_run(),
            },
            StoreCounter {
                name: "keel_postgres_connections_opened_total",
                help: "PostgreSQL connections this node opened.",
                value: value(&stats.opened),
            },
            StoreCounter {
                name: "keel_postgres_connections_checked_total",
                help: "Connections returned with their work unfinished (an error, a cancelled request) and checked with a ROLLBACK or a ping before reuse.",
                value: value(&stats.checked),
            },
            StoreCounter {
                name: "keel_postgres_connections_closed_total",
                help: "Connections closed because they failed a check or passed the idle or lifetime limit.",
                value: value(&stats.closed),
            },
            StoreCounter {
                name: "keel_postgres_acquire_timeouts_total",
                help: "Requests that waited the whole acquire timeout for a connection (answered 503).",
                value: value(&stats.acquire_timeouts),
            },
        ]
    }

    /// Stops handing out connections, waits (at most the acquire timeout) for those in use to
    /// come back, and closes every connection.
    pub(crate) async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let all = tokio::time::timeout(
            self.inner.acquire_timeout,
            self.inner.slots.acquire_many(self.inner.size),
        )
        .await;
        self.inner.slots.close();
        drop(all);
        let idle: Vec<Idle> = self.inner.lock_idle().drain(..).collect();
        for conn in idle {
            let _ = conn.raw.close().await;
        }
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // The lock guards plain pushes and pops that cannot panic half-way; a poisoned lock
        // still holds a consistent list.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn idle_len(&self) -> usize {
        self.lock_idle().len()
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.lock_idle().pop_back()
    }

    /// Returns a settled connection. Pushed before the caller's permit is dropped, so the
    /// next acquirer finds it instead of opening another.
    fn push_idle(&self, raw: PgConnection, created: Instant) {
        if self.closed.load(Ordering::Acquire) {
            close(raw);
            return;
        }
        self.lock_idle().push_back(Idle {
            raw,
            created,
            since: Instant::now(),
        });
    }

    /// Takes out the idle connections past the idle or lifetime limit.
    fn expired(&self) -> Vec<PgConnection> {
        let mut idle = self.lock_idle();
        let (keep, expired): (VecDeque<Idle>, VecDeque<Idle>) = idle
            .drain(..)
            .partition(|c| c.since.elapsed() < IDLE_TIMEOUT && c.created.elapsed() < MAX_LIFETIME);
        *idle = keep;
        expired.into_iter().map(|c| c.raw).collect()
    }
}

async fn reap(pool: Weak<Inner>) {
    let mut every = tokio::time::interval(REAP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let expired = inner.expired();
        for _ in &expired {
            Stats::add(&inner.stats.closed);
        }
        drop(inner);
        for raw in expired {
            let _ = raw.close().await;
        }
    }
}

/// Closes a connection politely (a `Terminate` message) without holding up the caller.
fn close(raw: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = raw.close().await;
        });
    }
}

/// A connection taken from the [`Pool`]; returns to it when dropped.
pub(crate) struct Conn {
    /// `None` only after drop has taken it.
    raw: Option<PgConnection>,
    created: Instant,
    /// Held until the connection is back in the idle list (or closed).
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
    /// Set only where the work on the connection ran to its end; anything else is checked.
    settled: bool,
    /// A transaction may be open on the server.
    in_transaction: bool,
}

impl Conn {
    /// Returns the connection after work that ran to its end.
    pub(crate) fn release(mut self) {
        self.settled = true;
    }

    /// Marks whether the work on the connection so far ran to its end (set false before a
    /// statement, true once it has answered).
    pub(crate) fn settle(&mut self, settled: bool) {
        self.settled = settled;
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.raw.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.raw.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(mut raw), Some(permit)) = (self.raw.take(), self.permit.take()) else {
            return;
        };
        let pool = Arc::clone(&self.pool);
        let created = self.created;
        if created.elapsed() >= MAX_LIFETIME {
            Stats::add(&pool.stats.closed);
            close(raw);
            return;
        }
        if self.settled && !self.in_transaction {
            pool.push_idle(raw, created);
            drop(permit);
            return;
        }
        // Off the request's path; without a runtime (shutdown) the connection is dropped,
        // which closes its socket and so ends any transaction on the server.
        let in_transaction = self.in_transaction;
        Stats::add(&pool.stats.checked);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let check = async {
                    if in_transaction {
                        sqlx::raw_sql("ROLLBACK").execute(&mut raw).await.map(drop)
                    } else {
                        raw.ping().await
                    }
                };
                if let Ok(Ok(())) = tokio::time::timeout(CHECK_TIMEOUT, check).await {
                    pool.push_idle(raw, created);
                } else {
                    Stats::add(&pool.stats.closed);
                }
                drop(permit);
            });
        }
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

/// A transaction on a pooled connection; rolled back before reuse unless finished.
#[derive(Debug)]
pub(crate) struct Tx {
    conn: Conn,
}

impl Tx {
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.finish("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.finish("ROLLBACK").await
    }

    async fn finish(&mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        crate::exec::note();
        match sqlx::raw_sql(statement).execute(&mut *self.conn).await {
            Ok(_) => {
                self.conn.in_transaction = false;
                self.conn.settled = true;
                Ok(())
            }
            Err(e) => {
                // The server answered (a failed `COMMIT` ends the transaction too): only a
                // ping is left to do. Anything else may have left it open.
                if matches!(e, sqlx::Error::Database(_)) {
                    self.conn.in_transaction = false;
                }
                Err(e)
            }
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// Statements run straight on the pool (`query.fetch_one(&pool)`), as with sqlx's pool: each
/// takes a connection and returns it settled once the statement has run to its end.
impl<'p> Executor<'p> for &'_ Pool {
    type Database = sqlx::Postgres;

    /// Collects the results before yielding them: the adapter never streams a result set, so
    /// holding the rows of one statement costs nothing over `fetch_all`, and the connection is
    /// settled (the statement ran to its end) before the caller sees the first row.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, sqlx::Postgres>,
    {
        let pool = self.clone();
        stream::once(async move {
            let mut conn = pool.acquire().await?;
            let all: Vec<_> = (&mut *conn).fetch_many(query).try_collect().await?;
            conn.release();
            Ok::<_, sqlx::Error>(stream::iter(all.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, sqlx::Postgres>,
    {
        let pool = self.clone();
        async move {
            let mut conn = pool.acquire().await?;
            let row = (&mut *conn).fetch_optional(query).await?;
            conn.release();
            Ok(row)
        }
        .boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        async move {
            let mut conn = pool.acquire().await?;
            let statement = (&mut *conn).prepare_with(sql, parameters).await?;
            conn.release();
            Ok(statement)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::{Connection as _, Executor as _, postgres::PgConnection};

    use super::Pool;

    const TIMEOUT: Duration = Duration::from_millis(300);
    /// Bound on waiting for the server to show a state the test caused.
    const SERVER_STATE_DEADLINE: Duration = Duration::from_secs(10);

    async fn pid(executor: impl sqlx::Executor<'_, Database = sqlx::Postgres>) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(executor)
            .await
            .expect("pid")
    }

    /// Polls the server (one statement per round, no sleeping) until `sql` with `pid` answers
    /// true.
    async fn until_server_shows(outside: &mut PgConnection, sql: &'static str, pid: i32) {
        let deadline = tokio::time::Instant::now() + SERVER_STATE_DEADLINE;
        loop {
            let shown: bool = sqlx::query_scalar(sql)
                .bind(pid)
                .fetch_one(&mut *outside)
                .await
                .expect("pg_stat_activity");
            if shown {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not show `{sql}` for {pid}"
            );
            tokio::task::yield_now().await;
        }
    }

    fn counter(pool: &Pool, name: &str) -> u64 {
        pool.counters()
            .into_iter()
            .find(|c| {
                c.name
                    .strip_prefix("keel_postgres_")
                    .and_then(|n| n.strip_suffix("_total"))
                    == Some(name)
            })
            .map(|c| c.value)
            .expect("a pool counter")
    }

    async fn table(pool: &Pool) {
        sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
            .execute(pool)
            .await
            .expect("table");
    }

    #[tokio::test]
    async fn a_transaction_dropped_unfinished_is_rolled_back_before_its_connection_serves_again() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = Pool::new(schema.connect_options(), 1, TIMEOUT);
        table(&pool).await;
        let mut tx = pool.begin().await.expect("begin");
        let in_tx = pid(&mut *tx).await;
        sqlx::query("SELECT id FROM t WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await
            .expect("lock");
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .expect("insert");
        drop(tx);

        // The only connection is handed out again only after its check: same backend, no
        // transaction open, the insert gone, the row lock released.
        let mut conn = pool.acquire().await.expect("acquire");
        assert_eq!(
            pid(&mut *conn).await,
            in_tx,
            "the connection was reused, not replaced"
        );
        assert_eq!(counter(&pool, "connections_checked"), 1);
        assert_eq!(counter(&pool, "connections_opened"), 1);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        assert_eq!(rows, 1);
        conn.release();
        let mut outside = PgConnection::connect_with(&schema.connect_options())
            .await
            .expect("outside");
        let state: String = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(in_tx)
            .fetch_one(&mut outside)
            .await
            .expect("state");
        assert_eq!(state, "idle");
        let mut other = outside.begin().await.expect("begin outside");
        sqlx::query("SELECT id FROM t WHERE id = 1 FOR UPDATE NOWAIT")
            .execute(&mut *other)
            .await
            .expect("the row lock was released");
        other.rollback().await.expect("rollback");
    }

    #[tokio::test]
    async fn a_statement_abandoned_mid_flight_leaves_its_connection_answering_the_next_one() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = Pool::new(schema.connect_options(), 1, SERVER_STATE_DEADLINE);
        table(&pool).await;
        let pooled = pid(&pool).await;
        let mut outside = PgConnection::connect_with(&schema.connect_options())
            .await
            .expect("outside");
        outside
            .execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock the table");
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move {
                sqlx::query_scalar::<_, i32>("SELECT id FROM t")
                    .fetch_one(&pool)
                    .await
            })
        };
        until_server_shows(
            &mut outside,
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
            pooled,
        )
        .await;
        waiting.abort();
        assert!(waiting.await.expect_err("aborted").is_cancelled());
        outside.execute("ROLLBACK").await.expect("unlock");

        let answer: i32 = sqlx::query_scalar("SELECT 42")
            .fetch_one(&pool)
            .await
            .expect("the next statement");
        assert_eq!(
            answer, 42,
            "the abandoned statement's rows were not handed to it"
        );
        assert_eq!(
            pid(&pool).await,
            pooled,
            "the connection was reused, not replaced"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_ended_is_replaced_after_at_most_one_failed_statement() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = Pool::new(schema.connect_options(), 1, SERVER_STATE_DEADLINE);
        let ended = pid(&pool).await;
        let mut outside = PgConnection::connect_with(&schema.connect_options())
            .await
            .expect("outside");
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(ended)
            .execute(&mut outside)
            .await
            .expect("terminate");
        until_server_shows(
            &mut outside,
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            ended,
        )
        .await;

        // Used within a second of its last statement, the dead connection is not pinged first,
        // so this one statement may fail; its connection is then checked and closed.
        if let Ok(first) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
        {
            assert_ne!(first, ended);
        }
        assert_ne!(pid(&pool).await, ended);
        assert_eq!(counter(&pool, "connections_opened"), 2);
        assert_eq!(counter(&pool, "connections_closed"), 1, "the dead one");
    }

    #[tokio::test]
    async fn a_pool_of_two_opens_two_connections_and_a_third_request_waits_at_most_the_timeout() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = Pool::new(schema.connect_options(), 2, TIMEOUT);
        let mut first = pool.acquire().await.expect("first");
        let mut second = pool.acquire().await.expect("second");
        let pids = (pid(&mut *first).await, pid(&mut *second).await);
        assert_ne!(pids.0, pids.1);
        assert!(matches!(
            pool.acquire().await,
            Err(sqlx::Error::PoolTimedOut)
        ));
        assert_eq!(counter(&pool, "acquire_timeouts"), 1);
        first.release();
        let mut third = pool.acquire().await.expect("after a release");
        assert_eq!(
            pid(&mut *third).await,
            pids.0,
            "the idle connection is reused"
        );
        third.release();
        second.release();

        let mut outside = PgConnection::connect_with(&schema.connect_options())
            .await
            .expect("outside");
        let own = pid(&mut outside).await;
        let opened: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = current_setting('application_name') AND pid <> $1",
        )
        .bind(own)
        .fetch_one(&mut outside)
        .await
        .expect("count");
        assert_eq!(opened, 2);
        assert_eq!(counter(&pool, "connections_opened"), 2);
        assert_eq!(
            counter(&pool, "connections_checked"),
            0,
            "every connection came back settled"
        );

        pool.close().await;
        assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
        for closed in [pids.0, pids.1] {
            until_server_shows(
                &mut outside,
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                closed,
            )
            .await;
        }
    }

    /// Half of 32 concurrent transactions are cancelled while open (their tasks aborted after
    /// inserting); the other half commit through a pool of 8. Afterwards exactly the committed
    /// rows exist, no connection is left inside a transaction, and each cancelled one was
    /// checked once.
    #[tokio::test]
    async fn transactions_cancelled_under_load_leave_no_row_and_no_open_transaction() {
        const TASKS: i32 = 32;
        const SIZE: u32 = 8;
        let schema = keel_testdb::postgres_schema().await;
        let pool = Pool::new(schema.connect_options(), SIZE, SERVER_STATE_DEADLINE);
        table(&pool).await;
        let (inserted, mut cancellable) = tokio::sync::mpsc::unbounded_channel();
        let mut committing = Vec::new();
        let mut cancelled = std::collections::HashMap::new();
        for i in 0..TASKS {
            let (pool, inserted) = (pool.clone(), inserted.clone());
            let task = tokio::spawn(async move {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO t VALUES ($1)")
                    .bind(100 + i)
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                if i % 2 == 0 {
                    inserted.send(i).expect("the test listens");
                    // Held open until the test aborts this task.
                    std::future::pending::<()>().await;
                }
                tx.commit().await.expect("commit");
            });
            if i % 2 == 0 {
                cancelled.insert(i, task);
            } else {
                committing.push(task);
            }
        }
        drop(inserted);
        // Each even task is aborted as soon as its insert is in; the odd ones get their
        // connections as the cancelled ones are rolled back.
        for _ in 0..TASKS / 2 {
            let i = cancellable.recv().await.expect("an insert");
            let task = cancelled.remove(&i).expect("a cancellable task");
            task.abort();
            assert!(task.await.expect_err("aborted").is_cancelled());
        }
        for task in committing {
            task.await.expect("committed");
        }
        // Taking every connection waits for the checks still running.
        let mut all = Vec::new();
        for _ in 0..SIZE {
            all.push(pool.acquire().await.expect("acquire"));
        }
        for conn in all {
            conn.release();
        }

        let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("rows");
        let expected: Vec<i32> = std::iter::once(1)
            .chain((0..TASKS).filter(|i| i % 2 == 1).map(|i| 100 + i))
            .collect();
        assert_eq!(ids, expected);
        let mut outside = PgConnection::connect_with(&schema.connect_options())
            .await
            .expect("outside");
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = current_setting('application_name') \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&mut outside)
        .await
        .expect("states");
        assert_eq!(open, 0);
        assert_eq!(
            counter(&pool, "connections_checked"),
            u64::from(TASKS.unsigned_abs() / 2)
        );
        assert_eq!(counter(&pool, "connections_closed"), 0);
    }
}
