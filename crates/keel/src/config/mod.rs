//! Configuration: embedded defaults, then an optional `keel.toml`, then `KEEL_*` environment
//! variables (and `KEEL_*_FILE`, whose file content is the value: for secrets), parsed once
//! into a typed [`Settings`]. An invalid value stops startup with one line naming the key.
//!
//! Nested keys use `__` in the environment: `sqlite.readers` is `KEEL_SQLITE__READERS`.
//! Every limit is an exact number with its unit in the name (`_ms`, `_bytes`): docs/architecture.md, "Exact values".

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use keel_store_postgres::PgSettings;
use keel_store_sqlite::{SqliteSettings, Synchronous};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The raw, layered configuration, before validation. Field docs name the variable and
/// default; `docs/configuration.md` and the README list them all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `KEEL_LISTEN`, default `127.0.0.1:8080`: address and port the API listens on.
    pub listen: String,
    /// `KEEL_DATA_DIR`, default `./keel-data`: where the embedded database lives.
    pub data_dir: PathBuf,
    /// `KEEL_DATABASE_URL` (secret; also `KEEL_DATABASE_URL_FILE`), default
    /// `sqlite://<data_dir>/keel.db`. A `postgres://` URL selects PostgreSQL. Never
    /// serialized, and its `Debug` is redacted.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// `KEEL_LOG_FORMAT`, default `json`: `json` or `pretty`.
    pub log_format: String,
    /// `KEEL_BODY_LIMIT_BYTES`, default 1048576: largest request body, in bytes.
    pub body_limit_bytes: u64,
    /// `KEEL_REQUEST_TIMEOUT_MS`, default 30000: longest a request may run.
    pub request_timeout_ms: u64,
    /// `KEEL_MAX_IN_FLIGHT`, default 1024: requests a node serves at once; one more is answered
    /// 503 `overloaded` at once (probes and `/metrics` are never shed).
    pub max_in_flight: u32,
    /// `KEEL_MAX_IN_FLIGHT_PER_SHOP`, default 256: requests of one shop this node serves at
    /// once, counted once the shop is known (its publishable key or its staff credential
    /// authenticated); one more is answered 503 `overloaded` at once.
    pub max_in_flight_per_shop: u32,
    /// `KEEL_SHUTDOWN_GRACE_MS`, default 30000: how long in-flight requests may finish after
    /// SIGTERM/SIGINT before the process gives up on them.
    pub shutdown_grace_ms: u64,
    /// `KEEL_WORKER_THREADS`, default 4: async runtime worker threads (an exact count, not
    /// "one per core").
    pub worker_threads: u32,
    /// `KEEL_MAINTENANCE_INTERVAL_S`, default 300: how often `serve` prunes expired rows
    /// (login attempts older than the login window).
    pub maintenance_interval_s: u64,
    /// `KEEL_STORE_CACHE_MAX_AGE_S`, default 60: `Cache-Control: public, max-age=<this>` on
    /// storefront product reads (0: caches must revalidate every time).
    pub store_cache_max_age_s: u64,
    /// `KEEL_STORE_CACHE_BYTES`, default 33554432 (32 MiB): the most bytes (bodies and keys)
    /// this node keeps of storefront product reads, each for at most their `max-age` (ADR
    /// 0014; 0: off).
    pub store_cache_bytes: u64,
    /// `KEEL_UNPAID_ORDER_TTL_S`, default 1800: how long an unpaid order holds its stock before
    /// the maintenance job cancels it.
    pub unpaid_order_ttl_s: u64,
    /// `KEEL_CART_IDLE_TTL_S`, default 604800 (7 days): a cart unchanged this long is gone
    /// (404), and the maintenance pass deletes it.
    pub cart_idle_ttl_s: u64,
    /// `KEEL_UNPAID_ORDERS_PER_CUSTOMER`, default 3: open unpaid orders one customer account
    /// may hold; checkout refuses another with 409 `too_many_unpaid_orders`.
    pub unpaid_orders_per_customer: u32,
    /// `KEEL_UNPAID_ORDERS_PER_EMAIL`, default 3: open unpaid orders one guest email may hold.
    pub unpaid_orders_per_email: u32,
    /// `KEEL_UNPAID_ORDERS_PER_ADDRESS`, default 3: open unpaid orders one client address
    /// (IPv6: its /64) may hold at one shop.
    pub unpaid_orders_per_address: u32,
    /// `KEEL_PRICING_CACHE_MS`, default 1000: how long a node prices cart answers with the
    /// pricing setup it read (ADR 0021); a change through this node applies at once, through
    /// another node within this time; checkout always reads afresh (0: off; at most 60000).
    pub pricing_cache_ms: u64,
    /// `KEEL_IDEMPOTENCY_TTL_S`, default 86400: how long a response to an `Idempotency-Key` is
    /// kept and replayed.
    pub idempotency_ttl_s: u64,
    /// `KEEL_EVENT_RETENTION_S`, default 7776000 (90 days): the maintenance job deletes relayed
    /// events (the event log, order timelines) and consumers' processed-event rows older than
    /// this. Unrelayed events are kept whatever their age.
    pub event_retention_s: u64,
    /// `KEEL_METRICS_LISTEN`, default unset: an address:port for `/metrics` alone; when set,
    /// the API listener answers 404 at `/metrics` (production should set it to an address
    /// only the monitoring system reaches).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// `KEEL_TLS_TERMINATED`, default false: TLS terminates in front of Keel (a load balancer
    /// or proxy speaks HTTPS to clients). Answers then carry `Strict-Transport-Security`, and
    /// browser session cookies get the `__Secure-`/`__Host-` prefixes.
    #[serde(deserialize_with = "bool_or_string")]
    pub tls_terminated: bool,
    /// `KEEL_TRUSTED_PROXIES`, default empty: comma-separated ranges of the load balancers in
    /// front of Keel (`10.0.0.0/8,fd00::/8`); the client address of their requests is read
    /// from the forwarding header (see `forwarded_header`).
    pub trusted_proxies: String,
    /// `KEEL_FORWARDED_HEADER`, default `x-forwarded-for`: the header trusted proxies write,
    /// `x-forwarded-for` or `forwarded` (RFC 7239). Only this one is read.
    pub forwarded_header: String,
    /// `KEEL_HEADER_READ_TIMEOUT_MS`, default 10000: a request's headers must be complete this
    /// long after the connection is ready for them.
    pub header_read_timeout_ms: u64,
    /// `KEEL_IDLE_TIMEOUT_MS`, default 75000: how long a keep-alive connection may wait for its
    /// next request.
    pub idle_timeout_ms: u64,
    /// `KEEL_MAX_CONNECTIONS`, default 10000: open connections per listener; one more is
    /// closed as soon as it is accepted.
    pub max_connections: u32,
    /// `KEEL_MAX_CONNECTIONS_PER_ADDRESS`, default 256: open connections one client address
    /// (IPv6: its /64) may have per listener; trusted proxies are exempt.
    pub max_connections_per_address: u32,
    /// `KEEL_SECRET_KEY` (secret; also `KEEL_SECRET_KEY_FILE`): 32 bytes, base64url, sealing
    /// signing keys and TOTP secrets at rest. Required with PostgreSQL (every node must share
    /// it); with SQLite, created as `<data_dir>/secret.key` (mode 0600) when unset.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// `KEEL_NATS_URL` (secret; also `KEEL_NATS_URL_FILE`), default unset: a NATS server with
    /// JetStream for the event bus (cluster mode). Unset: events are relayed in process.
    #[serde(skip_serializing)]
    pub nats_url: Option<SecretString>,
    /// `KEEL_REDIS_URL` (secret; also `KEEL_REDIS_URL_FILE`), default unset: a Redis server
    /// the nodes share their rate limits through (`redis://host:6379`). Unset: each node
    /// keeps its own, in memory.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    pub nats: RawNats,
    pub auth: RawAuth,
    pub webhooks: RawWebhooks,
    pub payments: RawPayments,
    pub gateway: RawGateway,
    pub quotas: RawQuotas,
    pub limits: RawLimits,
    pub cors: RawCors,
    pub realtime: RawRealtime,
    pub graphql: RawGraphql,
    pub cluster: RawCluster,
    pub sqlite: RawSqlite,
    pub postgres: RawPostgres,
}

