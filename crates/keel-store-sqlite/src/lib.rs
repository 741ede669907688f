//! SQLite adapter: Keel's embedded, zero-configuration store.
//!
//! Shape (see docs/adr/0004-sqlite-durability.md, 0013 and 0015):
//! - **One writer connection.** Every write transaction goes through exactly one connection
//!   (a savepoint in a shared `BEGIN IMMEDIATE` transaction, group commit), so writes queue
//!   in-process (bounded by the acquire timeout) instead of colliding inside SQLite: load never
//!   produces `SQLITE_BUSY`. The busy timeout only covers other processes (e.g. `keel tenant
//!   create` beside `serve`).
//! - **Readers** (exact number from config) with `query_only`, reading the WAL snapshot
//!   concurrently with the writer.
//! - Statements run with rusqlite on the calling thread (`db`); migrations with sqlx's migrator.
//! - WAL, `foreign_keys = ON`, `synchronous = FULL` by default: an acknowledged commit survives
//!   power loss.
//! - Migrations are embedded (`migrations/`, same names as the PostgreSQL adapter's) and run on
//!   start.
#![forbid(unsafe_code)]

mod apikeys;
mod catalog;
mod consumers;
mod customers;
mod db;
mod error;
mod identity;
mod inventory;
mod leases;
mod mfa;
mod migrations;
mod orders;
mod payments;
mod tenants;
mod throttle;
mod webhooks;
mod writer;

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
pub use db::statements_run;
use keel_kernel::{
    StoreError,
    health::{SchemaStatus, StoreCounter, StoreHealth},
};
use keel_store_common::{
    APPLIED_MIGRATIONS_SQL,
    exec::{Exec as _, decode},
    rows::ReadRow as _,
};
pub use migrations::migration_names;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{db::now, error::map_err};

/// SQLite's `synchronous` setting. Only the levels that keep WAL commits durable or stronger
/// are offered by default; `Normal` exists for operators who accept losing the last commits
/// on power loss (never the database) and say so in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Normal,
    Full,
    Extra,
}

/// Everything the adapter needs, as exact values from the configuration.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The database file; created (with its parent directory) on first start.
    pub path: PathBuf,
    /// How long a connection waits on a lock held by *another process*.
    pub busy_timeout: Duration,
    /// How long a request waits for the writer or a reader connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Number of reader connections.
    pub readers: u32,
    pub synchronous: Synchronous,
    /// Group commit (ADR 0013): concurrent write transactions share one durable commit.
    /// Off, every transaction pays its own fsync.
    pub group_commit: bool,
}

