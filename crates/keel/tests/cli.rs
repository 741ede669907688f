//! The `keel` binary as operators run it: real processes, real signals, real databases.

use std::{process::Stdio, time::Duration};

use keel_testkit::{Backend, TestDb};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
/// Upper bound for a process step; a bound against hangs, not a synchronisation.
const STEP: Duration = Duration::from_secs(30);

/// `keel` with a clean environment: only what the test sets.
fn keel(args: &[&str]) -> Command {
    let mut c = Command::new(KEEL);
    c.args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    c
}

async fn output(mut c: Command) -> (i32, String, String) {
    let out = tokio::time::timeout(STEP, c.output())
        .await
        .expect("finishes")
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn invalid_config_exits_78_with_one_line_naming_the_key() {
    for (key, value) in [
        ("KEEL_LISTEN", "nonsense"),
        ("KEEL_DATABASE_URL", "mysql://x"),
        ("KEEL_REQUEST_TIMEOUT_MS", "soon"),
    ] {
        let mut c = keel(&["serve"]);
        c.env(key, value);
        let (code, stdout, stderr) = output(c).await;
        assert_eq!(code, 78, "{key}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[tokio::test]
async fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let mut c = keel(&["config", "check"]);
    c.env(
        "KEEL_DATABASE_URL",
        "postgres://keel:s3cret@db.example:5432/keel",
    )
    .env("KEEL_POSTGRES__POOL_SIZE", "7")
    .env("KEEL_NATS_URL", "nats://bus:t0ken@nats.example:4222")
    .env("KEEL_NATS__RETRY_SCHEDULE", "2s,10s");
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(shown["database"]["backend"], "postgres");
    assert_eq!(shown["database"]["pool_size"], 7);
    assert_eq!(
        shown["database"]["url"],
        "postgres://keel:***@db.example:5432/keel"
    );
    assert!(!stdout.contains("s3cret"));
    assert_eq!(shown["nats"]["url"], "***");
    assert_eq!(shown["nats"]["stream"], "KEEL_EVENTS");
    assert_eq!(
        shown["nats"]["retry_schedule_ms"],
        serde_json::json!([2000, 10000])
    );
    assert!(!stdout.contains("t0ken"));
}

#[tokio::test]
async fn invalid_slug_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&[
        "tenant",
        "create",
        "--name",
        "Acme",
        "--slug",
        "Not A Slug",
        "--owner-email",
        "o@acme.test",
    ]);
    c.current_dir(dir.path());
    let (code, _, stderr) = output(c).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--slug") && stderr.contains("lowercase"),
        "{stderr}"
    );
}