/// CORS (ADR 0036). Storefront origins are per publishable key (`allowed_origins`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// `KEEL_CORS__ADMIN_ORIGINS`, default empty: the admin console's exact origins
    /// (`https://admin.example.com`, comma-separated), granted with credentials on staff and
    /// auth routes. Empty: staff routes send no CORS header.
    pub admin_origins: String,
    /// `KEEL_CORS__MAX_AGE_S`, default 600: how long a browser may keep a preflight's answer.
    pub max_age_s: u64,
}

/// Quotas per shop (issue 23): each an exact count, or `none`. A shop's own quota
/// (`keel tenant quotas`) replaces the default for it. Written to the database by `keel
/// migrate` and by a node that migrates (SQLite always).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// `KEEL_QUOTAS__PRODUCTS`, default 100000.
    pub products: String,
    /// `KEEL_QUOTAS__VARIANTS`, default 1000000.
    pub variants: String,
    /// `KEEL_QUOTAS__STOCK_LOCATIONS`, default 1000.
    pub stock_locations: String,
    /// `KEEL_QUOTAS__WEBHOOK_ENDPOINTS`, default none (`KEEL_WEBHOOKS__MAX_ENDPOINTS` holds).
    pub webhook_endpoints: String,
    /// `KEEL_QUOTAS__API_KEYS`, default 100 (keys not revoked).
    pub api_keys: String,
    /// `KEEL_QUOTAS__STAFF_USERS`, default 1000 (not disabled).
    pub staff_users: String,
    /// `KEEL_QUOTAS__OPEN_CARTS`, default 1000000.
    pub open_carts: String,
}

