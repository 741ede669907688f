//! Scheduled jobs, one node at a time (issue 25, ADR 0041). Every node that runs background
//! work asks for each job's lease; the holder runs the job on its exact period and renews the
//! lease on the exact renewal interval (also while the job runs); the others wait until the
//! lease lapses and ask again then, so a dead holder's job is taken over at the lease's expiry,
//! at most the lease time after its last renewal. A holder that cannot renew stops the run it
//! is in (the jobs work in short transactions, so stopping between them loses nothing).

use std::{future::Future, sync::Arc, time::Duration as StdDuration};

use keel_kernel::{
    clock::Clock,
    lease::{JobRun, Lease, LeaseStore, LeaseTiming},
};
use time::{Duration, OffsetDateTime};

/// The node's side of the leases.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub store: Arc<dyn LeaseStore>,
    /// This node's name in leases and run records (`KEEL_CLUSTER__NODE_ID`).
    pub node: Arc<str>,
    pub timing: LeaseTiming,
    pub clock: Arc<dyn Clock>,
}

fn std(d: Duration) -> StdDuration {
    StdDuration::try_from(d).unwrap_or(StdDuration::ZERO)
}

/// What a job's loop does next.
enum Next {
    Run,
    Wait(Duration),
}

impl Scheduler {
    /// When the holder runs next: one period after the last run on any node (or after the
    /// lease was first taken), so a takeover keeps the job's rhythm.
    fn next(&self, lease: &Lease, every: Duration, now: OffsetDateTime) -> Next {
        if !lease.held_by(&self.node) {
            // Ask again at the exact expiry, or sooner when the holder may have released it.
            return Next::Wait((lease.expires_at - now).clamp(Duration::ZERO, self.timing.renew));
        }
        let due = lease.last_run_at.unwrap_or(lease.acquired_at) + every;
        if due <= now {
            Next::Run
        } else {
            Next::Wait((due - now).min(self.timing.renew))
        }
    }

    async fn acquire(&self, job: &str) -> Result<Lease, keel_kernel::StoreError> {
        let now = self.clock.now();
        self.store
            .acquire(job, &self.node, now, now + self.timing.ttl)
            .await
    }

    /// Runs `work` every `every` while this node holds `job`'s lease, forever (the task is
    /// aborted at shutdown; [`Scheduler::release_all`] then hands the leases on).
    pub async fn run<F, Fut>(self, job: &'static str, every: StdDuration, work: F)
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<u64, String>> + Send,
    {
        let every = Duration::try_from(every).unwrap_or(Duration::MAX);
        // The first ask comes after one renewal interval: starting must not touch the
        // database (a node starts, and reports not-ready, while its database is down).
        tokio::time::sleep(std(self.timing.renew)).await;
        loop {
            let lease = match self.acquire(job).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(job, error = %e, "cannot take or renew a job's lease");
                    tokio::time::sleep(std(self.timing.renew)).await;
                    continue;
                }
            };
            match self.next(&lease, every, self.clock.now()) {
                Next::Wait(d) => tokio::time::sleep(std(d)).await,
                Next::Run => self.run_renewing(job, &work).await,
            }
        }
    }

    /// One run, renewing the lease on the exact interval while it lasts; stopped when a
    /// renewal finds the lease lost (another node then holds the job).
    async fn run_renewing<F, Fut>(&self, job: &'static str, work: &F)
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<u64, String>> + Send,
    {
        let started_at = self.clock.now();
        let run = work();
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                out = &mut run => break out,
                () = tokio::time::sleep(std(self.timing.renew)) => {
                    match self.acquire(job).await {
                        Ok(l) if l.held_by(&self.node) => {}
                        Ok(l) => {
                            tracing::warn!(job, holder = %l.holder, "lease lost during a run: stopped");
                            break Err("stopped: the lease passed to another node".to_owned());
                        }
                        Err(e) => {
                            tracing::warn!(job, error = %e, "cannot renew a job's lease during a run: stopped");
                            break Err("stopped: the lease could not be renewed".to_owned());
                        }
                    }
                }
            }
        };
        match &outcome {
            Ok(n) => tracing::debug!(job, changed = n, "job run"),
            Err(e) => tracing::warn!(job, error = %e, "job run failed"),
        }
        let record = JobRun {
            job: job.to_owned(),
            node: self.node.to_string(),
            started_at,
            finished_at: self.clock.now(),
            outcome,
        };
        if let Err(e) = self.store.record_run(&record).await {
            tracing::warn!(job, error = %e, "cannot record a job run");
        }
    }

    /// Gives every lease this node holds of `jobs` up at once (a node that stops cleanly), so
    /// the next node takes the jobs at its next ask instead of at the expiry.
    pub async fn release_all(&self, jobs: &[&str]) {
        for job in jobs {
            if let Err(e) = self.store.release(job, &self.node, self.clock.now()).await {
                tracing::warn!(job, error = %e, "cannot release a job's lease");
            }
        }
    }
}
