//! Leases of scheduled jobs and their runs (issue 25, ADR 0041). The acquire is one upsert
//! whose condition is the whole rule: a lease changes hands only when it is free or lapsed,
//! so two nodes racing for it cannot both win (PostgreSQL's `ON CONFLICT` locks the row; on
//! SQLite the single writer serialises them).

use keel_kernel::{
    StoreError,
    lease::{JobRun, Lease},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Arg, Exec, decode},
    rows::ReadRow,
};

fn lease_row(r: &impl ReadRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        job: r.text("job")?,
        holder: r.text("holder")?,
        expires_at: r.time("expires_at")?,
        acquired_at: r.time("acquired_at")?,
        last_run_at: r.opt_time("last_run_at")?,
    })
}

fn run(r: &impl ReadRow) -> Result<JobRun, StoreError> {
    Ok(JobRun {
        job: r.text("job")?,
        node: r.text("node")?,
        started_at: r.time("started_at")?,
        finished_at: r.time("finished_at")?,
        outcome: match r.opt_text("error")? {
            Some(e) => Err(e),
            None => Ok(u64::try_from(r.opt_int("changed")?.unwrap_or(0)).unwrap_or(0)),
        },
    })
}

pub async fn acquire<E: Exec>(
    e: &mut E,
    job: &str,
    node: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Lease, StoreError> {
    // A renewal keeps `acquired_at`; a takeover sets it (the handover time the tests read).
    let taken = e
        .opt(
            "INSERT INTO job_leases (job, holder, expires_at, acquired_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at, \
             acquired_at = CASE WHEN job_leases.holder = excluded.holder \
                 THEN job_leases.acquired_at ELSE excluded.acquired_at END \
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= $4 \
             RETURNING job, holder, expires_at, acquired_at, last_run_at",
            args![job, node, until, now],
        )
        .await?;
    if let Some(r) = taken {
        return lease_row(&r);
    }
    lease(e, job).await?.ok_or(StoreError::NotFound)
}

pub async fn lease<E: Exec>(e: &mut E, job: &str) -> Result<Option<Lease>, StoreError> {
    e.opt(
        "SELECT job, holder, expires_at, acquired_at, last_run_at FROM job_leases \
         WHERE job = $1",
        args![job],
    )
    .await?
    .map(|r| lease_row(&r))
    .transpose()
}

pub async fn release<E: Exec>(
    e: &mut E,
    job: &str,
    node: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    e.run(
        "UPDATE job_leases SET expires_at = $3 WHERE job = $1 AND holder = $2 AND expires_at > $3",
        args![job, node, now],
    )
    .await?;
    Ok(())
}

pub async fn record_run<E: Exec>(e: &mut E, r: &JobRun) -> Result<(), StoreError> {
    let (changed, error) = match &r.outcome {
        Ok(n) => (Some(i64::try_from(*n).unwrap_or(i64::MAX)), None),
        Err(e) => (None, Some(e.as_str())),
    };
    e.run(
        "INSERT INTO job_runs (id, job, node, started_at, finished_at, changed, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Arg::from(Uuid::now_v7()),
            Arg::from(r.job.as_str()),
            Arg::from(r.node.as_str()),
            Arg::from(r.started_at),
            Arg::from(r.finished_at),
            Arg::Int(changed),
            Arg::Text(error),
        ],
    )
    .await?;
    e.run(
        "UPDATE job_leases SET last_run_at = $3 WHERE job = $1 AND holder = $2",
        args![r.job.as_str(), r.node.as_str(), r.started_at],
    )
    .await?;
    Ok(())
}

pub async fn runs<E: Exec>(
    e: &mut E,
    job: &str,
    since: OffsetDateTime,
    limit: i64,
) -> Result<Vec<JobRun>, StoreError> {
    let rows = e
        .all(
            "SELECT job, node, started_at, finished_at, changed, error FROM job_runs \
             WHERE job = $1 AND started_at >= $2 ORDER BY started_at, id LIMIT $3",
            args![job, since, limit],
        )
        .await?;
    decode(&rows, run)
}

pub async fn prune_runs<E: Exec>(
    e: &mut E,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, StoreError> {
    e.run(
        "DELETE FROM job_runs WHERE id IN \
         (SELECT id FROM job_runs WHERE started_at < $1 ORDER BY started_at LIMIT $2)",
        args![before, limit],
    )
    .await
}
