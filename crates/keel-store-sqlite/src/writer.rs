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
//!
//! The hot writes do not take the connection themselves: they hand their work to the writer
//! as a *job* ([`Writer::run`], ADR 0023), which the flusher runs back to back, each in its
//! savepoint, before each `COMMIT`. Taking the connection in turn cost every member a hand-off
//! from one task to the next (the next one woken, then waiting its turn to be polled on a
//! busy runtime): under the checkout load about 30 % of the writer's time passed in hand-offs.

use std::{
    ops::Deref,
    path::PathBuf,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use keel_kernel::StoreError;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

use crate::{Synchronous, db, error::map_err};

/// A group's outcome as its members hear it (a driver error cannot be shared).
type Outcome = Result<(), String>;

/// How the writer connection is opened (again, if it was lost).
#[derive(Debug, Clone)]
pub(crate) struct WriterOptions {
    pub(crate) path: PathBuf,
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    pub(crate) group_commit: bool,
    pub(crate) acquire_timeout: Duration,
}

fn connect(o: &WriterOptions) -> Result<Connection, StoreError> {
    let conn = db::open(&o.path, OpenFlags::SQLITE_OPEN_CREATE, o.busy_timeout)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::other(format!(
            "the database refused WAL mode ({mode})"
        )));
    }
    let synchronous = match o.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
        Synchronous::Extra => "EXTRA",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(map_err)?;
    // Each member is a savepoint, and the first change to a page inside one copies the page
    // to the savepoint's sub-journal (so the member alone can roll back). In memory, that is
    // a copy; in the default temporary file it was a write system call per page (6 % of the
    // server's CPU under the checkout load).
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(map_err)?;
    Ok(conn)
}

/// The connection and the open group.
#[derive(Default)]
struct Slot {
    /// The writer connection; `None` only after it was lost (a blocking task that held it
    /// was abandoned), and then opened again by the next writer.
    conn: Option<Connection>,
    /// An outer transaction is open on the connection.
    open: bool,
    /// A member was dropped without finishing: its savepoint must be rolled back first.
    dirty: bool,
    /// Members whose work is in the open transaction, waiting for its commit.
    group: Vec<Answer>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("conn", &self.conn)
            .field("open", &self.open)
            .field("dirty", &self.dirty)
            .field("group", &self.group.len())
            .finish()
    }
}

/// How a member whose work is in the open transaction hears the commit's outcome.
type Answer = Box<dyn FnOnce(Outcome) + Send>;

/// When the caller of a job hears its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Once the commit that carries the work is on disk.
    AfterCommit,
    /// As soon as the work stands in the open transaction, without waiting for its commit
    /// (ADR 0022). Only for work that nobody is told about by itself: a claim that the same
    /// caller's next write depends on. That next write runs on this connection after it, so
    /// it sees the work at once, and its commit (which its caller does wait for) is this
    /// one's or a later one: once it is on disk, so is this work. If this work's group fails
    /// instead, the work is gone, and the next write must find it missing and fail rather
    /// than assume it (the callers check what they depend on).
    Ahead,
}

/// Work handed to the writer: it runs on the writer connection, in a savepoint of its own
/// inside the group's transaction.
trait Job: Send {
    /// Claims the job for running; false if its caller gave up waiting (or went away)
    /// before it started: then it never runs.
    fn start(&self) -> bool;
    /// Runs the work (inside `SAVEPOINT member`).
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    /// Answers the caller that the work could not run.
    fn refuse(self: Box<Self>, e: StoreError);
}