async fn tenant_commands_work(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let url = db.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = keel::secrets::generate();
    let run = |args: &[&str]| {
        let mut c = keel(args);
        c.env("KEEL_DATABASE_URL", &url)
            .env("KEEL_SECRET_KEY", &secret)
            .current_dir(dir.path());
        output(c)
    };
    if backend == Backend::Postgres {
        // PostgreSQL is never migrated implicitly.
        let (code, _, stderr) = run(&["tenant", "list"]).await;
        assert_eq!(code, 1);
        assert!(stderr.contains("keel migrate"), "{stderr}");
        let (code, stdout, stderr) = run(&["migrate"]).await;
        assert_eq!(code, 0, "{stderr}");
        let n = keel_store_postgres::migration_names().len();
        assert!(
            stdout.contains(&format!("migrations applied: {n} of {n}")),
            "{stdout}"
        );
    }
    let (code, stdout, stderr) = run(&[
        "tenant",
        "create",
        "--name",
        "Acme Inc.",
        "--slug",
        "acme",
        "--owner-email",
        "owner@acme.test",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let id = created["tenant_id"].as_str().expect("tenant_id").to_owned();
    assert!(id.starts_with("ten_"));
    assert!(
        created["setup_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("st_"))
    );
    assert_eq!(created["setup_token_expires_in"], 86_400);
    let (code, stdout, _) = run(&[
        "tenant",
        "create",
        "--name",
        "Globex",
        "--slug",
        "globex",
        "--owner-email",
        "boss@globex.test",
    ])
    .await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("created tenant ten_"), "{stdout}");
    assert!(
        stdout.lines().nth(2).is_some_and(|l| l.starts_with("st_")),
        "{stdout}"
    );
    let (code, _, stderr) = run(&[
        "tenant",
        "create",
        "--name",
        "Acme again",
        "--slug",
        "acme",
        "--owner-email",
        "x@acme.test",
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), "keel: tenant slug `acme` is already taken");
    let (code, stdout, _) = run(&["tenant", "list", "--json"]).await;
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("json array");
    let slugs: Vec<&str> = list.iter().filter_map(|t| t["slug"].as_str()).collect();
    assert_eq!(slugs, ["acme", "globex"]);
    assert_eq!(list[0]["id"], id.as_str());
    let (code, table, _) = run(&["tenant", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        table.lines().count() == 3 && table.contains("Acme Inc.") && table.contains("globex"),
        "{table}"
    );
}

#[tokio::test]
async fn tenant_create_and_list_on_sqlite() {
    tenant_commands_work(Backend::Sqlite).await;
}

#[tokio::test]
async fn tenant_create_and_list_on_postgres() {
    tenant_commands_work(Backend::Postgres).await;
}

/// A running `keel serve`, its address read from its own "listening" log line.
struct Served {
    child: Child,
    addr: String,
}

async fn serve(mut c: Command) -> Served {
    keel_testkit::install_crypto_provider();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn keel serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "listening" {
                return v["addr"].as_str().expect("addr").to_owned();
            }
        }
        panic!("keel serve exited before listening");
    })
    .await
    .expect("keel serve starts listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { child, addr }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn fresh_serve_creates_the_database_under_keel_data_and_is_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&["serve"]);
    c.env("KEEL_LISTEN", "127.0.0.1:0").current_dir(dir.path());
    let mut served = serve(c).await;
    let res = reqwest::get(format!("http://{}/readyz", served.addr))
        .await
        .expect("GET /readyz");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json")["status"],
        "ready"
    );
    assert!(dir.path().join("keel-data/keel.db").is_file());
    sigterm(&served.child);
    let status = tokio::time::timeout(STEP, served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

/// A TCP server that accepts connections and never answers: a database that hangs. It
/// reports each accepted connection, which tells the test a request is in flight.
async fn hanging_database() -> (u16, tokio::sync::mpsc::Receiver<tokio::net::TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            if tx.send(sock).await.is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// `keel serve` on a database that hangs, with one `/readyz` request provably in flight
/// (the database has been contacted), ready for a SIGTERM. Returns the server, the pending
/// response and the held database connection.
async fn serve_with_request_in_flight(
    env: &[(&str, &str)],
) -> (
    Served,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    tokio::net::TcpStream,
) {
    let (db_port, mut connections) = hanging_database().await;
    let mut c = keel(&["serve"]);
    c.env("KEEL_LISTEN", "127.0.0.1:0")
        .env(
            "KEEL_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{db_port}/keel"),
        )
        .env("KEEL_SECRET_KEY", keel::secrets::generate());
    for (k, v) in env {
        c.env(k, v);
    }
    let served = serve(c).await;
    let request = tokio::spawn(reqwest::get(format!("http://{}/readyz", served.addr)));
    let held = tokio::time::timeout(STEP, connections.recv())
        .await
        .expect("db contacted")
        .expect("a connection");
    (served, request, held)
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let (mut served, request, _held) = serve_with_request_in_flight(&[
        ("KEEL_POSTGRES__ACQUIRE_TIMEOUT_MS", "1500"),
        ("KEEL_SHUTDOWN_GRACE_MS", "20000"),
    ])
    .await;
    sigterm(&served.child);
    let res = request
        .await
        .expect("join")
        .expect("the in-flight request is answered");
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json")["database"]["status"],
        "unreachable"
    );
    let status = tokio::time::timeout(STEP, served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    // Once exited, nothing listens any more.
    assert!(tokio::net::TcpStream::connect(&served.addr).await.is_err());
}

#[tokio::test]
async fn sigterm_exits_1_when_the_grace_period_runs_out() {
    let (mut served, request, _held) = serve_with_request_in_flight(&[
        ("KEEL_POSTGRES__ACQUIRE_TIMEOUT_MS", "60000"),
        ("KEEL_REQUEST_TIMEOUT_MS", "60000"),
        ("KEEL_SHUTDOWN_GRACE_MS", "300"),
    ])
    .await;
    sigterm(&served.child);
    let status = tokio::time::timeout(STEP, served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        &mut served.child.stderr.take().expect("stderr"),
        &mut stderr,
    )
    .await
    .expect("read");
    assert!(
        stderr.contains("grace period of 300 ms elapsed"),
        "{stderr}"
    );
    assert!(
        request.await.expect("join").is_err(),
        "the unfinished request was cut off"
    );
}

/// Other processes writing the same SQLite file (the CLI beside a running server) wait on
/// the busy timeout instead of failing: every write commits.
#[tokio::test]
async fn concurrent_cli_writers_on_one_sqlite_file_all_succeed() {
    keel_testkit::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&["serve"]);
    c.env("KEEL_LISTEN", "127.0.0.1:0").current_dir(dir.path());
    let mut served = serve(c).await;
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let slug = format!("shop-{i}");
        let email = format!("owner@{slug}.test");
        let mut c = keel(&[
            "tenant",
            "create",
            "--name",
            "Shop",
            "--slug",
            &slug,
            "--owner-email",
            &email,
        ]);
        c.current_dir(dir.path());
        writers.spawn(output(c));
    }
    while let Some(done) = writers.join_next().await {
        let (code, _, stderr) = done.expect("join");
        assert_eq!(code, 0, "{stderr}");
    }
    let mut c = keel(&["tenant", "list", "--json"]);
    c.current_dir(dir.path());
    let (_, stdout, _) = output(c).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("json");
    assert_eq!(list.len(), 8);
    let res = reqwest::get(format!("http://{}/readyz", served.addr))
        .await
        .expect("GET");
    assert_eq!(res.status(), 200, "the server kept serving");
    sigterm(&served.child);
    let status = tokio::time::timeout(STEP, served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

/// The operator's bootstrap, end to end on the real binary: `tenant create --owner-email`
/// prints a setup token that the running server accepts once at `POST /v1/auth/setup`.
#[tokio::test]
async fn operator_bootstrap_from_cli_to_first_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&["serve"]);
    c.env("KEEL_LISTEN", "127.0.0.1:0").current_dir(dir.path());
    let mut served = serve(c).await;
    let mut c = keel(&[
        "tenant",
        "create",
        "--name",
        "Acme",
        "--slug",
        "acme",
        "--owner-email",
        "owner@acme.test",
        "--json",
    ]);
    c.current_dir(dir.path());
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    keel_testkit::install_crypto_provider();
    let client = reqwest::Client::new();
    let setup = client
        .post(format!("http://{}/v1/auth/setup", served.addr))
        .json(&serde_json::json!({"setup_token": created["setup_token"], "password": keel_testkit::OWNER_PASSWORD}))
        .send()
        .await
        .expect("setup");
    assert_eq!(setup.status(), 200);
    let login = client
        .post(format!("http://{}/v1/auth/login", served.addr))
        .json(&serde_json::json!({"tenant": "acme", "email": "owner@acme.test", "password": keel_testkit::OWNER_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    // The embedded master key was created next to the database, private to the owner.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("keel-data/secret.key"))
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    sigterm(&served.child);
    let status = tokio::time::timeout(STEP, served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn postgres_without_a_secret_key_is_a_config_error() {
    let mut c = keel(&["serve"]);
    c.env("KEEL_DATABASE_URL", "postgres://postgres@127.0.0.1:1/keel")
        .env("KEEL_LISTEN", "127.0.0.1:0");
    let (code, _, stderr) = output(c).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("KEEL_SECRET_KEY") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[tokio::test]
async fn maintenance_prune_runs_once_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&["maintenance", "prune"]);
    c.current_dir(dir.path());
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "pruned 0 login attempts, 0 idempotency keys, 0 events; cancelled 0 expired orders"
    );
}

#[tokio::test]
async fn bench_runs_an_exact_mixed_cycle_against_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keel::secrets::generate();
    let (server, addr) =
        keel_testkit::serve_process(KEEL, dir.path(), &[("KEEL_SECRET_KEY", key.as_str())]).await;
    let pid = server.id().expect("running").to_string();
    let mut c = keel(&[
        "bench",
        "mixed",
        "--url",
        &format!("http://{addr}"),
        "--concurrency",
        "2",
        "--iterations",
        "20",
        "--products",
        "3",
        "--browses",
        "9",
        "--checkouts",
        "1",
        "--server-pid",
        &pid,
        "--json",
    ]);
    c.env("KEEL_SECRET_KEY", &key).current_dir(dir.path());
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    // 20 iterations of 9 browses then 1 checkout: 18 browses and 2 checkouts of 8 requests.
    assert_eq!(report["iterations"], 20);
    assert_eq!(report["orders"], 2);
    assert_eq!(report["requests"], 18 + 2 * 8);
    assert_eq!(report["errors"], serde_json::json!({}));
    let routes = report["routes"].as_array().expect("routes");
    let checkout = routes
        .iter()
        .find(|r| r["route"] == "POST /v1/store/carts/{id}/checkout")
        .expect("the checkout route");
    assert_eq!(checkout["requests"], 2);
    assert!(checkout["p50_us"].as_u64() <= checkout["max_us"].as_u64());
    assert!(
        report["server_peak_rss_kib"]
            .as_u64()
            .is_some_and(|k| k > 0)
    );
}

#[tokio::test]
async fn bench_delivers_every_event_to_every_endpoint_of_several_shops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keel::secrets::generate();
    let (_server, addr) = keel_testkit::serve_process(
        KEEL,
        dir.path(),
        &[
            ("KEEL_SECRET_KEY", key.as_str()),
            ("KEEL_WEBHOOKS__ALLOW_HTTP", "true"),
            ("KEEL_WEBHOOKS__ALLOW_CIDRS", "127.0.0.1/32"),
        ],
    )
    .await;
    let mut c = keel(&[
        "bench",
        "webhooks",
        "--url",
        &format!("http://{addr}"),
        "--endpoints",
        "3",
        "--shops",
        "2",
        "--iterations",
        "40",
        "--products",
        "1",
        "--json",
    ]);
    c.env("KEEL_SECRET_KEY", &key).current_dir(dir.path());
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    // Three endpoints over two shops (two and one), forty events in each shop.
    assert_eq!(report["shops"], 2);
    assert_eq!(report["expected"], 3 * 40);
    assert_eq!(report["delivered"], 3 * 40, "{report}");
    assert!(report["deliveries_per_s_milli"].as_u64() > Some(0));
}

#[tokio::test]
async fn bench_refuses_a_target_that_is_not_loopback() {
    let mut c = keel(&["bench", "browse", "--url", "http://10.0.0.1:8080"]);
    let dir = tempfile::tempdir().expect("tempdir");
    c.current_dir(dir.path());
    let (code, _, stderr) = output(c).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn openapi_prints_the_checked_in_document_without_a_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = keel(&["openapi"]);
    c.current_dir(dir.path());
    let (code, stdout, stderr) = output(c).await;
    assert_eq!(code, 0, "{stderr}");
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .expect("docs/openapi.json");
    assert!(
        stdout == checked_in,
        "`keel openapi > docs/openapi.json` writes the contract"
    );
    // Nothing was opened or created: printing the document needs no database.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
