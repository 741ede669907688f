//! Spawn the real Keel app for a test: a real listener on `127.0.0.1:0`, the real router and
//! middleware, a real database (a fresh SQLite file, or a fresh PostgreSQL schema; see
//! `keel-testdb`). The listener is bound before the server task starts, so requests can be
//! sent at once: no readiness sleeps.
//!
//! ```ignore
//! keel_testkit::backend_tests! {
//!     async fn readyz_answers_200(app: TestApp) {
//!         assert_eq!(app.get("/readyz").await.status(), 200);
//!     }
//! }
//! ```
//! expands into `sqlite::readyz_answers_200` and `postgres::readyz_answers_200`.
//! Logs go nowhere unless `TEST_LOG=1`.
#![forbid(unsafe_code)]

use std::sync::Once;

use keel::{App, Settings, Store, config::RawConfig};
use keel_http::AppState;
use keel_testdb::{PgSchema, SqliteFile};
use utoipa_axum::router::OpenApiRouter;

pub mod receiver;
pub mod shop;
pub mod sse;

pub use keel_http;
pub use reqwest;
pub use utoipa_axum;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps a test database alive for as long as the app uses it.
#[derive(Debug)]
pub enum TestDb {
    Sqlite(SqliteFile),
    Postgres(PgSchema),
}

impl TestDb {
    /// A fresh, empty database of the given kind.
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(keel_testdb::sqlite_file()),
            Backend::Postgres => Self::Postgres(keel_testdb::postgres_schema().await),
        }
    }

    /// The `KEEL_DATABASE_URL` for it.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(f) => format!("sqlite://{}", f.path.display()),
            Self::Postgres(s) => s.url.clone(),
        }
    }
}

/// A running app and a client for it. Dropping it stops the server.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    /// `http://addr` of the metrics listener, when `metrics_listen` is configured.
    pub metrics_url: Option<String>,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub store: Store,
    /// The validated settings the app runs with (for running its jobs from a test).
    pub settings: Settings,
    /// The app's authentication service (same database and master key), for setting up
    /// tenants the way the operator CLI does.
    pub auth: keel_identity::services::auth::AuthService,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub db: TestDb,
}

/// Installs ring as the process's rustls provider (the one Keel builds with), as `main` does;
/// HTTP clients built with `rustls-no-provider` need it. Safe to call repeatedly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn init_test_logging() {
    static ONCE: Once = Once::new();
    install_crypto_provider();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            keel::telemetry::init(keel::config::LogFormat::Pretty, false);
        }
    });
}

/// Test configuration: the defaults, on a random loopback port, on `db`.
pub fn test_config(db: &TestDb) -> RawConfig {
    let mut raw = RawConfig {
        listen: "127.0.0.1:0".into(),
        log_format: "pretty".into(),
        ..RawConfig::default()
    };
    raw.database_url = Some(db.url().into());
    raw.secret_key = Some(keel::secrets::generate().into());
    // Every test's shoppers share 127.0.0.1: the edge's limits stay on (every answer is
    // decided and carries its headers) but out of reach; the limits' own tests set theirs.
    for limit in [
        &mut raw.limits.cart_create,
        &mut raw.limits.checkout,
        &mut raw.limits.promotion_address,
        &mut raw.limits.promotion_cart,
        &mut raw.limits.store_read,
        &mut raw.limits.store_write,
        &mut raw.limits.admin_read,
        &mut raw.limits.admin_write,
        &mut raw.limits.auth,
        &mut raw.limits.client,
        &mut raw.limits.shop,
    ] {
        *limit = keel::config::RawLimit {
            interval_ms: 1,
            burst: 1_000_000,
        };
    }
    raw
}

/// The real app on a fresh database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, OpenApiRouter::new(), |_| {}).await
}

/// The real app plus `extra` routes (under the same middleware), with config tweaks.
pub async fn spawn_app_with(
    backend: Backend,
    extra: OpenApiRouter<AppState>,
    configure: impl FnOnce(&mut RawConfig),
) -> TestApp {
    let db = TestDb::fresh(backend).await;
    let mut raw = test_config(&db);
    configure(&mut raw);
    Box::pin(spawn_on(db, raw, true, extra)).await
}

