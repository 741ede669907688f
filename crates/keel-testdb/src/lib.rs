//! Real databases for tests: never a mock.
//!
//! - [`sqlite_file`]: a fresh SQLite file in its own temp dir, removed on drop.
//! - [`postgres_schema`]: a fresh, empty PostgreSQL schema, dropped on drop, on the first
//!   server found in this order:
//!   1. `KEEL_TEST_POSTGRES_URL` when set (it must work: a broken URL is a failure);
//!   2. the standard local server, `postgres://postgres@127.0.0.1:5432/postgres`;
//!   3. a throwaway server this crate starts from the system binaries (`initdb`, `pg_ctl`)
//!      in a temp dir on a free loopback port, shared by every test process of the run
//!      (guarded by a file lock) and stopped by `scripts/test` at the end.
//!
//! There is no skip: when no server can be found or started, the test fails and says why.
//! The URL of a schema carries `options=-c search_path=<schema>`, so the code under test
//! needs nothing test-specific to stay inside its schema.
#![forbid(unsafe_code)]

mod throwaway;

use std::{path::PathBuf, time::Duration};

use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// A fresh SQLite database path; the directory (and the file, WAL and SHM) go on drop.
#[derive(Debug)]
pub struct SqliteFile {
    _dir: TempDir,
    pub path: PathBuf,
}

/// A fresh SQLite file path (the file itself is not created yet).
pub fn sqlite_file() -> SqliteFile {
    let dir = tempfile::Builder::new()
        .prefix("keel-test-sqlite-")
        .tempdir()
        .expect("create a temp dir for a test database");
    let path = dir.path().join("keel.db");
    SqliteFile { _dir: dir, path }
}

/// A fresh schema on a real PostgreSQL server. Dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct PgSchema {
    /// URL of the server's database, with `search_path` set to this schema.
    pub url: String,
    pub schema: String,
    server_url: String,
}

impl PgSchema {
    /// Connect options for code under test.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.url.parse().expect("the test kit builds valid URLs")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // thread with its own runtime does the cleanup and is joined so nothing leaks.
        let server_url = self.server_url.clone();
        let statement = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let schema = self.schema.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for schema cleanup");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&server_url).await {
                    // Connections the test left open (e.g. a worker inside a transaction, its
                    // runtime now blocked on this drop) would hold the schema's locks forever.
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&schema)
                    .execute(&mut conn)
                    .await;
                    // A failed cleanup only leaves an orphan schema behind; the test result stands.
                    let _ = conn.execute(sqlx::AssertSqlSafe(statement)).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The server URL chosen for this process (found once, reused by every test in it).
static SERVER: OnceCell<String> = OnceCell::const_new();

const STANDARD_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn can_connect(url: &str) -> Result<(), String> {
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await;
    match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Finds (or starts) the server for this run. Panics with a reason when there is none:
/// a test that needs PostgreSQL must fail loudly, never skip.
pub async fn server_url() -> String {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("KEEL_TEST_POSTGRES_URL") {
                if let Err(e) = can_connect(&url).await {
                    panic!("KEEL_TEST_POSTGRES_URL is set but unusable: {e}");
                }
                return url;
            }
            let force_throwaway =
                std::env::var("KEEL_TEST_POSTGRES").is_ok_and(|v| v == "throwaway");
            if !force_throwaway && can_connect(STANDARD_URL).await.is_ok() {
                return STANDARD_URL.to_owned();
            }
            match throwaway::ensure().await {
                Ok(url) => url,
                Err(e) => panic!(
                    "no PostgreSQL for the tests: none at KEEL_TEST_POSTGRES_URL or \
                     127.0.0.1:5432, and a throwaway server could not be started: {e}"
                ),
            }
        })
        .await
        .clone()
}

/// A fresh, empty schema on the test server.
pub async fn postgres_schema() -> PgSchema {
    let server_url = server_url().await;
    let schema = format!("keel_t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = PgConnection::connect(&server_url)
        .await
        .expect("connect to the test PostgreSQL server");
    // The name is generated here from hex digits only, so quoting it is safe.
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .expect("create a test schema");
    let _ = conn.close().await;
    let sep = if server_url.contains('?') { '&' } else { '?' };
    // The schema also names the connections (`application_name`), so cleanup can end the
    // ones a test left inside a transaction (a background worker cut off mid-way).
    let url =
        format!("{server_url}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
    PgSchema {
        url,
        schema,
        server_url,
    }
}

/// A NATS server with JetStream for one test: `KEEL_TEST_NATS_URL` when set, the server on
/// 127.0.0.1:4222 when one listens (unless `KEEL_TEST_NATS=throwaway`), otherwise a throwaway `nats-server -js` (Debian package
/// `nats-server`) on a free loopback port with its store in a temp dir, stopped when this
/// guard drops.
#[derive(Debug)]
pub struct NatsServer {
    pub url: String,
    _server: Option<tokio::process::Child>,
    _dir: Option<TempDir>,
}

/// Starts or finds a NATS server (see [`NatsServer`]).
pub async fn nats() -> NatsServer {
    if let Ok(url) = std::env::var("KEEL_TEST_NATS_URL") {
        return NatsServer {
            url,
            _server: None,
            _dir: None,
        };
    }
    let throwaway = std::env::var("KEEL_TEST_NATS").is_ok_and(|v| v == "throwaway");
    if !throwaway
        && tokio::net::TcpStream::connect("127.0.0.1:4222")
            .await
            .is_ok()
    {
        return NatsServer {
            url: "nats://127.0.0.1:4222".into(),
            _server: None,
            _dir: None,
        };
    }
    nats_of_its_own().await
}

/// A throwaway `nats-server -js` for one test alone (one it may stop by dropping the guard).
pub async fn nats_of_its_own() -> NatsServer {
    let dir = tempfile::Builder::new()
        .prefix("keel-test-nats-")
        .tempdir()
        .expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = tokio::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server is installed (scripts/test installs it), or set KEEL_TEST_NATS_URL");
    let addr = format!("127.0.0.1:{port}");
    // Bounded wait for the port to accept connections.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return NatsServer {
                url: format!("nats://{addr}"),
                _server: Some(child),
                _dir: Some(dir),
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nats-server did not start on {addr}");
}
