//! The single writer with group commit (ADR 0013).
//!
//! SQLite with `synchronous = FULL` pays one fsync per commit, so one transaction per commit caps
//! a single-writer database at the disk's fsync rate. Here every write transaction runs as a
//! *savepoint* inside one outer `BEGIN IMMEDIATE` transaction shared by the writers that queue
//! while the previous commit is on its way to disk:
//!
//! 1. A writer takes the connection (a FIFO lock), opens the outer transaction if none is open,
//!    and starts `SAVEPOINT member`.
//! 2. On success it releases the savepoint, joins the open *group* and gives the connection to
//!    the next writer, then waits. On failure (or when dropped) it rolls back to its savepoint:
//!    its neighbours' work is untouched.
//! 3. The flusher task, poked when a group gets its first member, queues for the same lock;
//!    being FIFO, it gets it after the writers that were already waiting, which therefore land
//!    in the same group. It issues one `COMMIT` (one fsync) and answers every member with its
//!    outcome. No member hears "committed" before its commit is on disk.
//!
//! Without group commit (`KEEL_SQLITE__GROUP_COMMIT=false`) a commit is an immediate `COMMIT`
//! by the writer itself: one fsync per transaction.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use keel_kernel::StoreError;
use sqlx::{Executor as _, Sqlite, SqliteConnection, SqlitePool, pool::PoolConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

use crate::error::map_err;

/// A group's outcome as its members hear it (an `sqlx::Error` cannot be shared).
type Outcome = Result<(), String>;

/// The connection and the open group.
#[derive(Debug, Default)]
struct Slot {
    /// Held while an outer transaction is open; returned to the pool after it ends.
    conn: Option<PoolConnection<Sqlite>>,
    /// A member was dropped without finishing: its savepoint must be rolled back first.
    dirty: bool,
    /// Members whose work is in the open transaction, waiting for its commit.
    group: Vec<oneshot::Sender<Outcome>>,
}

/// How many write transactions finished and how many commits carried them.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub transactions: AtomicU64,
    pub commits: AtomicU64,
    /// Writers waiting for the connection right now.
    pub waiting: AtomicU64,
}

/// The single writer.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pool: SqlitePool,
    slot: Arc<Mutex<Slot>>,
    flush: mpsc::UnboundedSender<()>,
    group_commit: bool,
    acquire_timeout: Duration,
    pub(crate) stats: Arc<WriteStats>,
}

impl Writer {
    pub(crate) fn new(pool: SqlitePool, group_commit: bool, acquire_timeout: Duration) -> Self {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let stats = Arc::new(WriteStats::default());
        let (flush, pokes) = mpsc::unbounded_channel();
        tokio::spawn(flusher(Arc::downgrade(&slot), pokes, stats.clone()));
        Self {
            pool,
            slot,
            flush,
            group_commit,
            acquire_timeout,
            stats,
        }
    }

    /// The pool behind the writer (migrations run on it before any request).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction: a savepoint in the open outer transaction.
    pub(crate) async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let slot = tokio::time::timeout(self.acquire_timeout, self.slot.clone().lock_owned()).await;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut slot =
            slot.map_err(|_| StoreError::unavailable(std::io::Error::other("the writer is busy")))?;
        clean(&mut slot).await?;
        if slot.conn.is_none() {
            let mut conn = self.pool.acquire().await.map_err(map_err)?;
            conn.execute("BEGIN IMMEDIATE").await.map_err(map_err)?;
            slot.conn = Some(conn);
        }
        connection(&mut slot)
            .execute("SAVEPOINT member")
            .await
            .map_err(map_err)?;
        Ok(WriteTx {
            slot: Some(slot),
            writer: self.clone(),
        })
    }

    fn poke(&self) {
        // The flusher only stops when every writer is gone; then nobody waits either.
        let _ = self.flush.send(());
    }
}

fn connection(slot: &mut Slot) -> &mut SqliteConnection {
    slot.conn
        .as_deref_mut()
        .expect("a member runs only while the outer transaction is open")
}