/// The real app on `db` with `raw` config; `migrate` as `keel serve --migrate` would.
pub async fn spawn_on(
    db: TestDb,
    raw: RawConfig,
    migrate: bool,
    extra: OpenApiRouter<AppState>,
) -> TestApp {
    // Boxed: building the app is a large future, kept off every caller's stack.
    Box::pin(spawn_on_boxed(db, raw, migrate, extra)).await
}

async fn spawn_on_boxed(
    db: TestDb,
    raw: RawConfig,
    migrate: bool,
    extra: OpenApiRouter<AppState>,
) -> TestApp {
    init_test_logging();
    let backend = match db {
        TestDb::Sqlite(_) => Backend::Sqlite,
        TestDb::Postgres(_) => Backend::Postgres,
    };
    let settings = Settings::from_raw(raw).expect("valid test configuration");
    let auth_settings = settings.clone();
    let app = App::build_with_routes(&settings, migrate, extra)
        .await
        .expect("build the app");
    let base_url = format!("http://{}", app.local_addr());
    let metrics_url = app.metrics_addr().map(|a| format!("http://{a}"));
    let store = app.store().clone();
    let auth = keel::auth_service(&auth_settings, &store).expect("auth service");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base_url,
        metrics_url,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the HTTP client"),
        backend,
        store,
        settings: auth_settings,
        auth,
        server: Some(server),
        stop: Some(stop),
        db,
    }
}

