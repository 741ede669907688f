//! Leases of scheduled jobs on PostgreSQL (the statements: `keel_store_common::store::leases`).

use async_trait::async_trait;
use keel_kernel::{
    StoreError,
    lease::{JobRun, Lease, LeaseStore},
};
use keel_store_common::store::leases as shared;
use time::OffsetDateTime;

use crate::PgStore;

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire(
        &self,
        job: &str,
        node: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, StoreError> {
        shared::acquire(&mut self.pg(), job, node, now, until).await
    }

    async fn lease(&self, job: &str) -> Result<Option<Lease>, StoreError> {
        shared::lease(&mut self.pg(), job).await
    }

    async fn release(&self, job: &str, node: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        shared::release(&mut self.pg(), job, node, now).await
    }

    async fn record_run(&self, run: &JobRun) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::record_run(&mut tx, run))
    }

    async fn runs(
        &self,
        job: &str,
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<JobRun>, StoreError> {
        shared::runs(&mut self.pg(), job, since, limit).await
    }

    async fn prune_runs(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        shared::prune_runs(&mut self.pg(), before, limit).await
    }
}
