//! Keel's storage, written once for both backends (ADR 0032).
//!
//! [`store`]: every port method's statements and logic, as `async fn`s over [`exec::Exec`],
//! which each adapter implements for its own connections.
//!
//! [`EmbeddedMigrations`]: an adapter's explicit migration list (no build-time macro), turned
//! into a sqlx [`Migrator`], compared with what a database recorded, and checked against the
//! adapter's `migrations/` folder by a test.
//!
//! [`rows`]: each row type decoded once, over [`rows::ReadRow`], which each adapter implements
//! for its own rows with its own column codecs (ADR 0032).
//!
//! [`Backend`]: the list of ports a storage backend provides, written once for the binary and
//! the conformance suite.
#![forbid(unsafe_code)]

pub mod exec;
pub mod rows;
pub mod store;

use keel_catalog::ports::{CatalogStore, InventoryStore};
use keel_identity::{
    TenantStore,
    ports::{
        ApiKeyStore, CustomerStore, LoginThrottle, MfaStore, SessionStore, SigningKeyStore,
        StaffStore,
    },
};
use keel_kernel::{
    bus::ConsumerStore, event::EventLog, health::StoreHealth, idempotency::IdempotencyStore,
};
use keel_orders::ports::{CartStore, OrderStore, SetupStore};
use keel_payments::ports::PaymentStore;
use keel_webhooks::ports::WebhookStore;

/// Every port one backend implements; `Arc<dyn Backend>` upcasts to each port. A new port is
/// one line here (and its implementations): the binary and the conformance suite both take
/// their list from this trait.
pub trait Backend:
    TenantStore
    + EventLog
    + StoreHealth
    + StaffStore
    + SessionStore
    + SigningKeyStore
    + LoginThrottle
    + MfaStore
    + ApiKeyStore
    + CustomerStore
    + CatalogStore
    + InventoryStore
    + SetupStore
    + CartStore
    + OrderStore
    + IdempotencyStore
    + WebhookStore
    + ConsumerStore
    + PaymentStore
    + keel_kernel::ratelimit::TenantLimitStore
    + keel_kernel::quota::QuotaStore
    + keel_kernel::lease::LeaseStore
{
}

impl<T> Backend for T where
    T: TenantStore
        + EventLog
        + StoreHealth
        + StaffStore
        + SessionStore
        + SigningKeyStore
        + LoginThrottle
        + MfaStore
        + ApiKeyStore
        + CustomerStore
        + CatalogStore
        + InventoryStore
        + SetupStore
        + CartStore
        + OrderStore
        + IdempotencyStore
        + WebhookStore
        + ConsumerStore
        + PaymentStore
        + keel_kernel::ratelimit::TenantLimitStore
        + keel_kernel::quota::QuotaStore
        + keel_kernel::lease::LeaseStore
{
}

use std::path::Path;

use keel_kernel::health::{AppliedMigration, SchemaStatus};
use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

/// The read-only query both adapters use for what was applied (never creating the table).
pub const APPLIED_MIGRATIONS_SQL: &str =
    "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";

/// `(version, description, sql)` in order, each file embedded with `include_str!`.
/// Never edit an applied migration: add a new one.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigrations(pub &'static [(i64, &'static str, &'static str)]);

impl EmbeddedMigrations {
    /// A sqlx migrator over the list.
    pub fn migrator(self) -> Migrator {
        Migrator::with_migrations(
            self.0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    /// The schema's state given the rows of [`APPLIED_MIGRATIONS_SQL`].
    pub fn status(self, applied: impl IntoIterator<Item = (i64, Vec<u8>, bool)>) -> SchemaStatus {
        let applied: Vec<AppliedMigration> = applied
            .into_iter()
            .map(|(version, checksum, success)| AppliedMigration {
                version,
                checksum,
                success,
            })
            .collect();
        let migrator = self.migrator();
        SchemaStatus::compare(
            migrator.iter().map(|m| (m.version, m.checksum.as_ref())),
            &applied,
        )
    }

    /// File names without `.sql` (`<version>_<description>`), for cross-checks.
    pub fn names(self) -> Vec<String> {
        self.0.iter().map(|(v, d, _)| format!("{v}_{d}")).collect()
    }

    /// Panics unless the `.sql` files in `dir` are exactly this list (for adapter tests).
    pub fn assert_matches_folder(self, dir: &Path) {
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .map(|n| n.strip_suffix(".sql").expect("only .sql files").to_owned())
            .collect();
        on_disk.sort();
        assert_eq!(
            on_disk,
            self.names(),
            "migrations/ and the embedded list differ"
        );
    }
}