impl Default for RawQuotas {
    fn default() -> Self {
        Self {
            products: "100000".into(),
            variants: "1000000".into(),
            stock_locations: "1000".into(),
            webhook_endpoints: "none".into(),
            api_keys: "100".into(),
            staff_users: "1000".into(),
            open_carts: "1000000".into(),
        }
    }
}

/// Gateway mode (ADR 0038): Keel in front of a legacy shop API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// `KEEL_GATEWAY__UPSTREAM`, default unset (no gateway): the legacy API's base URL
    /// (`https://legacy.internal`); every route Keel does not own is forwarded to it.
    pub upstream: Option<String>,
    /// `KEEL_GATEWAY__ROUTES`, default empty: `PREFIX=OWNER` pairs, comma-separated, OWNER
    /// one of `legacy`, `legacy-auth` (Keel authenticates staff or a secret key first and
    /// passes the principal as signed headers) or `keel`; the longest prefix decides.
    pub routes: String,
    /// `KEEL_GATEWAY__SIGNING_SECRET` (secret), required with a `legacy-auth` prefix: at
    /// least 32 bytes; signs the principal headers for the legacy API.
    #[serde(skip_serializing)]
    pub signing_secret: Option<SecretString>,
    /// `KEEL_GATEWAY__CONNECT_TIMEOUT_MS` / `__TIMEOUT_MS`, default 3000 / 30000.
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    /// `KEEL_GATEWAY__CIRCUIT_FAILURES` / `__CIRCUIT_OPEN_MS`, default 5 / 30000.
    pub circuit_failures: u32,
    pub circuit_open_ms: u64,
    /// `KEEL_GATEWAY__MAX_CONCURRENT` / `__QUEUE_WAIT_MS`, default 512 / 100.
    pub max_concurrent: u32,
    pub queue_wait_ms: u64,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            upstream: None,
            routes: String::new(),
            signing_secret: None,
            connect_timeout_ms: 3_000,
            timeout_ms: 30_000,
            circuit_failures: 5,
            circuit_open_ms: 30_000,
            max_concurrent: 512,
            queue_wait_ms: 100,
        }
    }
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            admin_origins: String::new(),
            max_age_s: 600,
        }
    }
}

/// The JetStream event bus (used when `KEEL_NATS_URL` is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    /// `KEEL_NATS__STREAM`, default `KEEL_EVENTS`.
    pub stream: String,
    /// `KEEL_NATS__SUBJECT_PREFIX`, default `keel.events`: events go to `<prefix>.<tenant>.<type>`.
    pub subject_prefix: String,
    /// `KEEL_NATS__DUPLICATE_WINDOW_S`, default 120: JetStream drops a re-publish of an event
    /// within this window.
    pub duplicate_window_s: u64,
    /// `KEEL_NATS__RETRY_SCHEDULE`, default `1s,5s,30s,300s,1800s`: a consumer's delays after a
    /// failed delivery; after the last, the event goes to the dead-letter table.
    pub retry_schedule: String,
    /// `KEEL_NATS__CHANGES_SUBJECT`, default `keel.changes`: the core NATS subject on which
    /// nodes announce writes so that the others drop their cached copies at once (outside
    /// the event stream's subjects).
    pub changes_subject: String,
    /// `KEEL_NATS__ACK_WAIT_S`, default 30: a message a node took and did not settle (the node
    /// died) goes to another node after exactly this long.
    pub ack_wait_s: u64,
}