/// What a job's work did.
enum Ran {
    /// It failed: its savepoint is rolled back, then its caller hears the error.
    Failed(Box<dyn FnOnce() + Send>),
    /// It stands: its savepoint is released, and its caller hears the outcome.
    Kept { answer: Answer, heard: Heard },
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// A job as the caller of [`Writer::run`] hands it over.
struct Work<R, F> {
    run: F,
    state: Arc<std::sync::atomic::AtomicU8>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for Work<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<(R, Heard), StoreError> + Send + 'static,
{
    fn start(&self) -> bool {
        !self.reply.is_closed()
            && self
                .state
                .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Work { run, reply, .. } = *self;
        match run(conn) {
            Ok((value, heard)) => Ran::Kept {
                answer: Box::new(move |outcome: Outcome| {
                    let _ = reply.send(
                        outcome
                            .map(|()| value)
                            .map_err(|e| StoreError::unavailable(std::io::Error::other(e))),
                    );
                }),
                heard,
            },
            Err(e) => Ran::Failed(Box::new(move || {
                let _ = reply.send(Err(e));
            })),
        }
    }

    fn refuse(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

/// Jobs waiting for the flusher.
type Jobs = std::sync::Mutex<Vec<Box<dyn Job>>>;

fn take_jobs(jobs: &Jobs) -> Vec<Box<dyn Job>> {
    // A panic while the queue was held cannot leave it half-changed (push and take only).
    std::mem::take(
        &mut *jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// How many write transactions finished and how many commits carried them.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub transactions: AtomicU64,
    pub commits: AtomicU64,
    /// Writers waiting for the connection right now.
    pub waiting: AtomicU64,
    /// Times a group's `BEGIN IMMEDIATE` found another process holding the write lock and
    /// had to wait for it.
    pub lock_waits: AtomicU64,
}

/// The single writer.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    options: Arc<WriterOptions>,
    slot: Arc<Mutex<Slot>>,
    jobs: Arc<Jobs>,
    flush: mpsc::UnboundedSender<()>,
    pub(crate) stats: Arc<WriteStats>,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Opens the writer connection (creating the file) and starts the flusher.
    pub(crate) fn open(options: WriterOptions) -> Result<Self, StoreError> {
        let conn = connect(&options)?;
        let slot = Arc::new(Mutex::new(Slot {
            conn: Some(conn),
            ..Slot::default()
        }));
        let stats = Arc::new(WriteStats::default());
        let options = Arc::new(options);
        let jobs = Arc::new(Jobs::default());
        let (flush, pokes) = mpsc::unbounded_channel();
        tokio::spawn(flusher(
            Arc::downgrade(&slot),
            jobs.clone(),
            options.clone(),
            pokes,
            stats.clone(),
        ));
        Ok(Self {
            options,
            slot,
            jobs,
            flush,
            stats,
        })
    }

    /// Hands `work` to the writer: it runs in a savepoint of its own in the group's
    /// transaction, and the caller hears its result after the commit that carries it (or, for
    /// [`Heard::Ahead`], as soon as it stands). A job that has not started within the acquire
    /// timeout never runs, and its caller hears `Unavailable`; nor does one whose caller went
    /// away before it started.
    pub(crate) async fn run<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<(R, Heard), StoreError> + Send + 'static,
    {
        if !self.options.group_commit {
            let tx = self.begin().await?;
            return match work(&tx) {
                Ok((value, _)) => tx.commit().await.map(|()| value),
                Err(e) => {
                    tx.rollback()?;
                    Err(e)
                }
            };
        }
        let state = Arc::new(std::sync::atomic::AtomicU8::new(QUEUED));
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut jobs = self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.push(Box::new(Work {
                run: work,
                state: state.clone(),
                reply,
            }));
            jobs.len() == 1
        };
        if first {
            self.poke();
        }
        let mut answer = answer;
        let heard = if let Ok(heard) =
            tokio::time::timeout(self.options.acquire_timeout, &mut answer).await
        {
            heard
        } else {
            if state
                .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Err(StoreError::unavailable(std::io::Error::other(
                    "the writer is busy",
                )));
            }
            // It has started: its outcome follows its commit, as any member's.
            answer.await
        };
        heard.unwrap_or_else(|_| {
            Err(StoreError::unavailable(std::io::Error::other(
                "the writer abandoned the work",
            )))
        })
    }

    /// Starts a write transaction: a savepoint in the open outer transaction.
    pub(crate) async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let slot =
            tokio::time::timeout(self.options.acquire_timeout, self.slot.clone().lock_owned())
                .await;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut slot =
            slot.map_err(|_| StoreError::unavailable(std::io::Error::other("the writer is busy")))?;
        ready(&mut slot, &self.options, &self.stats).await?;
        db::batch(connection(&mut slot), "SAVEPOINT member")?;
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

/// Makes the slot ready for a member: a dropped member's savepoint rolled back, the
/// connection open (again, if it was lost) and the group's transaction begun.
async fn ready(
    slot: &mut Slot,
    options: &WriterOptions,
    stats: &WriteStats,
) -> Result<(), StoreError> {
    clean(slot)?;
    if slot.conn.is_none() {
        slot.conn = Some(connect(options)?);
        slot.open = false;
    }
    if !slot.open {
        begin_immediate(slot, options.busy_timeout, stats).await?;
        slot.open = true;
    }
    Ok(())
}

fn connection(slot: &mut Slot) -> &Connection {
    slot.conn
        .as_ref()
        .expect("a member runs only while the connection is in the slot")
}

/// Runs `sql` (a transaction boundary, which may fsync or wait on another process's lock)
/// on a blocking thread. If that thread is abandoned the connection is lost with it, and
/// with it its open transaction; the next writer opens a new one.
async fn blocking(slot: &mut Slot, sql: &'static str) -> Result<(), StoreError> {
    let conn = slot
        .conn
        .take()
        .ok_or_else(|| StoreError::unavailable(std::io::Error::other("no writer connection")))?;
    let (conn, result) = tokio::task::spawn_blocking(move || {
        let result = db::batch(&conn, sql);
        (conn, result)
    })
    .await
    .map_err(|e| {
        slot.open = false;
        StoreError::unavailable(std::io::Error::other(e.to_string()))
    })?;
    slot.conn = Some(conn);
    result
}

/// Opens the group's transaction, taking the database's write lock. With no other process
/// writing (the usual case) that is immediate, so it is tried inline without waiting: a hop
/// to a blocking thread and back cost each group about 0.3 ms of the writer's time under the
/// checkout load. Only if another process holds the lock does `BEGIN IMMEDIATE` wait for it,
/// up to the busy timeout, on a blocking thread rather than the runtime's.
async fn begin_immediate(
    slot: &mut Slot,
    busy_timeout: Duration,
    stats: &WriteStats,
) -> Result<(), StoreError> {
    let conn = connection(slot);
    conn.busy_timeout(Duration::ZERO).map_err(map_err)?;
    db::note("BEGIN IMMEDIATE");
    let first = conn.execute_batch("BEGIN IMMEDIATE");
    conn.busy_timeout(busy_timeout).map_err(map_err)?;
    match first {
        Ok(()) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            stats.lock_waits.fetch_add(1, Ordering::Relaxed);
            blocking(slot, "BEGIN IMMEDIATE").await
        }
        Err(e) => Err(map_err(e)),
    }
}

/// Rolls back the savepoint of a member that was dropped mid-way.
fn clean(slot: &mut Slot) -> Result<(), StoreError> {
    if slot.dirty {
        if slot.open
            && let Some(conn) = slot.conn.as_ref()
        {
            db::batch(conn, "ROLLBACK TO member; RELEASE member")?;
        }
        slot.dirty = false;
    }
    Ok(())
}

/// Ends the open transaction: `COMMIT`, and every member hears the outcome.
async fn end(slot: &mut Slot) -> Result<(), StoreError> {
    clean(slot)?;
    if !slot.open {
        return Ok(());
    }
    let committed = blocking(slot, "COMMIT").await;
    if committed.is_err()
        && let Some(conn) = slot.conn.as_ref()
    {
        // A failed COMMIT can leave the transaction open; nothing of it may survive.
        let _ = db::batch(conn, "ROLLBACK");
    }
    slot.open = false;
    committed
}

/// Ends the open transaction and answers its members.
async fn flush(slot: &mut Slot, stats: &WriteStats) {
    if !slot.open && slot.group.is_empty() {
        slot.dirty = false;
        return;
    }
    let outcome = end(slot).await.map_err(|e| e.to_string());
    if outcome.is_err() {
        tracing::error!("group commit failed; its members are answered with the error");
    }
    stats.commits.fetch_add(1, Ordering::Relaxed);
    for member in slot.group.drain(..) {
        member(outcome.clone());
    }
}

/// Runs the queued jobs, each in its savepoint, in the group's transaction.
async fn run_jobs(
    slot: &mut Slot,
    jobs: Vec<Box<dyn Job>>,
    options: &WriterOptions,
    stats: &WriteStats,
) {
    let jobs: Vec<_> = jobs.into_iter().filter(|j| j.start()).collect();
    if jobs.is_empty() {
        return;
    }
    if let Err(e) = ready(slot, options, stats).await {
        let e = e.to_string();
        for job in jobs {
            job.refuse(StoreError::unavailable(std::io::Error::other(e.clone())));
        }
        return;
    }
    for job in jobs {
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = db::batch(connection(slot), "SAVEPOINT member") {
            job.refuse(e);
            continue;
        }
        match job.run(connection(slot)) {
            Ran::Failed(answer) => {
                undo(slot);
                answer();
            }
            Ran::Kept { answer, heard } => match db::batch(connection(slot), "RELEASE member") {
                Ok(()) if heard == Heard::Ahead => answer(Ok(())),
                Ok(()) => slot.group.push(answer),
                Err(e) => {
                    undo(slot);
                    answer(Err(e.to_string()));
                }
            },
        }
    }
}

/// Rolls back the savepoint of a job that failed. If even that fails, nothing of the open
/// transaction can be trusted: it is rolled back whole and its members hear so.
fn undo(slot: &mut Slot) {
    if db::batch(connection(slot), "ROLLBACK TO member; RELEASE member").is_ok() {
        return;
    }
    tracing::error!("a failed job's savepoint could not be rolled back; the group is rolled back");
    let _ = db::batch(connection(slot), "ROLLBACK");
    slot.open = false;
    for member in slot.group.drain(..) {
        member(Err("the group's transaction was rolled back".to_owned()));
    }
}

/// Commits a group each time it is poked, after the writers already queued for the lock;
/// before each commit it runs the jobs queued so far, and it goes on while jobs queue
/// (letting members that take the connection themselves in between rounds).
async fn flusher(
    slot: Weak<Mutex<Slot>>,
    jobs: Arc<Jobs>,
    options: Arc<WriterOptions>,
    mut pokes: mpsc::UnboundedReceiver<()>,
    stats: Arc<WriteStats>,
) {
    while pokes.recv().await.is_some() {
        let Some(slot) = slot.upgrade() else {
            return;
        };
        let mut guard = slot.clone().lock_owned().await;
        loop {
            run_jobs(&mut guard, take_jobs(&jobs), &options, &stats).await;
            flush(&mut guard, &stats).await;
            let more = !jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty();
            if !more {
                break;
            }
            if stats.waiting.load(Ordering::Relaxed) > 0 {
                drop(guard);
                guard = slot.clone().lock_owned().await;
            }
        }
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
    /// Makes the work durable: answers once the commit that carries it is on disk.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let writer = self.writer.clone();
        let mut slot = self
            .slot
            .take()
            .expect("the slot is held until commit, rollback or drop");
        writer.stats.transactions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = db::batch(connection(&mut slot), "RELEASE member") {
            slot.dirty = true;
            writer.poke();
            return Err(e);
        }
        if !writer.options.group_commit {
            let result = end(&mut slot).await;
            writer.stats.commits.fetch_add(1, Ordering::Relaxed);
            return result;
        }
        let (done, outcome) = oneshot::channel();
        slot.group.push(Box::new(move |o: Outcome| {
            let _ = done.send(o);
        }));
        if slot.group.len() == 1 {
            writer.poke();
        }
        drop(slot);
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::unavailable(std::io::Error::other(e))),
            Err(_) => Err(StoreError::unavailable(std::io::Error::other(
                "the group commit was abandoned",
            ))),
        }
    }