/// Creates the database's directory (mode 0700, with any missing parents) and the database file
/// (mode 0600) before SQLite opens it, and narrows an existing file and its WAL and
/// shared-memory files to 0600. The files hold password hashes and personal data; SQLite
/// creates `-wal` and `-shm` with the database file's own permissions, so a 0600 database
/// keeps them private whatever the process umask is.
fn private_files(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        } else if std::fs::metadata(dir)?.permissions().mode() & 0o022 != 0 {
            // A directory Keel did not create is the operator's to narrow (it may hold other
            // things). The files in it are narrowed below either way, but in a directory
            // others may write to, they could be replaced.
            tracing::warn!(
                dir = %dir.display(),
                "other users may write to the database's directory; chmod 700 it"
            );
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(PathBuf::from(name));
    }
    for name in names {
        match std::fs::metadata(&name) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The SQLite store: one writer, a pool of readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: writer::Writer,
    readers: Arc<db::Readers>,
    /// sqlx's migrator runs on its own connection (ADR 0015); nothing else uses it.
    migrations: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file. Does not migrate: call [`Self::migrate`].
    pub async fn open(settings: &SqliteSettings) -> Result<Self, StoreError> {
        private_files(&settings.path).map_err(StoreError::unavailable)?;
        let synchronous = match settings.synchronous {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Extra => SqliteSynchronous::Extra,
        };
        let base = SqliteConnectOptions::new()
            .filename(&settings.path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(settings.busy_timeout);
        // The migrations' connection is opened first: it creates the file and switches it to
        // WAL before any other connection opens it.
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(base.create_if_missing(true))
            .await
            .map_err(map_err)?;
        let writer = writer::Writer::open(writer::WriterOptions {
            path: settings.path.clone(),
            synchronous: settings.synchronous,
            busy_timeout: settings.busy_timeout,
            group_commit: settings.group_commit,
            acquire_timeout: settings.acquire_timeout,
        })?;
        let readers = db::Readers::open(&settings.path, settings.busy_timeout, settings.readers)?;
        Ok(Self {
            writer,
            readers: Arc::new(readers),
            migrations,
        })
    }

    /// Applies pending embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::MIGRATIONS
            .migrator()
            .run(&self.migrations)
            .await
            .map_err(StoreError::other)
    }

    /// Closes the migrations' pool. The writer and reader connections close when the last
    /// clone of the store is dropped.
    pub async fn close(&self) {
        self.migrations.close().await;
    }

    /// Runs shared statements (ADR 0032) on a reader connection, on this thread (ADR 0015).
    fn read<R>(
        &self,
        f: impl FnOnce(&mut db::Lite<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.readers.with(|c| f(&mut db::Lite(c)))
    }

    /// Runs shared statements in a write transaction on the single writer connection (see
    /// [`Self::write`]), committed if `f` succeeds and rolled back otherwise.
    async fn tx<R>(
        &self,
        f: impl FnOnce(&mut db::Lite<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.write().await?;
        let out = f(&mut db::Lite(&tx));
        match out {
            Ok(r) => tx.commit().await.map(|()| r),
            // The work's error is the answer; a rollback that fails marks the writer to roll
            // back before its next use.
            Err(e) => {
                let _ = tx.rollback();
                Err(e)
            }
        }
    }

    /// Starts a write transaction on the single writer (a savepoint in the group's `BEGIN
    /// IMMEDIATE` transaction, which takes the write lock up front, so a transaction never
    /// fails half-way on a lock upgrade).
    async fn write(&self) -> Result<writer::WriteTx, StoreError> {
        self.writer.begin().await
    }

    /// Hands a write transaction to the single writer as a job (ADR 0023): `work` runs in a
    /// savepoint of its own in the group's transaction (an error rolls back its work alone)
    /// and is answered once the commit that carries it is on disk. The writes on the
    /// storefront's checkout path take this way; the others take the connection ([`Self::write`]).
    async fn job<R: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.writer
            .run(move |tx| work(tx).map(|r| (r, writer::Heard::AfterCommit)))
            .await
    }

    /// Write transactions finished so far, and the commits (fsyncs) that carried them.
    pub fn write_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.writer.stats.transactions.load(Relaxed),
            self.writer.stats.commits.load(Relaxed),
        )
    }
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let applied = self.read(|e| {
            now(async {
                let tables = e
                    .one(
                        "SELECT count(*) AS n FROM sqlite_master \
                         WHERE type = 'table' AND name = '_sqlx_migrations'",
                        &[],
                    )
                    .await?
                    .int("n")?;
                if tables == 0 {
                    return Ok(Vec::new());
                }
                let rows = e.all(APPLIED_MIGRATIONS_SQL, &[]).await?;
                decode(&rows, |r| {
                    Ok((r.int("version")?, r.bytes("checksum")?, r.flag("success")?))
                })
            })
        })?;
        Ok(migrations::MIGRATIONS.status(applied))
    }

    fn counters(&self) -> Vec<StoreCounter> {
        let (transactions, commits) = self.write_stats();
        vec![
            StoreCounter {
                name: "keel_sqlite_statements_total",
                help: "SQL statements run on the SQLite database by this process, transaction control included.",
                value: db::statements_run(),
            },
            StoreCounter {
                name: "keel_sqlite_write_transactions_total",
                help: "Write transactions finished on the single writer (committed or rolled back).",
                value: transactions,
            },
            StoreCounter {
                name: "keel_sqlite_lock_waits_total",
                help: "Times the writer found another process holding the database's write lock and waited for it.",
                value: self
                    .writer
                    .stats
                    .lock_waits
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
            StoreCounter {
                name: "keel_sqlite_commits_total",
                help: "Commits (one fsync each) that carried those transactions to disk (group commit).",
                value: commits,
            },
        ]
    }
}

/// Microseconds since the Unix epoch, the column form of every timestamp.
fn to_micros(t: time::OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).map_err(StoreError::other)
}

fn from_micros(us: i64) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(StoreError::other)
}