/// Rate limits at the edge (issue 23, ADR 0035): each a GCRA limit, an exact emission
/// interval and an exact burst.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `KEEL_LIMITS__ENABLED`, default true.
    #[serde(deserialize_with = "bool_or_string")]
    pub enabled: bool,
    /// `KEEL_LIMITS__MEMORY_KEYS`, default 100000: keys a node remembers at most (the oldest
    /// are forgotten first).
    pub memory_keys: u32,
    /// `KEEL_LIMITS__REDIS_TIMEOUT_MS`, default 50: how long a decision waits for Redis before
    /// this node decides it alone, in memory.
    pub redis_timeout_ms: u64,
    /// `KEEL_LIMITS__CART_CREATE__INTERVAL_MS` / `__BURST`, default 1000 / 60: carts one client
    /// address creates at one shop (60 per 60 s).
    pub cart_create: RawLimit,
    /// `KEEL_LIMITS__CHECKOUT__INTERVAL_MS` / `__BURST`, default 3000 / 20: checkouts one
    /// client address attempts at one shop (20 per 60 s).
    pub checkout: RawLimit,
    /// `KEEL_LIMITS__PROMOTION_ADDRESS__INTERVAL_MS` / `__BURST`, default 3000 / 20:
    /// promotion-code attempts per client address at one shop.
    pub promotion_address: RawLimit,
    /// `KEEL_LIMITS__PROMOTION_CART__INTERVAL_MS` / `__BURST`, default 6000 / 10:
    /// promotion-code attempts per cart.
    pub promotion_cart: RawLimit,
    /// `KEEL_LIMITS__STORE_READ__INTERVAL_MS` / `__BURST`, default 10 / 1000: storefront reads
    /// per shop and client address (1000 at once, then 100 a second).
    pub store_read: RawLimit,
    /// `KEEL_LIMITS__STORE_WRITE__INTERVAL_MS` / `__BURST`, default 50 / 300: other storefront
    /// requests per shop and client address (300 at once, then 20 a second).
    pub store_write: RawLimit,
    /// `KEEL_LIMITS__ADMIN_READ__INTERVAL_MS` / `__BURST`, default 10 / 1000: staff reads per
    /// credential.
    pub admin_read: RawLimit,
    /// `KEEL_LIMITS__ADMIN_WRITE__INTERVAL_MS` / `__BURST`, default 50 / 300: other staff
    /// requests per credential.
    pub admin_write: RawLimit,
    /// `KEEL_LIMITS__AUTH__INTERVAL_MS` / `__BURST`, default 1000 / 30: `POST /v1/auth/…`,
    /// `/v1/store/auth/…` and customer sign-ups per client address (the login throttle counts
    /// failures besides).
    pub auth: RawLimit,
    /// `KEEL_LIMITS__CLIENT__INTERVAL_MS` / `__BURST`, default 2 / 2000: every limited request
    /// of one client address, whatever keys it presents (2000 at once, then 500 a second).
    pub client: RawLimit,
    /// `KEEL_LIMITS__SHOP__INTERVAL_MS` / `__BURST`, default 1 / 10000: every storefront and
    /// staff request of one shop, whoever makes it (10000 at once, then 1000 a second).
    pub shop: RawLimit,
}

/// One GCRA limit: `burst` at once, then one every `interval_ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub interval_ms: u64,
    pub burst: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_keys: 100_000,
            redis_timeout_ms: 50,
            cart_create: RawLimit {
                interval_ms: 1_000,
                burst: 60,
            },
            checkout: RawLimit {
                interval_ms: 3_000,
                burst: 20,
            },
            promotion_address: RawLimit {
                interval_ms: 3_000,
                burst: 20,
            },
            promotion_cart: RawLimit {
                interval_ms: 6_000,
                burst: 10,
            },
            store_read: RawLimit {
                interval_ms: 10,
                burst: 1_000,
            },
            store_write: RawLimit {
                interval_ms: 50,
                burst: 300,
            },
            admin_read: RawLimit {
                interval_ms: 10,
                burst: 1_000,
            },
            admin_write: RawLimit {
                interval_ms: 50,
                burst: 300,
            },
            auth: RawLimit {
                interval_ms: 1_000,
                burst: 30,
            },
            client: RawLimit {
                interval_ms: 2,
                burst: 2_000,
            },
            shop: RawLimit {
                interval_ms: 1,
                burst: 10_000,
            },
        }
    }
}

/// Payments through providers (issue 22); every value exact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayments {
    /// `KEEL_PAYMENTS__WEBHOOK_TOLERANCE_S`, default 300: how far a provider webhook's signed
    /// timestamp may be from now, either way.
    pub webhook_tolerance_s: u64,
    /// `KEEL_PAYMENTS__RECONCILE_AFTER_S`, default 600: the age of a payment session without a
    /// final answer when reconciliation first asks the provider about it.
    pub reconcile_after_s: u64,
    /// `KEEL_PAYMENTS__RECONCILE_INTERVAL_MS`, default 300000: how often reconciliation runs,
    /// and how long until it asks again about a session still without an answer.
    pub reconcile_interval_ms: u64,
    /// `KEEL_PAYMENTS__RECONCILE_BATCH`, default 100: sessions asked about per pass.
    pub reconcile_batch: u32,
    /// `KEEL_PAYMENTS__REFUND_RETRY_MS`, default 60000: how long until a refund the provider
    /// did not answer is tried again (same idempotency key).
    pub refund_retry_ms: u64,
    pub stripe: RawStripe,
}

