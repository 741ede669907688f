//! The one backend picked at startup, behind the ports the rest of the program uses.

use std::sync::Arc;

use keel_catalog::ports::{CatalogStore, InventoryStore};
use keel_identity::{
    TenantStore,
    ports::{
        ApiKeyStore, CustomerStore, LoginThrottle, MfaStore, SessionStore, SigningKeyStore,
        StaffStore,
    },
};
use keel_kernel::{
    StoreError, bus::ConsumerStore, event::EventLog, health::StoreHealth,
    idempotency::IdempotencyStore,
};
use keel_orders::ports::{CartStore, OrderStore, SetupStore};
use keel_store_postgres::PgStore;
use keel_store_sqlite::SqliteStore;
use keel_webhooks::ports::WebhookStore;

use crate::config::DatabaseSettings;

pub use keel_store_common::Backend;

/// The configured backend.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens the backend. SQLite is created if missing; PostgreSQL connects lazily.
    pub async fn open(db: &DatabaseSettings) -> Result<Self, StoreError> {
        Ok(match db {
            DatabaseSettings::Sqlite(s) => Self::Sqlite(SqliteStore::open(s).await?),
            DatabaseSettings::Postgres { settings, .. } => {
                Self::Postgres(PgStore::connect_lazy(settings))
            }
        })
    }

    /// SQL statements this process has sent to the database so far (transaction control
    /// included): read before and after a request to count its statements.
    pub fn statements_run(&self) -> u64 {
        match self {
            Self::Sqlite(_) => keel_store_sqlite::statements_run(),
            Self::Postgres(_) => keel_store_postgres::statements_run(),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }

    /// The adapter as the set of all ports.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    pub fn tenants(&self) -> Arc<dyn TenantStore> {
        self.backend()
    }

    pub fn events(&self) -> Arc<dyn EventLog> {
        self.backend()
    }

    pub fn health(&self) -> Arc<dyn StoreHealth> {
        self.backend()
    }

    pub fn staff(&self) -> Arc<dyn StaffStore> {
        self.backend()
    }

    pub fn sessions(&self) -> Arc<dyn SessionStore> {
        self.backend()
    }

    pub fn signing_keys(&self) -> Arc<dyn SigningKeyStore> {
        self.backend()
    }

    pub fn leases(&self) -> Arc<dyn keel_kernel::lease::LeaseStore> {
        self.backend()
    }

    pub fn throttle(&self) -> Arc<dyn LoginThrottle> {
        self.backend()
    }

    pub fn mfa(&self) -> Arc<dyn MfaStore> {
        self.backend()
    }

    pub fn api_keys(&self) -> Arc<dyn ApiKeyStore> {
        self.backend()
    }

    pub fn customers(&self) -> Arc<dyn CustomerStore> {
        self.backend()
    }

    /// Fails unless every embedded migration is applied (for commands that write).
    pub async fn ensure_migrated(&self) -> anyhow::Result<()> {
        let status = self.health().schema_status().await?;
        if status.is_current() {
            Ok(())
        } else {
            anyhow::bail!(
                "the database is not migrated ({} of {} migrations applied{}); run `keel migrate`",
                status.applied,
                status.expected,
                if status.mismatched.is_empty() {
                    ""
                } else {
                    ", and it holds migrations this binary does not know"
                }
            )
        }
    }

    /// Closes connections.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }

    pub fn catalog(&self) -> Arc<dyn CatalogStore> {
        self.backend()
    }

    pub fn inventory(&self) -> Arc<dyn InventoryStore> {
        self.backend()
    }

    pub fn setup(&self) -> Arc<dyn SetupStore> {
        self.backend()
    }

    pub fn carts(&self) -> Arc<dyn CartStore> {
        self.backend()
    }

    pub fn orders(&self) -> Arc<dyn OrderStore> {
        self.backend()
    }

    pub fn payments(&self) -> Arc<dyn keel_payments::ports::PaymentStore> {
        self.backend()
    }

    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        self.backend()
    }

    pub fn webhooks(&self) -> Arc<dyn WebhookStore> {
        self.backend()
    }

    pub fn consumers(&self) -> Arc<dyn ConsumerStore> {
        self.backend()
    }

    pub fn quotas(&self) -> Arc<dyn keel_kernel::quota::QuotaStore> {
        self.backend()
    }

    pub fn tenant_limits(&self) -> Arc<dyn keel_kernel::ratelimit::TenantLimitStore> {
        self.backend()
    }
}