    /// Discards this transaction's work and only it.
    pub(crate) fn rollback(mut self) -> Result<(), StoreError> {
        let writer = self.writer.clone();
        let mut slot = self
            .slot
            .take()
            .expect("the slot is held until commit, rollback or drop");
        writer.stats.transactions.fetch_add(1, Ordering::Relaxed);
        let undone = db::batch(connection(&mut slot), "ROLLBACK TO member; RELEASE member");
        if undone.is_err() {
            slot.dirty = true;
        }
        if slot.group.is_empty() {
            // Nobody else will end the (now empty) outer transaction and free the write lock.
            writer.poke();
        }
        undone
    }
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
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.slot
            .as_deref()
            .and_then(|s| s.conn.as_ref())
            .expect("a member runs only while the connection is in the slot")
    }
}

#[cfg(test)]
mod tests {
    use keel_store_common::{args, exec::Exec as _, rows::ReadRow as _};

    use super::*;
    use crate::db::{Lite, now};

    async fn open(group_commit: bool) -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        open_with(group_commit, Duration::from_secs(5)).await
    }

    async fn open_with(
        group_commit: bool,
        acquire_timeout: Duration,
    ) -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("writer.db");
        let w = Writer::open(WriterOptions {
            path: path.clone(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            group_commit,
            acquire_timeout,
        })
        .expect("writer");
        let tx = w.begin().await.expect("begin");
        tx.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .expect("table");
        tx.commit().await.expect("commit");
        (dir, w, path)
    }

    fn insert(tx: &Connection, k: &str) -> Result<(), StoreError> {
        now(Lite(tx).run("INSERT INTO t (k) VALUES ($1)", args![k])).map(|_| ())
    }

    fn select_keys(c: &Connection) -> Result<Vec<String>, StoreError> {
        let rows = now(Lite(c).all("SELECT k FROM t ORDER BY k", &[]))?;
        rows.iter().map(|r| r.text("k")).collect()
    }

    /// What is on disk, read by another connection.
    fn keys(path: &std::path::Path) -> Vec<String> {
        let conn = Connection::open(path).expect("reader");
        select_keys(&conn).expect("read")
    }

    /// Until `n` writers wait for the connection (state, not time).
    async fn queued(w: &Writer, n: u64) {
        while w.stats.waiting.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
    }

    /// A first writer holds the connection while `n` more queue behind it; then all commit,
    /// each answered with success.
    async fn commit_behind_a_first_writer(w: &Writer, n: u64) {
        let first = w.begin().await.expect("begin");
        insert(&first, "first").expect("insert");
        let mut tasks = Vec::new();
        for i in 0..n {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let tx = w.begin().await.expect("begin");
                insert(&tx, &format!("k{i:03}")).expect("insert");
                tx.commit().await
            }));
        }
        queued(w, n).await;
        first.commit().await.expect("commit");
        for t in tasks {
            t.await
                .expect("task")
                .expect("each answered after its commit");
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
        let (_dir, w, path) = open(true).await;
        let first = w.begin().await.expect("begin");
        insert(&first, "a").expect("a");
        // Three writers queue behind it and so join its group: one succeeds, one breaks a
        // constraint (the key `a` of its neighbour) and rolls back, one is dropped mid-way.
        let ok = tokio::spawn({
            let w = w.clone();
            async move {
                let tx = w.begin().await.expect("begin");
                insert(&tx, "b").expect("b");
                tx.commit().await
            }
        });
        let failing = tokio::spawn({
            let w = w.clone();
            async move {
                let tx = w.begin().await.expect("begin");
                insert(&tx, "c").expect("c");
                assert!(insert(&tx, "a").is_err(), "a duplicate key");
                tx.rollback()
            }
        });
        let dropped = tokio::spawn({
            let w = w.clone();
            async move {
                let tx = w.begin().await.expect("begin");
                insert(&tx, "d").expect("d");
                drop(tx);
            }
        });
        queued(&w, 3).await;
        assert!(
            keys(&path).is_empty(),
            "nothing is visible before the commit"
        );
        first.commit().await.expect("the group commits");
        ok.await.expect("task").expect("b commits with the group");
        failing.await.expect("task").expect("rollback");
        dropped.await.expect("task");
        assert_eq!(
            keys(&path),
            ["a", "b"],
            "the failed and the dropped work is gone, alone"
        );
        assert_eq!(
            counts(&w),
            (4, 2),
            "after the table's own: three finished transactions, one commit"
        );
        // The writer goes on: a later transaction commits on its own.
        let later = w.begin().await.expect("begin");
        insert(&later, "e").expect("e");
        later.commit().await.expect("commit");
        assert_eq!(keys(&path), ["a", "b", "e"]);
    }

    /// A job that inserts `k`, answered as `heard` says.
    fn put(
        k: &'static str,
        heard: Heard,
    ) -> impl FnOnce(&Connection) -> Result<((), Heard), StoreError> + Send + 'static {
        move |c| {
            insert(c, k)?;
            Ok(((), heard))
        }
    }

    /// Hands `work` to the writer from a task of its own, as a request would.
    fn spawn_job<R: Send + 'static>(
        w: &Writer,
        work: impl FnOnce(&Connection) -> Result<(R, Heard), StoreError> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<R, StoreError>> {
        let w = w.clone();
        tokio::spawn(async move { w.run(work).await })
    }

    /// Until `n` jobs wait for the flusher (state, not time).
    async fn jobs_queued(w: &Writer, n: usize) {
        while w.jobs.lock().expect("queue").len() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn jobs_queued_behind_a_held_connection_share_its_commit_and_fail_alone() {
        let (_dir, w, path) = open(true).await;
        let first = w.begin().await.expect("begin");
        insert(&first, "a").expect("a");
        let b = spawn_job(&w, put("b", Heard::AfterCommit));
        let failing = spawn_job(&w, |c| {
            put("c", Heard::AfterCommit)(c)?;
            // The key `a` of a neighbour: this job fails, and only its work goes.
            put("a", Heard::AfterCommit)(c)
        });
        let d = spawn_job(&w, put("d", Heard::AfterCommit));
        jobs_queued(&w, 3).await;
        assert!(
            keys(&path).is_empty(),
            "nothing runs while the connection is held"
        );
        first.commit().await.expect("the group commits");
        b.await.expect("task").expect("b stands");
        failing
            .await
            .expect("task")
            .expect_err("a duplicate key fails its job");
        d.await.expect("task").expect("d stands");
        assert_eq!(
            keys(&path),
            ["a", "b", "d"],
            "the failed job's work is gone, alone"
        );
        assert_eq!(
            counts(&w),
            (5, 2),
            "after the table's own: four finished transactions, one commit"
        );
    }

    #[tokio::test]
    async fn a_job_heard_ahead_is_seen_by_the_next_write_and_lands_with_its_commit() {
        let (_dir, w, path) = open(true).await;
        w.run(put("claim", Heard::Ahead)).await.expect("claimed");
        let seen = w
            .run(|c| {
                let seen = select_keys(c)?;
                put("order", Heard::AfterCommit)(c)?;
                Ok((seen, Heard::AfterCommit))
            })
            .await
            .expect("order");
        assert_eq!(seen, ["claim"], "the next write sees it");
        assert_eq!(
            keys(&path),
            ["claim", "order"],
            "when the next write is answered, both are on disk"
        );
    }

    #[tokio::test]
    async fn a_job_heard_ahead_is_answered_before_its_commit_and_goes_if_the_commit_fails() {
        let (_dir, w, path) = open(true).await;
        let schema = w.begin().await.expect("begin");
        // A deferred foreign key is checked at COMMIT: a way to make a group's commit fail.
        schema
            .execute_batch(
                "CREATE TABLE parent (k TEXT PRIMARY KEY); \
                 CREATE TABLE child (k TEXT REFERENCES parent (k) DEFERRABLE INITIALLY DEFERRED)",
            )
            .expect("tables");
        schema.commit().await.expect("commit");
        let first = w.begin().await.expect("begin");
        let claim = spawn_job(&w, put("claim", Heard::Ahead));
        let breaking = spawn_job(&w, |c| {
            c.execute_batch("INSERT INTO child (k) VALUES ('orphan')")
                .map_err(crate::error::map_err)?;
            Ok(((), Heard::AfterCommit))
        });
        jobs_queued(&w, 2).await;
        first.rollback().expect("release the connection");
        claim
            .await
            .expect("task")
            .expect("answered as soon as it stood, before the commit");
        breaking
            .await
            .expect("task")
            .expect_err("the group's commit fails on the deferred key");
        assert!(keys(&path).is_empty(), "the claim went with its group");
        let seen = w
            .run(|c| Ok((select_keys(c)?, Heard::AfterCommit)))
            .await
            .expect("the writer goes on");
        assert!(seen.is_empty(), "the next write finds it missing");
    }

    #[tokio::test]
    async fn a_job_not_started_within_the_acquire_timeout_or_left_by_its_caller_never_runs() {
        let (_dir, w, path) = open_with(true, Duration::from_millis(50)).await;
        let first = w.begin().await.expect("begin");
        insert(&first, "first").expect("first");
        // The connection stays held until the end, so the job cannot start in time.
        let err = w
            .run(put("late", Heard::AfterCommit))
            .await
            .expect_err("not started within the acquire timeout");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let left = spawn_job(&w, put("left", Heard::AfterCommit));
        jobs_queued(&w, 2).await;
        left.abort();
        assert!(left.await.expect_err("aborted").is_cancelled());
        first.commit().await.expect("commit");
        assert_eq!(keys(&path), ["first"], "neither job ran");
        assert_eq!(
            counts(&w),
            (2, 2),
            "the table's and the first's, nothing more"
        );
    }

    #[tokio::test]
    async fn writers_queued_behind_a_commit_share_the_next_one() {
        let (_dir, w, path) = open(true).await;
        commit_behind_a_first_writer(&w, 200).await;
        assert_eq!(keys(&path).len(), 201);
        assert_eq!(
            counts(&w),
            (202, 2),
            "201 transactions, one fsync (and the table's own)"
        );
    }

    #[tokio::test]
    async fn a_writer_waits_for_another_process_holding_the_write_lock() {
        let (_dir, w, path) = open(true).await;
        // Another connection (as another process would) takes the write lock first.
        let other = Connection::open(&path).expect("other connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        other
            .execute_batch("INSERT INTO t (k) VALUES ('other')")
            .expect("insert");
        let writer = w.clone();
        let (started, waiting) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = started.send(());
            let tx = writer.begin().await?;
            insert(&tx, "ours")?;
            tx.commit().await
        });
        waiting.await.expect("task started");
        // The writer's inline attempt finds the lock taken and waits on a blocking thread.
        tokio::time::timeout(Duration::from_secs(10), async {
            while w.stats.lock_waits.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer met the other connection's lock");
        assert_eq!(keys(&path), Vec::<String>::new(), "nothing written yet");
        other.execute_batch("COMMIT").expect("release");
        task.await
            .expect("task")
            .expect("the writer waited for the lock instead of failing");
        assert_eq!(keys(&path), vec!["other".to_owned(), "ours".to_owned()]);
    }

    #[tokio::test]
    async fn without_group_commit_each_transaction_commits_alone() {
        let (_dir, w, path) = open(false).await;
        commit_behind_a_first_writer(&w, 20).await;
        assert_eq!(keys(&path).len(), 21);
        assert_eq!(counts(&w), (22, 22));
    }
}
