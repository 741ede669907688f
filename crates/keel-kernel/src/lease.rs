//! Leases for scheduled jobs (issue 25, ADR 0041): each job runs on one node at a time. A
//! node holds a job's lease until an exact time and renews it on an exact interval; when the
//! holder dies, the lease lapses at that time and the next node to ask takes it over. Every
//! run is recorded with the node that ran it.

use time::{Duration, OffsetDateTime};

use crate::StoreError;

/// Who holds a job's lease, until when, and when the job last ran (on whichever node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: String,
    pub holder: String,
    pub expires_at: OffsetDateTime,
    /// When the holder took the lease over from another node (or first took it).
    pub acquired_at: OffsetDateTime,
    pub last_run_at: Option<OffsetDateTime>,
}

impl Lease {
    pub fn held_by(&self, node: &str) -> bool {
        self.holder == node
    }
}

/// One recorded run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub job: String,
    pub node: String,
    pub started_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
    /// Rows the run changed, or the error it ended with.
    pub outcome: Result<u64, String>,
}

#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Takes or renews `job`'s lease for `node` until `until`, when it is free, lapsed at
    /// `now`, or already `node`'s; answers the lease as it stands afterwards (held by `node`
    /// or by the other node that holds it).
    async fn acquire(
        &self,
        job: &str,
        node: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, StoreError>;
    /// The lease of `job` as it stands (an operator's view; nothing changes).
    async fn lease(&self, job: &str) -> Result<Option<Lease>, StoreError>;
    /// Gives the lease up at once (a node that stops), when `node` holds it: it lapses at
    /// `now`, keeping the job's last run time for the next holder.
    async fn release(&self, job: &str, node: &str, now: OffsetDateTime) -> Result<(), StoreError>;
    /// Records a run and, when `node` still holds the lease, the job's last run time.
    async fn record_run(&self, run: &JobRun) -> Result<(), StoreError>;
    /// Runs of `job` that started at or after `since`, oldest first, at most `limit`.
    async fn runs(
        &self,
        job: &str,
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<JobRun>, StoreError>;
    /// Deletes up to `limit` runs that started before `before`; answers how many.
    async fn prune_runs(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError>;
}

/// The exact lease timing of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease holds without renewal: the longest a dead holder keeps a job.
    pub ttl: Duration,
    /// How often the holder renews (strictly less than `ttl`).
    pub renew: Duration,
}