/// Rolls back the savepoint of a member that was dropped mid-way.
async fn clean(slot: &mut Slot) -> Result<(), StoreError> {
    if slot.dirty {
        if let Some(conn) = slot.conn.as_deref_mut() {
            conn.execute("ROLLBACK TO member; RELEASE member")
                .await
                .map_err(map_err)?;
        }
        slot.dirty = false;
    }
    Ok(())
}

/// Ends the open transaction: `COMMIT`, and every member hears the outcome.
async fn flush(slot: &mut Slot, stats: &WriteStats) {
    let cleaned = clean(slot).await.map_err(|e| e.to_string());
    let Some(mut conn) = slot.conn.take() else {
        return;
    };
    let outcome = match cleaned {
        Ok(()) => conn
            .execute("COMMIT")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        // A failed COMMIT can leave the transaction open; nothing of it may survive.
        let _ = conn.execute("ROLLBACK").await;
        tracing::error!("group commit failed; its members are answered with the error");
    }
    stats.commits.fetch_add(1, Ordering::Relaxed);
    for member in slot.group.drain(..) {
        let _ = member.send(outcome.clone());
    }
}

/// Commits a group each time it is poked, after the writers already queued for the lock.
async fn flusher(
    slot: Weak<Mutex<Slot>>,
    mut pokes: mpsc::UnboundedReceiver<()>,
    stats: Arc<WriteStats>,
) {
    while pokes.recv().await.is_some() {
        let Some(slot) = slot.upgrade() else {
            return;
        };
        let mut guard = slot.lock().await;
        flush(&mut guard, &stats).await;
    }
}

/// One write transaction (a savepoint in the group's transaction). Dereferences to the
/// connection; dropping it without [`WriteTx::commit`] rolls its work back.
#[derive(Debug)]
pub(crate) struct WriteTx {
    slot: Option<OwnedMutexGuard<Slot>>,
    writer: Writer,
}

impl WriteTx {
    fn slot(&mut self) -> &mut Slot {
        self.slot
            .as_deref_mut()
            .expect("the slot is held until commit, rollback or drop")
    }

    /// Makes the work durable: answers once the commit that carries it is on disk.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let writer = self.writer.clone();
        let mut slot = self
            .slot
            .take()
            .expect("the slot is held until commit, rollback or drop");
        writer.stats.transactions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = connection(&mut slot).execute("RELEASE member").await {
            slot.dirty = true;
            writer.poke();
            return Err(e);
        }
        if !writer.group_commit {
            flush_alone(&mut slot, &writer.stats).await?;
            return Ok(());
        }
        let (done, outcome) = oneshot::channel();
        slot.group.push(done);
        if slot.group.len() == 1 {
            writer.poke();
        }
        drop(slot);
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(sqlx::Error::Io(std::io::Error::other(e))),
            Err(_) => Err(sqlx::Error::Io(std::io::Error::other(
                "the group commit was abandoned",
            ))),
        }
    }

    /// Discards this transaction's work and only it.
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let writer = self.writer.clone();
        let mut slot = self
            .slot
            .take()
            .expect("the slot is held until commit, rollback or drop");
        writer.stats.transactions.fetch_add(1, Ordering::Relaxed);
        let undone = connection(&mut slot)
            .execute("ROLLBACK TO member; RELEASE member")
            .await;
        if undone.is_err() {
            slot.dirty = true;
        }
        if slot.group.is_empty() {
            // Nobody else will end the (now empty) outer transaction and free the write lock.
            writer.poke();
        }
        undone.map(|_| ())
    }
}