impl Default for RawPayments {
    fn default() -> Self {
        Self {
            webhook_tolerance_s: 300,
            reconcile_after_s: 600,
            reconcile_interval_ms: 300_000,
            reconcile_batch: 100,
            refund_retry_ms: 60_000,
            stripe: RawStripe {
                api_base: "https://api.stripe.com".into(),
                connect_timeout_ms: 3_000,
                timeout_ms: 10_000,
                retry_delays: "100ms,500ms,2000ms".into(),
                retry_jitter_ms: 100,
                circuit_failures: 5,
                circuit_open_ms: 30_000,
                half_open_probes: 1,
                max_concurrent: 16,
                queue_wait_ms: 1_000,
            },
        }
    }
}

/// The Stripe-compatible provider and its resilience policy (ADR 0033).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStripe {
    /// `KEEL_PAYMENTS__STRIPE__API_BASE`, default `https://api.stripe.com`: the API's base URL
    /// (`https` only, except a loopback address for a simulator).
    pub api_base: String,
    /// `KEEL_PAYMENTS__STRIPE__CONNECT_TIMEOUT_MS`, default 3000.
    pub connect_timeout_ms: u64,
    /// `KEEL_PAYMENTS__STRIPE__TIMEOUT_MS`, default 10000: one attempt's total time.
    pub timeout_ms: u64,
    /// `KEEL_PAYMENTS__STRIPE__RETRY_DELAYS`, default `100ms,500ms,2000ms`: the waits before
    /// each retry of an idempotent call (their count is the number of retries).
    pub retry_delays: String,
    /// `KEEL_PAYMENTS__STRIPE__RETRY_JITTER_MS`, default 100: the bound of the random time
    /// added to each wait.
    pub retry_jitter_ms: u64,
    /// `KEEL_PAYMENTS__STRIPE__CIRCUIT_FAILURES`, default 5: consecutive failures that open the
    /// circuit.
    pub circuit_failures: u32,
    /// `KEEL_PAYMENTS__STRIPE__CIRCUIT_OPEN_MS`, default 30000: how long an open circuit
    /// refuses calls.
    pub circuit_open_ms: u64,
    /// `KEEL_PAYMENTS__STRIPE__HALF_OPEN_PROBES`, default 1.
    pub half_open_probes: u32,
    /// `KEEL_PAYMENTS__STRIPE__MAX_CONCURRENT`, default 16: calls in flight at once (bulkhead).
    pub max_concurrent: u32,
    /// `KEEL_PAYMENTS__STRIPE__QUEUE_WAIT_MS`, default 1000: how long a call waits for a slot
    /// before failing fast.
    pub queue_wait_ms: u64,
}

