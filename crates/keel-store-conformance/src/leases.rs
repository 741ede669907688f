//! Leases of scheduled jobs (issue 25): one holder at a time, taken over only once lapsed.

use keel_kernel::{
    clock::{Clock, SystemClock},
    lease::JobRun,
};
use time::Duration;

use crate::Stores;

/// Now, in whole seconds (stores keep microseconds).
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(SystemClock.now().unix_timestamp())
        .expect("now is a valid time")
}

fn job() -> String {
    format!("job-{}", uuid::Uuid::now_v7().simple())
}

pub async fn a_lease_has_one_holder_until_it_lapses_and_then_passes_on(stores: &Stores) {
    let (job, now) = (job(), now());
    let ttl = Duration::seconds(30);
    let a = stores
        .leases
        .acquire(&job, "node-a", now, now + ttl)
        .await
        .expect("acquire");
    assert!(a.held_by("node-a"), "a free lease goes to the first to ask");
    assert_eq!(a.acquired_at, now);
    let b = stores
        .leases
        .acquire(
            &job,
            "node-b",
            now + Duration::seconds(1),
            now + Duration::seconds(31),
        )
        .await
        .expect("ask");
    assert!(b.held_by("node-a"), "a live lease stays with its holder");
    assert_eq!(
        b.expires_at,
        now + ttl,
        "and is not extended by another node"
    );
    let renewed = stores
        .leases
        .acquire(
            &job,
            "node-a",
            now + Duration::seconds(10),
            now + Duration::seconds(40),
        )
        .await
        .expect("renew");
    assert!(renewed.held_by("node-a"));
    assert_eq!(
        renewed.expires_at,
        now + Duration::seconds(40),
        "renewed to the new time"
    );
    assert_eq!(renewed.acquired_at, now, "a renewal is no takeover");
    let early = stores
        .leases
        .acquire(
            &job,
            "node-b",
            now + Duration::seconds(39),
            now + Duration::seconds(69),
        )
        .await
        .expect("ask");
    assert!(early.held_by("node-a"), "not before the exact expiry");
    let at = now + Duration::seconds(40);
    let taken = stores
        .leases
        .acquire(&job, "node-b", at, at + ttl)
        .await
        .expect("take over");
    assert!(taken.held_by("node-b"), "taken over at the exact expiry");
    assert_eq!(taken.acquired_at, at);
}

pub async fn a_released_lease_passes_on_at_once_and_keeps_the_last_run(stores: &Stores) {
    let (job, now) = (job(), now());
    let ttl = Duration::seconds(30);
    stores
        .leases
        .acquire(&job, "node-a", now, now + ttl)
        .await
        .expect("acquire");
    let ran = now + Duration::seconds(1);
    stores
        .leases
        .record_run(&JobRun {
            job: job.clone(),
            node: "node-a".into(),
            started_at: ran,
            finished_at: ran + Duration::milliseconds(5),
            outcome: Ok(3),
        })
        .await
        .expect("record");
    // Another node's release changes nothing; the holder's hands it on.
    stores
        .leases
        .release(&job, "node-b", now + Duration::seconds(2))
        .await
        .expect("release");
    let still = stores
        .leases
        .acquire(
            &job,
            "node-b",
            now + Duration::seconds(2),
            now + Duration::seconds(32),
        )
        .await
        .expect("ask");
    assert!(still.held_by("node-a"));
    stores
        .leases
        .release(&job, "node-a", now + Duration::seconds(2))
        .await
        .expect("release");
    let next = stores
        .leases
        .acquire(
            &job,
            "node-b",
            now + Duration::seconds(2),
            now + Duration::seconds(32),
        )
        .await
        .expect("take");
    assert!(
        next.held_by("node-b"),
        "released: the next node takes it at once"
    );
    assert_eq!(next.last_run_at, Some(ran), "the job's rhythm carries over");
    // A run recorded by a node that lost the lease does not move the last run.
    stores
        .leases
        .record_run(&JobRun {
            job: job.clone(),
            node: "node-a".into(),
            started_at: now + Duration::seconds(3),
            finished_at: now + Duration::seconds(4),
            outcome: Err("stopped".into()),
        })
        .await
        .expect("record");
    let runs = stores.leases.runs(&job, now, 10).await.expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome, Ok(3));
    assert_eq!(runs[1].outcome, Err("stopped".into()));
    let again = stores
        .leases
        .acquire(
            &job,
            "node-b",
            now + Duration::seconds(5),
            now + Duration::seconds(35),
        )
        .await
        .expect("renew");
    assert_eq!(again.last_run_at, Some(ran));
    assert_eq!(
        stores
            .leases
            .prune_runs(now + Duration::seconds(2), 100)
            .await
            .expect("prune"),
        1,
        "runs started before the cut go"
    );
}
