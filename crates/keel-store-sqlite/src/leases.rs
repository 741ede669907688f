//! Leases of scheduled jobs on SQLite (the statements: `keel_store_common::store::leases`).
//! One process owns the file, so the lease only ever names this node; the jobs run through the
//! same code as on PostgreSQL.

use async_trait::async_trait;
use keel_kernel::{
    StoreError,
    lease::{JobRun, Lease, LeaseStore},
};
use keel_store_common::store::leases as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire(
        &self,
        job: &str,
        node: &str,
        at: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, StoreError> {
        self.tx(|e| now(shared::acquire(e, job, node, at, until)))
            .await
    }

    async fn lease(&self, job: &str) -> Result<Option<Lease>, StoreError> {
        self.read(|e| now(shared::lease(e, job)))
    }

    async fn release(&self, job: &str, node: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.tx(|e| now(shared::release(e, job, node, at))).await
    }

    async fn record_run(&self, run: &JobRun) -> Result<(), StoreError> {
        self.tx(|e| now(shared::record_run(e, run))).await
    }

    async fn runs(
        &self,
        job: &str,
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<JobRun>, StoreError> {
        self.read(|e| now(shared::runs(e, job, since, limit)))
    }

    async fn prune_runs(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::prune_runs(e, before, limit))).await
    }
}
