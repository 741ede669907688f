//! No acknowledged order is lost when the process dies: `keel serve` (embedded SQLite with
//! group commit) is SIGKILLed in the middle of a checkout load driven by the `keel bench`
//! load generator; after a restart every order the generator saw acknowledged as paid is in
//! the database, paid.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// The server's settings: the master key, and the edge's limits off (one address makes the
/// whole load; the limits are not what this test is about).
fn serve_env(key: &str) -> [(&'static str, &str); 2] {
    [("KEEL_SECRET_KEY", key), ("KEEL_LIMITS__ENABLED", "false")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_order_is_lost_when_the_server_is_killed_mid_load() {
    keel_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keel::secrets::generate();
    let out = tokio::process::Command::new(KEEL)
        .args([
            "tenant",
            "create",
            "--name",
            "Durable",
            "--slug",
            "durable",
            "--owner-email",
            "owner@durable.test",
            "--json",
        ])
        .env_clear()
        .env("KEEL_SECRET_KEY", &key)
        .current_dir(dir.path())
        .output()
        .await
        .expect("tenant create");
    assert!(out.status.success());
    let setup: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let env = serve_env(&key);
    let (mut child, addr) = keel_testkit::serve_process(KEEL, dir.path(), &env).await;
    let target = keel_bench::Target::new(&format!("http://{addr}"), 16).expect("loopback target");
    let shop = keel_bench::setup(
        &target,
        setup["setup_token"].as_str().expect("token"),
        20,
        100_000,
    )
    .await
    .expect("shop");
    let staff = shop.staff_token.clone();
    let paid = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = tokio::spawn({
        let (target, paid) = (target.clone(), paid.clone());
        async move {
            keel_bench::run(
                &target,
                shop,
                &keel_bench::LoadOptions {
                    scenario: keel_bench::Scenario::Checkout,
                    concurrency: 16,
                    iterations: 2_000,
                    duration: Duration::from_mins(2),
                    paid,
                    payment: keel_bench::Payment::Manual,
                },
            )
            .await
        }
    });
    // Killed without warning in the middle of the load: 40 orders acknowledged, and 16
    // shoppers mid-flow.
    // Polls the counter (a condition, not a guess at timing) without spinning a core away
    // from the server.
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    while paid.load(Ordering::Relaxed) < 40 {
        poll.tick().await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("killed");
    let report = load
        .await
        .expect("load task")
        .expect("the run ends once the server is gone");
    assert!(report.order_ids.len() >= 40);
    assert!(
        report.errors.keys().any(|k| k.ends_with(" 0")) && report.order_ids.len() < 2_000,
        "the kill came mid-load, cutting shoppers off: {:?}",
        report.errors
    );
    let (_restarted, addr) = keel_testkit::serve_process(KEEL, dir.path(), &env).await;
    let client = reqwest::Client::new();
    for id in &report.order_ids {
        let order: serde_json::Value = client
            .get(format!("http://{addr}/v1/admin/orders/{id}"))
            .bearer_auth(&staff)
            .send()
            .await
            .expect("order")
            .json()
            .await
            .expect("json");
        assert_eq!(order["status"], "paid", "acknowledged order {id}: {order}");
    }
    let listed: serde_json::Value = client
        .get(format!(
            "http://{addr}/v1/admin/orders?status=paid&limit=100"
        ))
        .bearer_auth(&staff)
        .send()
        .await
        .expect("orders")
        .json()
        .await
        .expect("json");
    // The database may hold more (committed, but the answer died with the process), never
    // fewer.
    let in_db = listed["data"].as_array().map_or(0, Vec::len);
    assert!(
        in_db >= report.order_ids.len().min(100),
        "{in_db} paid in the database"
    );
}