/// Webhook delivery and the background loops; every value exact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// `KEEL_WEBHOOKS__RETRY_SCHEDULE`, default `5s,300s,1800s,7200s,18000s,36000s,36000s`: the
    /// delays after the immediate attempt (units `s` or `ms`).
    pub retry_schedule: String,
    /// `KEEL_WEBHOOKS__JITTER_MS`, default 1000: the bound of the random delay added to a retry.
    pub jitter_ms: u64,
    /// `KEEL_WEBHOOKS__TIMEOUT_MS`, default 15000: one attempt's timeout.
    pub timeout_ms: u64,
    /// `KEEL_WEBHOOKS__DISABLE_AFTER_S`, default 432000: an endpoint failing without a success
    /// this long is disabled.
    pub disable_after_s: u64,
    /// `KEEL_WEBHOOKS__MAX_IN_FLIGHT`, default 4: concurrent deliveries per endpoint.
    pub max_in_flight: u32,
    /// `KEEL_WEBHOOKS__SECRET_OVERLAP_S`, default 86400: how long a rotated secret keeps signing.
    pub secret_overlap_s: u64,
    /// `KEEL_WEBHOOKS__ALLOW_HTTP`, default false: plain `http` endpoints (tests, private nets).
    #[serde(deserialize_with = "bool_or_string")]
    pub allow_http: bool,
    /// `KEEL_WEBHOOKS__ALLOW_CIDRS`, default empty: non-public ranges endpoints may reach,
    /// comma-separated (`127.0.0.1/32,::1/128`).
    pub allow_cidrs: String,
    /// `KEEL_WEBHOOKS__RELAY_INTERVAL_MS`, default 1000: how often the outbox relay polls (it is
    /// also woken when a request commits).
    pub relay_interval_ms: u64,
    /// `KEEL_WEBHOOKS__RELAY_BATCH`, default 100: events per relay transaction.
    pub relay_batch: u32,
    /// `KEEL_WEBHOOKS__DELIVERY_INTERVAL_MS`, default 1000: how often due messages are claimed.
    pub delivery_interval_ms: u64,
    /// `KEEL_WEBHOOKS__DELIVERY_BATCH`, default 50: deliveries in flight on one node at most
    /// (each endpoint also keeps to its `max_in_flight`).
    pub delivery_batch: u32,
    /// `KEEL_WEBHOOKS__CIRCUIT_FAILURES`, default 5: attempts failed in a row after which an
    /// endpoint's circuit opens (its messages wait, their retries unspent).
    pub circuit_failures: u32,
    /// `KEEL_WEBHOOKS__CIRCUIT_PAUSE_MS`, default 60000: how long an open circuit pauses the
    /// endpoint before one probe is sent.
    pub circuit_pause_ms: u64,
    /// `KEEL_WEBHOOKS__SHOP_MAX_IN_FLIGHT`, default 16: deliveries one shop may have in flight
    /// at once over all its endpoints and nodes (below `delivery_batch`, so no shop can take
    /// a node's every slot).
    pub shop_max_in_flight: u32,
    /// `KEEL_WEBHOOKS__RETENTION_S`, default 7776000 (90 days, as events): the maintenance
    /// pass deletes messages delivered or given up longer ago than this, with their attempts.
    pub retention_s: u64,
    /// `KEEL_WEBHOOKS__MAX_ENDPOINTS`, default 16: webhook endpoints one shop may have (every
    /// claim probes each enabled endpoint, so their number is bounded per shop).
    pub max_endpoints: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `KEEL_AUTH__ISSUER`, default `keel`: the `iss` of every token.
    pub issuer: String,
    /// `KEEL_AUTH__ACCESS_TOKEN_TTL_S`, default 900.
    pub access_token_ttl_s: u64,
    /// `KEEL_AUTH__REFRESH_TOKEN_TTL_S`, default 2592000 (30 days).
    pub refresh_token_ttl_s: u64,
    /// `KEEL_AUTH__SETUP_TOKEN_TTL_S`, default 86400.
    pub setup_token_ttl_s: u64,
    /// `KEEL_AUTH__KEY_OVERLAP_S`, default 86400: how long a replaced signing key stays published.
    pub key_overlap_s: u64,
    /// `KEEL_AUTH__KEY_CACHE_MS`, default 60000: how long a node caches the key set.
    pub key_cache_ms: u64,
    /// `KEEL_AUTH__LEEWAY_S`, default 30: tolerance for other nodes' clocks when checking `iat`.
    pub leeway_s: u64,
    /// `KEEL_AUTH__LOGIN_ACCOUNT_MAX`, default 5: failed logins per account per window.
    pub login_account_max: u32,
    /// `KEEL_AUTH__LOGIN_IP_MAX`, default 20: failed logins per client address per window.
    pub login_ip_max: u32,
    /// `KEEL_AUTH__LOGIN_WINDOW_S`, default 900: the sliding window of both login limits.
    pub login_window_s: u64,
    /// `KEEL_AUTH__MFA_TOKEN_TTL_S`, default 300: time from password to MFA code.
    pub mfa_token_ttl_s: u64,
    /// `KEEL_AUTH__MFA_MAX_FAILURES`, default 5: wrong codes an MFA token survives.
    pub mfa_max_failures: u32,
    /// `KEEL_AUTH__API_KEY_OVERLAP_S`, default 86400: how long a rotated API key keeps working.
    pub api_key_overlap_s: u64,
    /// `KEEL_AUTH__PUBLISHABLE_KEY_CACHE_MS`, default 1000: how long a node trusts its read of a
    /// publishable key (a revocation through another node takes at most this long); 0: off.
    pub publishable_key_cache_ms: u64,
    /// `KEEL_AUTH__RESET_TOKEN_TTL_S`, default 3600: lifetime of a password reset token.
    pub reset_token_ttl_s: u64,
    /// `KEEL_AUTH__SECOND_FACTOR_MAX`, default 5: failed second-factor and re-authentication
    /// checks (MFA and backup codes, the current password) per account per window; then the
    /// account's second factor locks.
    pub second_factor_max: u32,
    /// `KEEL_AUTH__SECOND_FACTOR_WINDOW_S`, default 900.
    pub second_factor_window_s: u64,
    /// `KEEL_AUTH__RESET_ACCOUNT_MAX`, default 3: password-reset requests per account per window.
    pub reset_account_max: u32,
    /// `KEEL_AUTH__RESET_IP_MAX`, default 20: password-reset requests per client address and
    /// shop per window.
    pub reset_ip_max: u32,
    /// `KEEL_AUTH__RESET_WINDOW_S`, default 3600.
    pub reset_window_s: u64,
    /// `KEEL_AUTH__HASH_CONCURRENCY`, default 2: password hashes and verifications at once.
    pub hash_concurrency: u32,
    /// `KEEL_AUTH__HASH_PER_ADDRESS`, default 1: password jobs one client address may have
    /// running or waiting at once (more are answered 503 `overloaded` at once).
    pub hash_per_address: u32,
    /// `KEEL_AUTH__HASH_QUEUE_WAIT_MS`, default 2000: how long password work waits for a place
    /// before the request is answered 503 `overloaded`.
    pub hash_queue_wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlite {
    /// `KEEL_SQLITE__BUSY_TIMEOUT_MS`, default 5000: wait on a lock held by another process.
    pub busy_timeout_ms: u64,
    /// `KEEL_SQLITE__ACQUIRE_TIMEOUT_MS`, default 5000: wait for the writer or a reader.
    pub acquire_timeout_ms: u64,
    /// `KEEL_SQLITE__READERS`, default 4: reader connections.
    pub readers: u32,
    /// `KEEL_SQLITE__SYNCHRONOUS`, default `full`: `full`, `extra` or `normal`.
    pub synchronous: String,
    /// `KEEL_SQLITE__GROUP_COMMIT`, default `true`: concurrent write transactions share one
    /// durable commit (ADR 0013); `false` gives each its own fsync.
    #[serde(deserialize_with = "bool_or_string")]
    pub group_commit: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// `KEEL_POSTGRES__POOL_SIZE`, default 10: connections per node.
    pub pool_size: u32,
    /// `KEEL_POSTGRES__ACQUIRE_TIMEOUT_MS`, default 5000: wait for a pooled connection.
    pub acquire_timeout_ms: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./keel-data"),
            database_url: None,
            log_format: "json".into(),
            body_limit_bytes: 1_048_576,
            request_timeout_ms: 30_000,
            max_in_flight: 1024,
            max_in_flight_per_shop: 256,
            tls_terminated: false,
            shutdown_grace_ms: 30_000,
            worker_threads: 4,
            maintenance_interval_s: 300,
            store_cache_max_age_s: 60,
            store_cache_bytes: 33_554_432,
            unpaid_order_ttl_s: 1800,
            pricing_cache_ms: 1_000,
            cart_idle_ttl_s: 604_800,
            unpaid_orders_per_customer: 3,
            unpaid_orders_per_email: 3,
            unpaid_orders_per_address: 3,
            idempotency_ttl_s: 86_400,
            event_retention_s: 7_776_000,
            metrics_listen: None,
            trusted_proxies: String::new(),
            forwarded_header: "x-forwarded-for".into(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            max_connections: 10_000,
            max_connections_per_address: 256,
            secret_key: None,
            nats_url: None,
            redis_url: None,
            nats: RawNats::default(),
            webhooks: RawWebhooks {
                retry_schedule: "5s,300s,1800s,7200s,18000s,36000s,36000s".into(),
                jitter_ms: 1000,
                timeout_ms: 15_000,
                disable_after_s: 432_000,
                max_in_flight: 4,
                secret_overlap_s: 86_400,
                allow_http: false,
                allow_cidrs: String::new(),
                relay_interval_ms: 1000,
                relay_batch: 100,
                delivery_interval_ms: 1000,
                delivery_batch: 50,
                circuit_failures: 5,
                circuit_pause_ms: 60_000,
                shop_max_in_flight: 16,
                retention_s: 7_776_000,
                max_endpoints: 16,
            },
            payments: RawPayments::default(),
            gateway: RawGateway::default(),
            quotas: RawQuotas::default(),
            limits: RawLimits::default(),
            cors: RawCors::default(),
            realtime: RawRealtime::default(),
            cluster: RawCluster::default(),
            graphql: RawGraphql::default(),
            auth: RawAuth {
                issuer: "keel".into(),
                access_token_ttl_s: 900,
                refresh_token_ttl_s: 2_592_000,
                setup_token_ttl_s: 86_400,
                key_overlap_s: 86_400,
                key_cache_ms: 60_000,
                leeway_s: 30,
                login_account_max: 5,
                login_ip_max: 20,
                login_window_s: 900,
                mfa_token_ttl_s: 300,
                mfa_max_failures: 5,
                api_key_overlap_s: 86_400,
                publishable_key_cache_ms: 1_000,
                reset_token_ttl_s: 3_600,
                second_factor_max: 5,
                second_factor_window_s: 900,
                reset_account_max: 3,
                reset_ip_max: 20,
                reset_window_s: 3_600,
                hash_concurrency: 2,
                hash_per_address: 1,
                hash_queue_wait_ms: 2_000,
            },
            sqlite: RawSqlite {
                busy_timeout_ms: 5_000,
                acquire_timeout_ms: 5_000,
                readers: 4,
                synchronous: "full".into(),
                group_commit: true,
            },
            postgres: RawPostgres::default(),
        }
    }
}

