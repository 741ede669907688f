//! Cluster mode (issue 25, ADR 0041): `keel serve` processes on one PostgreSQL database.
//! Scheduled jobs run on one node at a time and pass to another when their holder is
//! SIGKILLed, within the exact lease time; roles split the API from the background work.

use std::time::Duration;

use keel_kernel::lease::{JobRun, LeaseStore};
use time::OffsetDateTime;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// The lease timing of these tests (seconds): short, so a handover fits in a test.
const TTL_S: i64 = 3;
const RENEW_S: i64 = 1;

/// A PostgreSQL schema of its own, migrated by `keel migrate`, and what every node shares.
struct Shared {
    db: keel_testdb::PgSchema,
    key: String,
    dir: tempfile::TempDir,
    nats: keel_testdb::NatsServer,
    tag: String,
}

impl Shared {
    async fn new() -> Self {
        keel_testkit::install_crypto_provider();
        let shared = Self {
            db: keel_testdb::postgres_schema().await,
            key: keel::secrets::generate(),
            dir: tempfile::tempdir().expect("tempdir"),
            nats: keel_testdb::nats().await,
            // A stream and subjects of this test's own: tests share one NATS server.
            tag: uuid::Uuid::now_v7().simple().to_string(),
        };
        let out = tokio::process::Command::new(KEEL)
            .arg("migrate")
            .env_clear()
            .envs(shared.env("migrator"))
            .current_dir(shared.dir.path())
            .output()
            .await
            .expect("keel migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        shared
    }

    fn env(&self, node: &str) -> Vec<(String, String)> {
        let (stream, prefix, changes) = (
            format!("KEEL_TEST_{}", self.tag),
            format!("keel.test.{}", self.tag),
            format!("keel.test-changes.{}", self.tag),
        );
        [
            ("KEEL_NATS_URL", self.nats.url.as_str()),
            ("KEEL_NATS__STREAM", stream.as_str()),
            ("KEEL_NATS__SUBJECT_PREFIX", prefix.as_str()),
            ("KEEL_NATS__CHANGES_SUBJECT", changes.as_str()),
            ("KEEL_DATABASE_URL", self.db.url.as_str()),
            ("KEEL_SECRET_KEY", self.key.as_str()),
            ("KEEL_CLUSTER__NODE_ID", node),
            ("KEEL_MAINTENANCE_INTERVAL_S", "1"),
            ("KEEL_PAYMENTS__RECONCILE_INTERVAL_MS", "1000"),
            ("KEEL_CLUSTER__LEASE_TTL_S", "3"),
            ("KEEL_CLUSTER__LEASE_RENEW_S", "1"),
            ("KEEL_LIMITS__ENABLED", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn node(&self, name: &str, role: &str) -> (tokio::process::Child, String) {
        let env = self.env(name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        keel_testkit::serve_process_args(KEEL, &["serve", "--role", role], self.dir.path(), &env)
            .await
    }

    async fn leases(&self) -> std::sync::Arc<dyn LeaseStore> {
        let raw = keel::config::RawConfig {
            database_url: Some(self.db.url.clone().into()),
            secret_key: Some(self.key.clone().into()),
            ..Default::default()
        };
        let settings = keel::Settings::from_raw(raw).expect("settings");
        keel::Store::open(&settings.database)
            .await
            .expect("store")
            .leases()
    }
}

async fn runs(leases: &dyn LeaseStore, job: &str, since: OffsetDateTime) -> Vec<JobRun> {
    leases.runs(job, since, 10_000).await.expect("runs")
}

/// Runs of one job never overlap in time.
fn one_at_a_time(job: &str, runs: &[JobRun]) {
    for pair in runs.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at,
            "{job}: a run started on {} before the run on {} finished",
            pair[1].node,
            pair[0].node
        );
    }
}

/// Three nodes for 60 s: each job's runs come from one node, one run at a time, once per
/// period (not three times); the holder of a job SIGKILLed, another node takes the job at
/// the lease's exact expiry (at most the lease time after the kill) and runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduled_job_runs_on_one_node_at_a_time_and_passes_on_when_its_holder_dies() {
    let shared = Shared::new().await;
    let leases = shared.leases().await;
    let mut nodes = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        nodes.push((name, shared.node(name, "all").await.0));
    }
    let since = OffsetDateTime::now_utc();
    let window = Duration::from_mins(1);
    tokio::time::sleep(window).await;
    let until = OffsetDateTime::now_utc();
    for job in keel::jobs::JOBS {
        let runs: Vec<JobRun> = runs(&*leases, job, since)
            .await
            .into_iter()
            .filter(|r| r.started_at <= until)
            .collect();
        one_at_a_time(job, &runs);
        let ran_on: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(
            ran_on.len(),
            1,
            "{job}: runs from one node only: {ran_on:?}"
        );
        // One period of 1 s: at most one run per second of the window (and its start).
        assert!(
            runs.len() >= 50 && runs.len() <= 61,
            "{job}: {} runs in 60 s at a 1 s period",
            runs.len()
        );
        assert!(runs.iter().all(|r| r.outcome.is_ok()), "{job}: {runs:?}");
    }
    // SIGKILL the holder of the housekeeping job: no release, the lease must lapse.
    let job = keel::jobs::HOUSEKEEPING;
    let held = leases.lease(job).await.expect("lease").expect("held");
    let (_, child) = nodes
        .iter_mut()
        .find(|(name, _)| *name == held.holder)
        .expect("the holder is one of ours");
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("exited");
    let killed = OffsetDateTime::now_utc();
    let last = leases.lease(job).await.expect("lease").expect("held");
    assert_eq!(last.holder, held.holder, "nobody took a live lease");
    let taken = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = leases.lease(job).await.expect("lease").expect("held");
            if now.holder != held.holder {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("another node takes the job");
    assert!(
        taken.acquired_at >= last.expires_at,
        "taken over only once lapsed"
    );
    assert!(
        taken.acquired_at - killed
            <= time::Duration::seconds(TTL_S) + time::Duration::milliseconds(500),
        "taken over within the lease time of the kill: {}",
        taken.acquired_at - killed
    );
    assert!(
        last.expires_at - killed <= time::Duration::seconds(TTL_S),
        "the dead holder's lease lapsed at most the lease time after its last renewal"
    );
    // And the new holder runs the job, one period after its last run.
    let after = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = runs(&*leases, job, killed - time::Duration::seconds(RENEW_S)).await;
            if let Some(run) = r.iter().find(|r| r.node == taken.holder) {
                return run.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job runs on its new holder");
    assert!(after.started_at >= taken.acquired_at);
    one_at_a_time(job, &runs(&*leases, job, since).await);
}

/// `keel serve --role api` with only `env` refuses to start, saying `why`.
async fn refused(shared: &Shared, env: &[(&str, &str)], why: &str) {
    let out = tokio::process::Command::new(KEEL)
        .args(["serve", "--role", "api"])
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(shared.dir.path())
        .output()
        .await
        .expect("keel serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

/// `--role worker` serves only the probes and `/metrics`; `--role api` serves the API and runs
/// no scheduled job (the worker runs them); an embedded database refuses a split role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_split_the_api_from_the_background_work() {
    let shared = Shared::new().await;
    let leases = shared.leases().await;
    let (_api, api) = shared.node("api-1", "api").await;
    let (_worker, worker) = shared.node("worker-1", "worker").await;
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(
            status(format!("http://{worker}{path}")).await,
            200,
            "{path} on the worker"
        );
        assert_eq!(
            status(format!("http://{api}{path}")).await,
            200,
            "{path} on the api node"
        );
    }
    assert_eq!(status(format!("http://{worker}/openapi.json")).await, 404);
    assert_eq!(
        status(format!("http://{worker}/v1/store/products")).await,
        404
    );
    assert_eq!(status(format!("http://{api}/openapi.json")).await, 200);
    // The jobs run on the worker only.
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(60);
    let ran = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = runs(&*leases, keel::jobs::HOUSEKEEPING, since).await;
            if r.len() >= 2 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the worker runs the housekeeping job");
    assert!(ran.iter().all(|r| r.node == "worker-1"), "{ran:?}");
    // Embedded mode: one process owns the file and runs everything.
    refused(
        &shared,
        &[("KEEL_SECRET_KEY", &shared.key)],
        "needs PostgreSQL",
    )
    .await;
    // Without the bus, an api node's subscribers would never hear of the worker's events.
    let env = [
        ("KEEL_SECRET_KEY", shared.key.as_str()),
        ("KEEL_DATABASE_URL", shared.db.url.as_str()),
    ];
    refused(&shared, &env, "needs the bus").await;
}