impl TestApp {
    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the server")
    }

    /// `POST path` with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST reaches the server")
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST reaches the server")
    }

    /// `GET path` with a Bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET reaches the server")
    }

    /// `method path` with a Bearer token and an optional JSON body.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request reaches the server")
    }

    /// Runs the operator's CLI (`bin`, the `keel` binary the calling test was built with)
    /// against this app's database with `args` and `--json`; answers its JSON output.
    pub async fn operator_cli(&self, bin: &str, args: &[&str]) -> serde_json::Value {
        let out = tokio::process::Command::new(bin)
            .args(args)
            .arg("--json")
            .env_clear()
            .env("KEEL_DATABASE_URL", self.db.url())
            .env("KEEL_SECRET_KEY", keel::secrets::generate())
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .expect("keel runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Creates a tenant with an owner, as `keel tenant create --owner-email` does.
    pub async fn create_owner(&self, slug_prefix: &str) -> Owner {
        let slug = format!(
            "{slug_prefix}-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let email = format!("owner@{slug}.test");
        let new = keel_identity::NewTenant {
            slug: keel_identity::TenantSlug::parse(&slug).expect("valid slug"),
            name: keel_identity::TenantName::parse(&format!("Shop {slug}")).expect("valid name"),
        };
        let (tenant, user_id, setup) = self
            .auth
            .create_tenant_with_owner(
                new,
                keel_identity::domain::staff::Email::parse(&email).expect("valid email"),
            )
            .await
            .expect("create tenant with owner");
        Owner {
            tenant_id: tenant.id.to_string(),
            user_id: user_id.to_string(),
            slug,
            email,
            setup_token: setup.expose().to_owned(),
        }
    }

    /// Creates an owner and completes setup with [`OWNER_PASSWORD`]; returns the token pair.
    pub async fn owner_with_tokens(&self, slug_prefix: &str) -> (Owner, Tokens) {
        let owner = self.create_owner(slug_prefix).await;
        let res = self
            .post_json(
                "/v1/auth/setup",
                &serde_json::json!({"setup_token": owner.setup_token, "password": OWNER_PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200, "setup succeeds");
        let tokens = res.json().await.expect("token JSON");
        (owner, tokens)
    }

    /// Invites `email` with `role` as `inviter` and redeems the invite with
    /// [`OWNER_PASSWORD`]; returns the new user's id and tokens.
    pub async fn member(&self, inviter: &Tokens, email: &str, role: &str) -> (String, Tokens) {
        let res = self
            .client
            .post(self.url("/v1/admin/users"))
            .bearer_auth(&inviter.access_token)
            .json(&serde_json::json!({"email": email, "role": role}))
            .send()
            .await
            .expect("POST reaches the server");
        assert_eq!(res.status(), 201, "invite {email}");
        let invite: serde_json::Value = res.json().await.expect("invite JSON");
        let token = invite["invite_token"].as_str().expect("invite token");
        let res = self
            .post_json(
                "/v1/auth/setup",
                &serde_json::json!({"setup_token": token, "password": OWNER_PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200, "invite redeemed");
        let tokens = res.json().await.expect("token JSON");
        (
            invite["user"]["id"].as_str().expect("user id").to_owned(),
            tokens,
        )
    }

    /// A shop with an owner (logged in) and a publishable key for its storefront; returns the
    /// owner's tokens and the `pk_…` key.
    pub async fn shop_with_storefront(&self, slug_prefix: &str) -> (Tokens, String) {
        let (_, owner) = self.owner_with_tokens(slug_prefix).await;
        let res = self
            .client
            .post(self.url("/v1/admin/api-keys"))
            .bearer_auth(&owner.access_token)
            .json(&serde_json::json!({"name": "storefront", "kind": "publishable"}))
            .send()
            .await
            .expect("POST reaches the server");
        assert_eq!(res.status(), 201, "publishable key created");
        let body: serde_json::Value = res.json().await.expect("key JSON");
        let pk = body["secret"]
            .as_str()
            .expect("the key is shown once")
            .to_owned();
        (owner, pk)
    }

    /// A storefront request: `method path` with the publishable key, an optional customer
    /// Bearer token and an optional JSON body.
    pub async fn store_request(
        &self,
        method: reqwest::Method,
        pk: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("keel-publishable-key", pk);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request reaches the server")
    }

    /// `POST path` at the storefront with the publishable key and a JSON body.
    pub async fn store_post(
        &self,
        pk: &str,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.store_request(reqwest::Method::POST, pk, path, None, Some(body))
            .await
    }

    /// Stops the server gracefully and returns how the run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task did not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A password that meets the policy, used by test owners.
pub const OWNER_PASSWORD: &str = "plum-harbor-cinder-77-lantern";

/// A tenant bootstrapped for a test.
#[derive(Debug, Clone)]
pub struct Owner {
    pub tenant_id: String,
    pub user_id: String,
    pub slug: String,
    pub email: String,
    pub setup_token: String,
}

/// The token pair a login, setup or refresh returns.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub token_type: String,
}

/// Asserts the response is an RFC 9457 problem with `status` and `code`; returns its body.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json", "content type");
    let body: serde_json::Value = res.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:keel:problem:{code}"), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// Expands each test into one per backend: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* async fn $name:ident($app:ident : $backend_ty:ty) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                async fn $name() {
                    let backend = $crate::Backend::Sqlite;
                    let $app: $backend_ty = backend;
                    super::$name($app).await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                async fn $name() {
                    let backend = $crate::Backend::Postgres;
                    let $app: $backend_ty = backend;
                    super::$name($app).await;
                }
            )*
        }
        $(
            async fn $name($app: $backend_ty) $body
        )*
    };
}

/// `keel serve` (the binary at `bin`) as a child process in `dir` with a clean environment
/// plus `envs`, on a free loopback port; answers once it logs `listening`, with its address.
/// Killed when the child is dropped.
pub async fn serve_process(
    bin: &str,
    dir: &std::path::Path,
    envs: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    serve_process_args(bin, &["serve"], dir, envs).await
}

/// [`serve_process`] with the command line `args` (`["serve", "--role", "worker"]`).
pub async fn serve_process_args(
    bin: &str,
    args: &[&str],
    dir: &std::path::Path,
    envs: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut c = tokio::process::Command::new(bin);
    c.args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .env("KEEL_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("spawn keel serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                return v["addr"].as_str().expect("addr").to_owned();
            }
        }
        panic!("exited before listening")
    })
    .await
    .expect("listens");
    // Keep reading so a full pipe never stalls the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// An independent TOTP authenticator (`totp-rs`, not Keel's code) for the secret an enrolment
/// returned: SHA-1, 6 digits, 30 s steps.
#[derive(Debug)]
pub struct Authenticator(totp_rs::Totp);

impl Authenticator {
    /// From the enrolment's base32 `secret`.
    pub fn new(base32: &str) -> Self {
        let secret = totp_rs::Secret::try_from_base32(base32).expect("base32 secret");
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(secret)
            .build()
            .expect("TOTP parameters");
        Self(totp)
    }