impl Default for RawNats {
    fn default() -> Self {
        Self {
            stream: "KEEL_EVENTS".into(),
            subject_prefix: "keel.events".into(),
            duplicate_window_s: 120,
            ack_wait_s: 30,
            changes_subject: "keel.changes".into(),
            retry_schedule: "1s,5s,30s,300s,1800s".into(),
        }
    }
}

impl Default for RawPostgres {
    fn default() -> Self {
        Self {
            pool_size: 10,
            acquire_timeout_ms: 5_000,
        }
    }
}

/// A configuration problem: which key, and what is wrong. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    /// The environment variable naming the key (`KEEL_LISTEN`), or the file when the file
    /// itself is the problem.
    pub key: String,
    pub problem: String,
}

fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// `["sqlite", "readers"]` -> `KEEL_SQLITE__READERS`.
fn env_name(path: &[String]) -> String {
    format!("KEEL_{}", path.join("__").to_ascii_uppercase())
}

/// Environment variables that are not configuration keys.
fn is_reserved(key: &str) -> bool {
    key == "config"
        || key.ends_with("_file")
        || key.starts_with("test_")
        || key.starts_with("testdb_")
}

/// `KEEL_X_FILE=/path` provides `x` from the file's content (trailing newline removed), so
/// secrets can come from mounted files instead of the environment.
fn file_values(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, path) in env {
        let Some(key) = name
            .strip_prefix("KEEL_")
            .and_then(|k| k.strip_suffix("_FILE"))
        else {
            continue;
        };
        if env.contains_key(&format!("KEEL_{key}")) {
            return Err(err(
                name,
                format!("set together with KEEL_{key}; set only one"),
            ));
        }
        let content = std::fs::read_to_string(path)
            .map_err(|e| err(name, format!("cannot read {path}: {e}")))?;
        out.insert(
            key.to_ascii_lowercase(),
            content.trim_end_matches(['\n', '\r']).to_owned(),
        );
    }
    Ok(out)
}

