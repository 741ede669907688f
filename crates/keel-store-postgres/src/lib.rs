//! PostgreSQL adapter: the store for cluster mode (N stateless Keel nodes on one database).
//!
//! A connection pool of an exact size; embedded migrations (same names as the SQLite
//! adapter's) applied explicitly by `keel migrate` or `keel serve --migrate`, never silently,
//! because in a cluster a release migrates once, not every node at start. Until migrated,
//! `/readyz` answers 503.
#![forbid(unsafe_code)]

/// Runs shared statements (`$work`, an expression over the transaction `$tx`) in a
/// transaction: committed if the work succeeds, rolled back at once otherwise (a dropped
/// transaction would be rolled back only off the request's path, holding its row locks until
/// then). A macro rather than a function taking a closure, because the work borrows the
/// transaction across awaits.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $work:expr) => {{
        let mut $tx = $store.begin().await?;
        match $work.await {
            Ok(out) => {
                $tx.commit().await.map_err(crate::error::map_err)?;
                Ok(out)
            }
            // The work's error is the answer; a rollback that fails leaves the connection
            // to the pool's check, which ends the transaction before reuse.
            Err(e) => {
                let _ = $tx.rollback().await;
                Err(e)
            }
        }
    }};
}

mod apikeys;
mod catalog;
mod consumers;
mod customers;
mod error;
mod exec;
mod identity;
mod inventory;
mod leases;
mod mfa;
mod migrations;
mod orders;
mod payments;
mod pool;
mod tenants;
mod throttle;
mod webhooks;

use std::time::Duration;

use async_trait::async_trait;
pub use exec::statements_run;
use keel_kernel::{
    StoreError,
    health::{SchemaStatus, StoreHealth},
};
use keel_store_common::APPLIED_MIGRATIONS_SQL;
pub use migrations::migration_names;
use sqlx::postgres::PgConnectOptions;

use crate::{error::map_err, pool::Pool};

/// Everything the adapter needs, as exact values from the configuration.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Parsed from the `postgres://` URL (credentials stay inside; never logged).
    pub connect: PgConnectOptions,
    /// Maximum connections this node holds.
    pub pool_size: u32,
    /// How long a request waits for a connection before `Unavailable`.
    pub acquire_timeout: Duration,
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Creates the pool without connecting: the first query connects, so a node can start
    /// (and report not-ready) while the database is still coming up.
    pub fn connect_lazy(settings: &PgSettings) -> Self {
        Self {
            pool: Pool::new(
                settings.connect.clone(),
                settings.pool_size,
                settings.acquire_timeout,
            ),
        }
    }

    /// Applies pending embedded migrations (sqlx takes an advisory lock, so concurrent
    /// nodes running `--migrate` do not race).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        migrations::MIGRATIONS
            .migrator()
            .run(&mut *conn)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(inner) => map_err(inner),
                other => StoreError::other(other),
            })?;
        conn.release();
        Ok(())
    }

    /// Statements outside a transaction, on one connection taken at the first.
    fn pg(&self) -> exec::Pg<'_> {
        exec::Pg::new(&self.pool)
    }

    /// Starts a transaction on a pooled connection.
    async fn begin(&self) -> Result<pool::Tx, StoreError> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl StoreHealth for PgStore {
    async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        // to_regclass resolves through search_path, like the unqualified name sqlx uses.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let applied = if exists {
            sqlx::query_as::<_, (i64, Vec<u8>, bool)>(APPLIED_MIGRATIONS_SQL)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
        } else {
            Vec::new()
        };
        Ok(migrations::MIGRATIONS.status(applied))
    }

    fn counters(&self) -> Vec<keel_kernel::health::StoreCounter> {
        self.pool.counters()
    }
}