    /// The code at `now + offset_steps * 30 s`.
    pub fn code(&self, offset_steps: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() + offset_steps * 30;
        self.0
            .generate(u64::try_from(now).expect("after 1970"))
            .to_string()
    }
}

impl TestApp {
    /// Enrols the holder of `access_token` (staff) in TOTP with `password`; answers the
    /// authenticator and the 10 backup codes.
    pub async fn enrol_staff_totp(
        &self,
        access_token: &str,
        password: &str,
    ) -> (Authenticator, Vec<String>) {
        let begun: serde_json::Value = self
            .client
            .post(self.url("/v1/me/mfa/totp"))
            .bearer_auth(access_token)
            .json(&serde_json::json!({"password": password}))
            .send()
            .await
            .expect("POST reaches the server")
            .json()
            .await
            .expect("enrolment JSON");
        let auth = Authenticator::new(
            begun["secret"]
                .as_str()
                .unwrap_or_else(|| panic!("{begun}")),
        );
        let confirmed: serde_json::Value = self
            .client
            .post(self.url("/v1/me/mfa/totp/confirm"))
            .bearer_auth(access_token)
            .json(&serde_json::json!({"code": auth.code(0)}))
            .send()
            .await
            .expect("POST reaches the server")
            .json()
            .await
            .expect("confirmation JSON");
        let codes = confirmed["backup_codes"]
            .as_array()
            .unwrap_or_else(|| panic!("{confirmed}"))
            .iter()
            .map(|c| c.as_str().expect("code").to_owned())
            .collect();
        (auth, codes)
    }

    /// The tenant's events of `event_type` (newest first, at most 100), read as `token`.
    pub async fn events_of(&self, token: &str, event_type: &str) -> Vec<serde_json::Value> {
        let body: serde_json::Value = self
            .get_as(
                &format!("/v1/admin/events?type={event_type}&limit=100"),
                token,
            )
            .await
            .json()
            .await
            .expect("events JSON");
        body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .clone()
    }
}

impl TestApp {
    /// Starts a receiver standing for the shop's mail system and sets it up, as the owner, as
    /// the shop's account-notification endpoint (the app must allow loopback endpoints, see
    /// [`receiver::fast_webhooks`]); answers the receiver and the endpoint's signing secret.
    pub async fn account_channel(&self, owner_token: &str) -> (receiver::Receiver, String) {
        let mail = receiver::receiver(Vec::new()).await;
        let res = self
            .client
            .put(self.url("/v1/admin/account-notifications"))
            .bearer_auth(owner_token)
            .json(&serde_json::json!({"url": mail.url}))
            .send()
            .await
            .expect("PUT reaches the server");
        assert_eq!(res.status(), 201, "account channel set up");
        let body: serde_json::Value = res.json().await.expect("endpoint JSON");
        let secret = body["secret"].as_str().expect("the secret is shown once");
        (mail, secret.to_owned())
    }
}

/// A program of the contract tests' virtualenv (schemathesis' `st`, the client generator, its
/// `python`): under `KEEL_CONTRACT_VENV`, else the virtualenv `scripts/test` makes
/// (`~/.cache/keel/venv`, pinned by `scripts/requirements-contract.txt`).
pub fn contract_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("KEEL_CONTRACT_VENV").map_or_else(
        || {
            let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"),
                std::path::PathBuf::from,
            );
            cache.join("keel/venv")
        },
        std::path::PathBuf::from,
    );
    let lock = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/requirements-contract.txt"
    );
    let lock = std::fs::read(lock).expect("scripts/requirements-contract.txt");
    assert!(
        std::fs::read(venv.join("keel-requirements.txt")).is_ok_and(|installed| installed == lock),
        "the virtualenv at {} was not made from scripts/requirements-contract.txt as it is now: \
         run ./scripts/test (it remakes it)",
        venv.display()
    );
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is not installed: run ./scripts/test (it makes the virtualenv), or set \
         KEEL_CONTRACT_VENV to a virtualenv with scripts/requirements-contract.txt installed",
        path.display()
    );
    path
}