/// Layers the sources. `env` is passed in (not read here) so tests stay hermetic.
pub fn load_raw(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<RawConfig, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(err(
                "KEEL_CONFIG",
                format!("config file {} does not exist", path.display()),
            ));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let from_env = env
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("KEEL_")
                .map(|k| (k.to_ascii_lowercase(), v.clone()))
        })
        .filter(|(k, _)| !is_reserved(k));
    fig = fig.merge(Serialized::defaults(nest(from_env)));
    fig = fig.merge(Serialized::defaults(nest(file_values(env)?.into_iter())));
    fig.extract::<RawConfig>().map_err(|e| {
        let key = if e.path.is_empty() {
            "KEEL_CONFIG".to_owned()
        } else {
            env_name(&e.path)
        };
        // figment's kind never includes the source document, but may quote the value: never
        // for secrets, whose type is a plain string and so cannot fail to parse.
        err(&key, e.kind.to_string())
    })
}

/// Turns `("sqlite__readers", "4")` pairs into a nested map. A value is read as a number
/// exactly where the default is a number, so `KEEL_SQLITE__READERS=4` means what `readers = 4`
/// means in TOML, while `KEEL_LISTEN=8080` stays a string (and is then refused as an address).
fn nest(pairs: impl Iterator<Item = (String, String)>) -> serde_json::Value {
    let defaults = serde_json::to_value(RawConfig::default()).expect("defaults serialize");
    let mut root = serde_json::Map::new();
    for (key, value) in pairs {
        let parts: Vec<&str> = key.split("__").collect();
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = node
                .entry((*part).to_owned())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(serde_json::Map::new());
            }
            node = entry.as_object_mut().expect("just made an object");
        }
        let leaf = parts[parts.len() - 1].to_owned();
        let numeric = parts
            .iter()
            .try_fold(&defaults, |node, part| node.get(part))
            .is_some_and(serde_json::Value::is_number);
        let v = match value.parse::<u64>() {
            Ok(n) if numeric => serde_json::Value::from(n),
            _ => serde_json::Value::String(value),
        };
        node.insert(leaf, v);
    }
    serde_json::Value::Object(root)
}

/// A boolean from TOML (`true`) or from the environment (the string `"true"`).
fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) => match t.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(serde::de::Error::custom("must be `true` or `false`")),
        },
    }
}

mod settings;
pub use settings::{
    DatabaseSettings, LogFormat, NatsSettings, PaymentSettings, Settings, StripeSettings,
    redact_url,
};

mod describe;
mod edge;
mod realtime;
pub use realtime::{RawGraphql, RawRealtime};
mod cluster;
pub use cluster::{ClusterSettings, RawCluster, Role};
#[cfg(test)]
mod tests;