/// Without group commit: the transaction holds only this member; commit it now.
async fn flush_alone(slot: &mut Slot, stats: &WriteStats) -> Result<(), sqlx::Error> {
    let mut conn = slot
        .conn
        .take()
        .expect("a member runs only while the outer transaction is open");
    let result = conn.execute("COMMIT").await.map(|_| ());
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    stats.commits.fetch_add(1, Ordering::Relaxed);
    result
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            // Dropped mid-way (an error returned early, or the request was cancelled): the
            // next holder rolls the savepoint back, and the flusher ends the transaction.
            slot.dirty = true;
            drop(slot);
            self.writer.poke();
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.slot
            .as_deref()
            .and_then(|s| s.conn.as_deref())
            .expect("a member runs only while the outer transaction is open")
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        connection(self.slot())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    use super::*;

    async fn open(group_commit: bool) -> (tempfile::TempDir, Writer, SqlitePool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("writer.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("writer pool");
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("table");
        let readers = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("reader pool");
        (
            dir,
            Writer::new(pool, group_commit, Duration::from_secs(5)),
            readers,
        )
    }

    async fn insert(tx: &mut WriteTx, k: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO t (k) VALUES (?1)")
            .bind(k)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    /// What is on disk, read by another connection.
    async fn keys(readers: &SqlitePool) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(readers)
            .await
            .expect("read")
    }

    /// Until `n` writers wait for the connection (state, not time).
    async fn queued(w: &Writer, n: u64) {
        while w.stats.waiting.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
    }

    fn counts(w: &Writer) -> (u64, u64) {
        (
            w.stats.transactions.load(Ordering::Relaxed),
            w.stats.commits.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn a_failed_transaction_inside_a_group_rolls_back_alone() {
        let (_dir, w, readers) = open(true).await;
        let mut first = w.begin().await.expect("begin");
        insert(&mut first, "a").await.expect("a");
        // Three writers queue behind it and so join its group: one succeeds, one breaks a
        // constraint (the key `a` of its neighbour) and rolls back, one is dropped mid-way.
        let ok = tokio::spawn({
            let w = w.clone();
            async move {
                let mut tx = w.begin().await.expect("begin");
                insert(&mut tx, "b").await.expect("b");
                tx.commit().await
            }
        });
        let failing = tokio::spawn({
            let w = w.clone();
            async move {
                let mut tx = w.begin().await.expect("begin");
                insert(&mut tx, "c").await.expect("c");
                assert!(insert(&mut tx, "a").await.is_err(), "a duplicate key");
                tx.rollback().await
            }
        });
        let dropped = tokio::spawn({
            let w = w.clone();
            async move {
                let mut tx = w.begin().await.expect("begin");
                insert(&mut tx, "d").await.expect("d");
                drop(tx);
            }
        });
        queued(&w, 3).await;
        assert!(
            keys(&readers).await.is_empty(),
            "nothing is visible before the commit"
        );
        first.commit().await.expect("the group commits");
        ok.await.expect("task").expect("b commits with the group");
        failing.await.expect("task").expect("rollback");
        dropped.await.expect("task");
        assert_eq!(
            keys(&readers).await,
            ["a", "b"],
            "the failed and the dropped work is gone, alone"
        );
        assert_eq!(
            counts(&w),
            (3, 1),
            "three finished transactions, one commit"
        );
        // The writer goes on: a later transaction commits on its own.
        let mut later = w.begin().await.expect("begin");
        insert(&mut later, "e").await.expect("e");
        later.commit().await.expect("commit");
        assert_eq!(keys(&readers).await, ["a", "b", "e"]);
    }

    #[tokio::test]
    async fn writers_queued_behind_a_commit_share_the_next_one() {
        let (_dir, w, readers) = open(true).await;
        let mut first = w.begin().await.expect("begin");
        insert(&mut first, "first").await.expect("insert");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = w.begin().await.expect("begin");
                insert(&mut tx, &format!("k{i:03}")).await.expect("insert");
                tx.commit().await
            }));
        }
        queued(&w, 200).await;
        first.commit().await.expect("commit");
        for t in tasks {
            t.await
                .expect("task")
                .expect("each answered after the shared commit");
        }
        assert_eq!(keys(&readers).await.len(), 201);
        assert_eq!(counts(&w), (201, 1), "201 transactions, one fsync");
    }

    #[tokio::test]
    async fn without_group_commit_each_transaction_commits_alone() {
        let (_dir, w, readers) = open(false).await;
        let mut first = w.begin().await.expect("begin");
        insert(&mut first, "first").await.expect("insert");
        let mut tasks = Vec::new();
        for i in 0..20 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = w.begin().await.expect("begin");
                insert(&mut tx, &format!("k{i:02}")).await.expect("insert");
                tx.commit().await
            }));
        }
        queued(&w, 20).await;
        first.commit().await.expect("commit");
        for t in tasks {
            t.await.expect("task").expect("commit");
        }
        assert_eq!(keys(&readers).await.len(), 21);
        assert_eq!(counts(&w), (21, 21));
    }
}
