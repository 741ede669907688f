//! The validated configuration: [`Settings`] from a [`RawConfig`], each section checked into
//! the type its crate runs with, and `keel config check`'s view of it (secrets hidden).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The database, with only the settings that apply to it (invalid mixes cannot exist).
#[derive(Clone)]
pub enum DatabaseSettings {
    Sqlite(SqliteSettings),
    Postgres {
        settings: Box<PgSettings>,
        /// The URL as configured, kept secret (it may hold a password).
        url: SecretString,
    },
}

/// Written by hand: the driver's connect options would print the password.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(s) => f.debug_tuple("Sqlite").field(s).finish(),
            Self::Postgres { settings, url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url.expose_secret()))
                .field("pool_size", &settings.pool_size)
                .field("acquire_timeout", &settings.acquire_timeout)
                .finish(),
        }
    }
}

/// The validated configuration the program runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The separate listener of `/metrics`, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// What one client may hold: header and idle timeouts, open connections.
    pub connections: crate::serve::ConnectionLimits,
    /// How the client address behind trusted proxies is found.
    pub client_addr: keel_http::client::ClientAddrPolicy,
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    pub log_format: LogFormat,
    pub http: keel_http::HttpSettings,
    pub shutdown_grace: Duration,
    pub worker_threads: usize,
    pub maintenance_interval: Duration,
    /// `max-age` of public storefront reads, in seconds.
    pub store_cache_max_age_s: u64,
    /// Byte budget of this node's storefront read cache (0: off).
    pub store_cache_bytes: usize,
    pub orders: keel_orders::service::OrdersSettings,
    /// How long idempotent responses are replayed.
    pub idempotency_ttl: time::Duration,
    /// Age after which relayed events are deleted.
    pub event_retention: time::Duration,
    pub webhooks: keel_webhooks::service::WebhookSettings,
    pub payments: PaymentSettings,
    pub gateway: Option<keel_http::gateway::GatewaySettings>,
    /// The deployment's quota defaults (`None`: no quota).
    pub quotas: Vec<(keel_kernel::quota::Quota, Option<u64>)>,
    pub limits: keel_http::ratelimit::LimitSettings,
    /// The admin console's exact origins (CORS with credentials), and a preflight's lifetime.
    pub cors_admin_origins: Vec<keel_identity::domain::api_key::Origin>,
    pub cors_max_age_s: u64,
    /// Redis for shared rate limits, when configured, and how long a decision waits for it.
    pub redis_url: Option<SecretString>,
    pub redis_timeout: Duration,
    pub worker: keel_worker::WorkerSettings,
    /// The JetStream bus, when configured.
    pub nats: Option<NatsSettings>,
    /// The master key as configured (base64url); `None` means "the embedded key file".
    pub secret_key: Option<SecretString>,
    pub auth: keel_identity::services::auth::AuthSettings,
    pub realtime: keel_http::realtime::RealtimeSettings,
    pub graphql: (keel_graphql::GraphqlSettings, keel_graphql::WsSettings),
    pub cluster: super::ClusterSettings,
}

fn seconds(key: &str, v: u64) -> Result<time::Duration, ConfigError> {
    let v = i64::try_from(positive(key, v)?).map_err(|_| err(key, "too large"))?;
    Ok(time::Duration::seconds(v))
}

/// The longest a node may price cart answers with pricing setup it read.
const MAX_PRICING_CACHE_MS: i64 = 60_000;

/// How long a node may trust what it read: zero (no cache) up to `max` milliseconds, `why`
/// being what the bound protects.
fn cache_time(key: &str, ms: u64, max: i64, why: &str) -> Result<time::Duration, ConfigError> {
    i64::try_from(ms)
        .ok()
        .filter(|ms| *ms <= max)
        .map(time::Duration::milliseconds)
        .ok_or_else(|| err(key, format!("at most {max} ({why})")))
}

/// The storefront read cache's `max-age` (at most a year) and byte budget (at most 1 GiB).
fn store_cache(raw: &RawConfig) -> Result<(u64, usize), ConfigError> {
    if raw.store_cache_max_age_s > 31_536_000 {
        return Err(err(
            "KEEL_STORE_CACHE_MAX_AGE_S",
            "must be at most 31536000 (one year)",
        ));
    }
    match usize::try_from(raw.store_cache_bytes) {
        Ok(n) if n <= 1_073_741_824 => Ok((raw.store_cache_max_age_s, n)),
        _ => Err(err(
            "KEEL_STORE_CACHE_BYTES",
            "must be at most 1073741824 (1 GiB)",
        )),
    }
}

fn orders_settings(raw: &RawConfig) -> Result<keel_orders::service::OrdersSettings, ConfigError> {
    let cap = |key: &str, v: u32| count(key, v).map(i64::from);
    Ok(keel_orders::service::OrdersSettings {
        unpaid_order_ttl: seconds("KEEL_UNPAID_ORDER_TTL_S", raw.unpaid_order_ttl_s)?,
        pricing_cache: cache_time(
            "KEEL_PRICING_CACHE_MS",
            raw.pricing_cache_ms,
            MAX_PRICING_CACHE_MS,
            "a pricing change must reach every node's cart answers within a minute",
        )?,
        cart_idle_ttl: seconds("KEEL_CART_IDLE_TTL_S", raw.cart_idle_ttl_s)?,
        unpaid_per_customer: cap(
            "KEEL_UNPAID_ORDERS_PER_CUSTOMER",
            raw.unpaid_orders_per_customer,
        )?,
        unpaid_per_email: cap("KEEL_UNPAID_ORDERS_PER_EMAIL", raw.unpaid_orders_per_email)?,
        unpaid_per_address: cap(
            "KEEL_UNPAID_ORDERS_PER_ADDRESS",
            raw.unpaid_orders_per_address,
        )?,
    })
}

/// The longest a node may trust a publishable key it read.
const MAX_PUBLISHABLE_KEY_CACHE_MS: i64 = 60_000;

fn auth_settings(
    raw: &RawAuth,
) -> Result<keel_identity::services::auth::AuthSettings, ConfigError> {
    if raw.issuer.trim().is_empty() {
        return Err(err("KEEL_AUTH__ISSUER", "must not be empty"));
    }
    let cache = positive("KEEL_AUTH__KEY_CACHE_MS", raw.key_cache_ms)?;
    Ok(keel_identity::services::auth::AuthSettings {
        issuer: raw.issuer.clone(),
        access_ttl: seconds("KEEL_AUTH__ACCESS_TOKEN_TTL_S", raw.access_token_ttl_s)?,
        refresh_ttl: seconds("KEEL_AUTH__REFRESH_TOKEN_TTL_S", raw.refresh_token_ttl_s)?,
        setup_ttl: seconds("KEEL_AUTH__SETUP_TOKEN_TTL_S", raw.setup_token_ttl_s)?,
        key_overlap: seconds("KEEL_AUTH__KEY_OVERLAP_S", raw.key_overlap_s)?,
        key_cache: time::Duration::milliseconds(
            i64::try_from(cache).map_err(|_| err("KEEL_AUTH__KEY_CACHE_MS", "too large"))?,
        ),
        // Zero leeway is allowed: a single node needs none.
        leeway: time::Duration::seconds(
            i64::try_from(raw.leeway_s).map_err(|_| err("KEEL_AUTH__LEEWAY_S", "too large"))?,
        ),
        login_account_max: u32::try_from(positive(
            "KEEL_AUTH__LOGIN_ACCOUNT_MAX",
            u64::from(raw.login_account_max),
        )?)
        .map_err(|_| err("KEEL_AUTH__LOGIN_ACCOUNT_MAX", "too large"))?,
        login_ip_max: u32::try_from(positive(
            "KEEL_AUTH__LOGIN_IP_MAX",
            u64::from(raw.login_ip_max),
        )?)
        .map_err(|_| err("KEEL_AUTH__LOGIN_IP_MAX", "too large"))?,
        login_window: seconds("KEEL_AUTH__LOGIN_WINDOW_S", raw.login_window_s)?,
        mfa_token_ttl: seconds("KEEL_AUTH__MFA_TOKEN_TTL_S", raw.mfa_token_ttl_s)?,
        mfa_max_failures: u32::try_from(positive(
            "KEEL_AUTH__MFA_MAX_FAILURES",
            u64::from(raw.mfa_max_failures),
        )?)
        .map_err(|_| err("KEEL_AUTH__MFA_MAX_FAILURES", "too large"))?,
        api_key_overlap: seconds("KEEL_AUTH__API_KEY_OVERLAP_S", raw.api_key_overlap_s)?,
        // Zero is allowed: no cache.
        publishable_key_cache: cache_time(
            "KEEL_AUTH__PUBLISHABLE_KEY_CACHE_MS",
            raw.publishable_key_cache_ms,
            MAX_PUBLISHABLE_KEY_CACHE_MS,
            "a revocation must reach every node within a minute",
        )?,
        reset_token_ttl: seconds("KEEL_AUTH__RESET_TOKEN_TTL_S", raw.reset_token_ttl_s)?,
        second_factor_max: count("KEEL_AUTH__SECOND_FACTOR_MAX", raw.second_factor_max)?,
        second_factor_window: seconds(
            "KEEL_AUTH__SECOND_FACTOR_WINDOW_S",
            raw.second_factor_window_s,
        )?,
        reset_account_max: count("KEEL_AUTH__RESET_ACCOUNT_MAX", raw.reset_account_max)?,
        reset_ip_max: count("KEEL_AUTH__RESET_IP_MAX", raw.reset_ip_max)?,
        reset_window: seconds("KEEL_AUTH__RESET_WINDOW_S", raw.reset_window_s)?,
        hash_concurrency: usize::try_from(count(
            "KEEL_AUTH__HASH_CONCURRENCY",
            raw.hash_concurrency,
        )?)
        .map_err(|_| err("KEEL_AUTH__HASH_CONCURRENCY", "too large"))?,
        hash_per_address: usize::try_from(count(
            "KEEL_AUTH__HASH_PER_ADDRESS",
            raw.hash_per_address,
        )?)
        .map_err(|_| err("KEEL_AUTH__HASH_PER_ADDRESS", "too large"))?,
        // Zero is allowed: refuse at once when every place is taken.
        hash_queue_wait: Duration::from_millis(raw.hash_queue_wait_ms),
    })
}

/// `KEEL_CORS__ADMIN_ORIGINS`: exact origins, comma-separated.
fn admin_origins(raw: &str) -> Result<Vec<keel_identity::domain::api_key::Origin>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            keel_identity::domain::api_key::Origin::parse(o)
                .map_err(|why| err("KEEL_CORS__ADMIN_ORIGINS", why))
        })
        .collect()
}

fn limit_settings(
    raw: &super::RawLimits,
) -> Result<keel_http::ratelimit::LimitSettings, ConfigError> {
    // A full bucket's span (interval × burst) below 2^52 ms: every arrival time stays an
    // exact integer in Redis's Lua, where numbers are doubles (exact below 2^53).
    let limit = |name: &str, l: super::RawLimit| {
        keel_kernel::ratelimit::Limit::bounded(l.interval_ms, l.burst).ok_or_else(|| {
            err(
                &format!("KEEL_LIMITS__{name}__INTERVAL_MS / __BURST"),
                "must both be greater than 0, their product below 4503599627370496 (2^52 ms)",
            )
        })
    };
    Ok(keel_http::ratelimit::LimitSettings {
        enabled: raw.enabled,
        memory_keys: usize::try_from(count("KEEL_LIMITS__MEMORY_KEYS", raw.memory_keys)?)
            .map_err(|_| err("KEEL_LIMITS__MEMORY_KEYS", "too large"))?,
        cart_create: limit("CART_CREATE", raw.cart_create)?,
        checkout: limit("CHECKOUT", raw.checkout)?,
        promotion_per_address: limit("PROMOTION_ADDRESS", raw.promotion_address)?,
        promotion_per_cart: limit("PROMOTION_CART", raw.promotion_cart)?,
        store_read: limit("STORE_READ", raw.store_read)?,
        store_write: limit("STORE_WRITE", raw.store_write)?,
        admin_read: limit("ADMIN_READ", raw.admin_read)?,
        admin_write: limit("ADMIN_WRITE", raw.admin_write)?,
        auth: limit("AUTH", raw.auth)?,
        client: limit("CLIENT", raw.client)?,
        shop: limit("SHOP", raw.shop)?,
    })
}

/// Payments, validated.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    pub service: keel_payments::service::PaymentsSettings,
    pub reconcile_interval: Duration,
    pub reconcile_batch: i64,
    pub stripe: StripeSettings,
}

/// The Stripe-compatible provider, validated.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_base: String,
    pub connect_timeout: Duration,
    pub policy: keel_resilience::Policy,
}

/// The quota defaults: each an exact count or `none`.
fn quota_settings(
    raw: &super::RawQuotas,
) -> Result<Vec<(keel_kernel::quota::Quota, Option<u64>)>, ConfigError> {
    use keel_kernel::quota::Quota;
    [
        (Quota::Products, &raw.products),
        (Quota::Variants, &raw.variants),
        (Quota::StockLocations, &raw.stock_locations),
        (Quota::WebhookEndpoints, &raw.webhook_endpoints),
        (Quota::ApiKeys, &raw.api_keys),
        (Quota::StaffUsers, &raw.staff_users),
        (Quota::OpenCarts, &raw.open_carts),
    ]
    .into_iter()
    .map(|(quota, value)| {
        let value = value.trim();
        if value.eq_ignore_ascii_case("none") {
            return Ok((quota, None));
        }
        value
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(|n| (quota, Some(n)))
            .ok_or_else(|| {
                err(
                    &format!("KEEL_QUOTAS__{}", quota.name().to_ascii_uppercase()),
                    "must be a whole number or `none`",
                )
            })
    })
    .collect()
}

/// Gateway mode, validated: an upstream URL without credentials, query or fragment; routes
/// as exact prefixes with an owner; a signing secret when a prefix needs it.
fn gateway_settings(
    raw: &super::RawGateway,
    issuer: &str,
) -> Result<Option<keel_http::gateway::GatewaySettings>, ConfigError> {
    use keel_http::gateway::Owner;
    let Some(upstream) = raw
        .upstream
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let url = keel_http::gateway::Url::parse(upstream)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .filter(|u| u.host().is_some() && u.username().is_empty() && u.password().is_none())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| {
            err(
                "KEEL_GATEWAY__UPSTREAM",
                "must be an http(s) URL such as https://legacy.internal, without credentials, query or fragment",
            )
        })?;
    let mut routes = Vec::new();
    for pair in raw
        .routes
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let bad = || {
            err(
                "KEEL_GATEWAY__ROUTES",
                "must be PREFIX=OWNER pairs such as /v1/legacy=legacy,/admin=legacy-auth,/v1/store=keel",
            )
        };
        let (prefix, owner) = pair.split_once('=').ok_or_else(bad)?;
        let owner = match owner.trim() {
            "legacy" => Owner::Legacy,
            "legacy-auth" => Owner::LegacyAuthenticated,
            "keel" => Owner::Keel,
            _ => return Err(bad()),
        };
        let prefix = prefix.trim();
        if !prefix.starts_with('/')
            || prefix.contains(['?', '#', ' ', '*', '%', '\\'])
            || prefix.split('/').any(|seg| seg == "." || seg == "..")
            || routes.iter().any(|(p, _)| p == prefix)
        {
            return Err(bad());
        }
        routes.push((prefix.to_owned(), owner));
    }
    let signing_secret = raw
        .signing_secret
        .as_ref()
        .map(|s| secrecy::ExposeSecret::expose_secret(s).as_bytes().to_vec());
    let needs_secret = routes.iter().any(|(_, o)| *o == Owner::LegacyAuthenticated);
    if needs_secret && signing_secret.as_ref().is_none_or(|s| s.len() < 32) {
        return Err(err(
            "KEEL_GATEWAY__SIGNING_SECRET",
            "must be at least 32 bytes when a route is `legacy-auth`",
        ));
    }
    // Signed principals travel only where nobody on the way can read or change them.
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    if needs_secret && url.scheme() != "https" && !loopback {
        return Err(err(
            "KEEL_GATEWAY__UPSTREAM",
            "must be https when a route is `legacy-auth` (plain http only to a loopback host)",
        ));
    }
    let ms = |key: &str, v: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(positive(key, v)?))
    };
    Ok(Some(keel_http::gateway::GatewaySettings {
        upstream: url,
        routes,
        signing_secret,
        connect_timeout: ms("KEEL_GATEWAY__CONNECT_TIMEOUT_MS", raw.connect_timeout_ms)?,
        policy: keel_resilience::Policy {
            failures_to_open: count("KEEL_GATEWAY__CIRCUIT_FAILURES", raw.circuit_failures)?,
            open_for: ms("KEEL_GATEWAY__CIRCUIT_OPEN_MS", raw.circuit_open_ms)?,
            half_open_probes: 1,
            // A forwarded body streams through once: never retried.
            retry_delays: Vec::new(),
            retry_jitter: Duration::ZERO,
            attempt_timeout: ms("KEEL_GATEWAY__TIMEOUT_MS", raw.timeout_ms)?,
            max_concurrent: count("KEEL_GATEWAY__MAX_CONCURRENT", raw.max_concurrent)?,
            queue_wait: Duration::from_millis(raw.queue_wait_ms),
        },
        keel_issuer: issuer.to_owned(),
    }))
}

fn payment_settings(raw: &super::RawPayments) -> Result<PaymentSettings, ConfigError> {
    let ms = |key: &str, v: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(positive(key, v)?))
    };
    let time_ms = |key: &str, v: u64| -> Result<time::Duration, ConfigError> {
        i64::try_from(positive(key, v)?)
            .map(time::Duration::milliseconds)
            .map_err(|_| err(key, "too large"))
    };
    let s = &raw.stripe;
    let api_base = s.api_base.trim_end_matches('/').to_owned();
    // The adapter refuses anything but https (or plain http to a loopback simulator).
    if api_base.is_empty() {
        return Err(err("KEEL_PAYMENTS__STRIPE__API_BASE", "must be a URL"));
    }
    let delays = keel_webhooks::domain::parse_schedule(&s.retry_delays).ok_or_else(|| {
        err(
            "KEEL_PAYMENTS__STRIPE__RETRY_DELAYS",
            "must be a comma-separated list of delays such as `100ms,500ms,2000ms`",
        )
    })?;
    let reconcile_interval = ms(
        "KEEL_PAYMENTS__RECONCILE_INTERVAL_MS",
        raw.reconcile_interval_ms,
    )?;
    Ok(PaymentSettings {
        service: keel_payments::service::PaymentsSettings {
            webhook_tolerance: seconds(
                "KEEL_PAYMENTS__WEBHOOK_TOLERANCE_S",
                raw.webhook_tolerance_s,
            )?,
            reconcile_after: seconds("KEEL_PAYMENTS__RECONCILE_AFTER_S", raw.reconcile_after_s)?,
            reconcile_every: time_ms(
                "KEEL_PAYMENTS__RECONCILE_INTERVAL_MS",
                raw.reconcile_interval_ms,
            )?,
            refund_retry: time_ms("KEEL_PAYMENTS__REFUND_RETRY_MS", raw.refund_retry_ms)?,
        },
        reconcile_interval,
        reconcile_batch: i64::from(count(
            "KEEL_PAYMENTS__RECONCILE_BATCH",
            raw.reconcile_batch,
        )?),
        stripe: StripeSettings {
            api_base,
            connect_timeout: ms(
                "KEEL_PAYMENTS__STRIPE__CONNECT_TIMEOUT_MS",
                s.connect_timeout_ms,
            )?,
            policy: keel_resilience::Policy {
                failures_to_open: count(
                    "KEEL_PAYMENTS__STRIPE__CIRCUIT_FAILURES",
                    s.circuit_failures,
                )?,
                open_for: ms("KEEL_PAYMENTS__STRIPE__CIRCUIT_OPEN_MS", s.circuit_open_ms)?,
                half_open_probes: count(
                    "KEEL_PAYMENTS__STRIPE__HALF_OPEN_PROBES",
                    s.half_open_probes,
                )?,
                retry_delays: delays
                    .into_iter()
                    .map(|d| {
                        Duration::from_millis(u64::try_from(d.whole_milliseconds()).unwrap_or(0))
                    })
                    .collect(),
                retry_jitter: Duration::from_millis(s.retry_jitter_ms),
                attempt_timeout: ms("KEEL_PAYMENTS__STRIPE__TIMEOUT_MS", s.timeout_ms)?,
                max_concurrent: count("KEEL_PAYMENTS__STRIPE__MAX_CONCURRENT", s.max_concurrent)?,
                // Zero is allowed: refuse at once when every slot is taken.
                queue_wait: Duration::from_millis(s.queue_wait_ms),
            },
        },
    })
}

/// The JetStream bus, validated.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: SecretString,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window: Duration,
    pub retry_schedule: Vec<Duration>,
    /// Redelivery of a message a node took but never settled (it died).
    pub ack_wait: Duration,
    /// Where nodes announce writes (cache invalidation).
    pub changes_subject: String,
}

fn nats_settings(
    url: Option<SecretString>,
    raw: &RawNats,
) -> Result<Option<NatsSettings>, ConfigError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let schedule = keel_webhooks::domain::parse_schedule(&raw.retry_schedule).ok_or_else(|| {
        err(
            "KEEL_NATS__RETRY_SCHEDULE",
            "must be a comma-separated list of delays such as `1s,5s`",
        )
    })?;
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !ok_name(&raw.stream) {
        return Err(err(
            "KEEL_NATS__STREAM",
            "must be letters, digits, `_` or `-`",
        ));
    }
    if raw.subject_prefix.is_empty() || raw.subject_prefix.contains([' ', '*', '>']) {
        return Err(err(
            "KEEL_NATS__SUBJECT_PREFIX",
            "must be a subject such as `keel.events`",
        ));
    }
    let changes = &raw.changes_subject;
    if changes.is_empty()
        || changes.contains([' ', '*', '>'])
        || changes.starts_with(&format!("{}.", raw.subject_prefix))
    {
        return Err(err(
            "KEEL_NATS__CHANGES_SUBJECT",
            "must be a subject such as `keel.changes`, outside KEEL_NATS__SUBJECT_PREFIX",
        ));
    }
    // A publisher that froze loses the relay position after the ack wait, and the next one
    // publishes what it may have sent again: the repeat must fall inside the window.
    if raw.ack_wait_s >= raw.duplicate_window_s {
        return Err(err(
            "KEEL_NATS__ACK_WAIT_S",
            "must be below KEEL_NATS__DUPLICATE_WINDOW_S (a re-publish after a frozen publisher must be dropped as a repeat)",
        ));
    }
    Ok(Some(NatsSettings {
        changes_subject: changes.clone(),
        url,
        stream: raw.stream.clone(),
        subject_prefix: raw.subject_prefix.clone(),
        duplicate_window: Duration::from_secs(positive(
            "KEEL_NATS__DUPLICATE_WINDOW_S",
            raw.duplicate_window_s,
        )?),
        ack_wait: Duration::from_secs(positive("KEEL_NATS__ACK_WAIT_S", raw.ack_wait_s)?),
        retry_schedule: schedule
            .into_iter()
            .map(|d| Duration::from_millis(u64::try_from(d.whole_milliseconds()).unwrap_or(0)))
            .collect(),
    }))
}

fn webhook_settings(
    raw: &RawWebhooks,
) -> Result<keel_webhooks::service::WebhookSettings, ConfigError> {
    use keel_webhooks::{
        domain::{DeliveryPolicy, parse_schedule},
        ssrf::SsrfPolicy,
    };
    let schedule = parse_schedule(&raw.retry_schedule).ok_or_else(|| {
        err(
            "KEEL_WEBHOOKS__RETRY_SCHEDULE",
            "must be a comma-separated list of delays such as `5s,300s` or `100ms`",
        )
    })?;
    let allow_cidrs = cidr_list(
        "KEEL_WEBHOOKS__ALLOW_CIDRS",
        &raw.allow_cidrs,
        "`127.0.0.1/32,::1/128`",
    )?;
    let ms = |key: &str, v: u64| -> Result<time::Duration, ConfigError> {
        i64::try_from(v)
            .map(time::Duration::milliseconds)
            .map_err(|_| err(key, "too large"))
    };
    Ok(keel_webhooks::service::WebhookSettings {
        ssrf: SsrfPolicy {
            allow_http: raw.allow_http,
            allow_cidrs,
        },
        rotation_overlap: seconds("KEEL_WEBHOOKS__SECRET_OVERLAP_S", raw.secret_overlap_s)?,
        policy: DeliveryPolicy {
            schedule,
            jitter: ms("KEEL_WEBHOOKS__JITTER_MS", raw.jitter_ms)?,
            timeout: ms(
                "KEEL_WEBHOOKS__TIMEOUT_MS",
                positive("KEEL_WEBHOOKS__TIMEOUT_MS", raw.timeout_ms)?,
            )?,
            disable_after: seconds("KEEL_WEBHOOKS__DISABLE_AFTER_S", raw.disable_after_s)?,
            max_in_flight: i64::from(
                u32::try_from(positive(
                    "KEEL_WEBHOOKS__MAX_IN_FLIGHT",
                    u64::from(raw.max_in_flight),
                )?)
                .unwrap_or(u32::MAX),
            ),
            circuit_failures: i64::from(count(
                "KEEL_WEBHOOKS__CIRCUIT_FAILURES",
                raw.circuit_failures,
            )?),
            circuit_pause: ms(
                "KEEL_WEBHOOKS__CIRCUIT_PAUSE_MS",
                positive("KEEL_WEBHOOKS__CIRCUIT_PAUSE_MS", raw.circuit_pause_ms)?,
            )?,
            shop_max_in_flight: if raw.shop_max_in_flight < raw.delivery_batch {
                i64::from(count(
                    "KEEL_WEBHOOKS__SHOP_MAX_IN_FLIGHT",
                    raw.shop_max_in_flight,
                )?)
            } else {
                return Err(err(
                    "KEEL_WEBHOOKS__SHOP_MAX_IN_FLIGHT",
                    "must be below KEEL_WEBHOOKS__DELIVERY_BATCH, so that no shop can take every delivery slot of a node",
                ));
            },
        },
        retention: seconds("KEEL_WEBHOOKS__RETENTION_S", raw.retention_s)?,
        max_endpoints: i64::from(count("KEEL_WEBHOOKS__MAX_ENDPOINTS", raw.max_endpoints)?),
    })
}

/// A comma-separated list of address ranges (`key` names the setting, `example` shows one).
pub(super) fn cidr_list(
    key: &str,
    raw: &str,
    example: &str,
) -> Result<Vec<keel_kernel::net::Cidr>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            keel_kernel::net::Cidr::parse(c).ok_or_else(|| {
                err(
                    key,
                    format!("must be comma-separated ranges such as {example}"),
                )
            })
        })
        .collect()
}

/// An exact count greater than zero.
fn count(key: &str, v: u32) -> Result<u32, ConfigError> {
    if v == 0 {
        Err(err(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

pub(super) fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(err(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

fn millis(key: &str, v: u64) -> Result<Duration, ConfigError> {
    positive(key, v).map(Duration::from_millis)
}

/// Removes the password from a database URL for display.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The database settings the URL selects, with only that backend's options.
fn database(raw: &RawConfig) -> Result<DatabaseSettings, ConfigError> {
    let url = raw.database_url.as_ref().map_or_else(
        || format!("sqlite://{}", raw.data_dir.join("keel.db").display()),
        |u| u.expose_secret().to_owned(),
    );
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(err(
                "KEEL_DATABASE_URL",
                "sqlite:// needs a file path, e.g. sqlite://./keel-data/keel.db",
            ));
        }
        let synchronous = match raw.sqlite.synchronous.as_str() {
            "full" => Synchronous::Full,
            "extra" => Synchronous::Extra,
            "normal" => Synchronous::Normal,
            other => {
                return Err(err(
                    "KEEL_SQLITE__SYNCHRONOUS",
                    format!(
                        "`{}` is not one of full, extra, normal",
                        other.chars().take(32).collect::<String>()
                    ),
                ));
            }
        };
        if raw.sqlite.readers == 0 {
            return Err(err("KEEL_SQLITE__READERS", "must be greater than 0"));
        }
        Ok(DatabaseSettings::Sqlite(SqliteSettings {
            path: PathBuf::from(path),
            busy_timeout: millis("KEEL_SQLITE__BUSY_TIMEOUT_MS", raw.sqlite.busy_timeout_ms)?,
            acquire_timeout: millis(
                "KEEL_SQLITE__ACQUIRE_TIMEOUT_MS",
                raw.sqlite.acquire_timeout_ms,
            )?,
            readers: raw.sqlite.readers,
            synchronous,
            group_commit: raw.sqlite.group_commit,
        }))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The parse error is not shown: it could quote the password.
        let connect = url
            .parse()
            .map_err(|_| err("KEEL_DATABASE_URL", "not a valid postgres:// URL"))?;
        if raw.postgres.pool_size == 0 {
            return Err(err("KEEL_POSTGRES__POOL_SIZE", "must be greater than 0"));
        }
        Ok(DatabaseSettings::Postgres {
            settings: Box::new(PgSettings {
                connect,
                pool_size: raw.postgres.pool_size,
                acquire_timeout: millis(
                    "KEEL_POSTGRES__ACQUIRE_TIMEOUT_MS",
                    raw.postgres.acquire_timeout_ms,
                )?,
            }),
            url: SecretString::from(url),
        })
    } else {
        let scheme = url
            .split("://")
            .next()
            .filter(|_| url.contains("://"))
            .unwrap_or("(none)");
        Err(err(
            "KEEL_DATABASE_URL",
            format!(
                "unsupported scheme `{}`; use sqlite://<path> or postgres://…",
                scheme.chars().take(16).collect::<String>()
            ),
        ))
    }
}

fn worker_settings(raw: &RawWebhooks) -> Result<keel_worker::WorkerSettings, ConfigError> {
    Ok(keel_worker::WorkerSettings {
        relay_interval: millis("KEEL_WEBHOOKS__RELAY_INTERVAL_MS", raw.relay_interval_ms)?,
        relay_batch: i64::from(
            positive("KEEL_WEBHOOKS__RELAY_BATCH", u64::from(raw.relay_batch))
                .map(|_| raw.relay_batch)?,
        ),
        delivery_interval: millis(
            "KEEL_WEBHOOKS__DELIVERY_INTERVAL_MS",
            raw.delivery_interval_ms,
        )?,
        delivery_batch: i64::from(
            positive(
                "KEEL_WEBHOOKS__DELIVERY_BATCH",
                u64::from(raw.delivery_batch),
            )
            .map(|_| raw.delivery_batch)?,
        ),
    })
}

/// The auth settings as `keel config check` shows them.
fn auth_json(a: &keel_identity::services::auth::AuthSettings) -> serde_json::Value {
    serde_json::json!({
        "issuer": a.issuer,
        "access_token_ttl_s": a.access_ttl.whole_seconds(),
        "refresh_token_ttl_s": a.refresh_ttl.whole_seconds(),
        "setup_token_ttl_s": a.setup_ttl.whole_seconds(),
        "key_overlap_s": a.key_overlap.whole_seconds(),
        "key_cache_ms": a.key_cache.whole_milliseconds(),
        "leeway_s": a.leeway.whole_seconds(),
        "login_account_max": a.login_account_max,
        "login_ip_max": a.login_ip_max,
        "login_window_s": a.login_window.whole_seconds(),
        "mfa_token_ttl_s": a.mfa_token_ttl.whole_seconds(),
        "mfa_max_failures": a.mfa_max_failures,
        "api_key_overlap_s": a.api_key_overlap.whole_seconds(),
        "publishable_key_cache_ms": a.publishable_key_cache.whole_milliseconds(),
        "reset_token_ttl_s": a.reset_token_ttl.whole_seconds(),
        "second_factor_max": a.second_factor_max,
        "second_factor_window_s": a.second_factor_window.whole_seconds(),
        "reset_account_max": a.reset_account_max,
        "reset_ip_max": a.reset_ip_max,
        "reset_window_s": a.reset_window.whole_seconds(),
        "hash_concurrency": a.hash_concurrency,
        "hash_per_address": a.hash_per_address,
        "hash_queue_wait_ms": a.hash_queue_wait.as_millis(),
    })
}

impl Settings {
    /// Validates the raw layers into settings, naming the first bad key.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            err(
                "KEEL_LISTEN",
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:8080",
                    raw.listen.chars().take(64).collect::<String>()
                ),
            )
        })?;
        let log_format = match raw.log_format.as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(err(
                    "KEEL_LOG_FORMAT",
                    format!(
                        "`{}` is not one of json, pretty",
                        other.chars().take(32).collect::<String>()
                    ),
                ));
            }
        };
        let body_limit_bytes =
            usize::try_from(positive("KEEL_BODY_LIMIT_BYTES", raw.body_limit_bytes)?)
                .map_err(|_| err("KEEL_BODY_LIMIT_BYTES", "too large for this platform"))?;
        let metrics_listen = edge::metrics_listen(raw.metrics_listen.as_deref(), listen)?;
        let http = keel_http::HttpSettings {
            body_limit_bytes,
            request_timeout: millis("KEEL_REQUEST_TIMEOUT_MS", raw.request_timeout_ms)?,
            metrics_elsewhere: metrics_listen.is_some(),
            max_in_flight: usize::try_from(count("KEEL_MAX_IN_FLIGHT", raw.max_in_flight)?)
                .map_err(|_| err("KEEL_MAX_IN_FLIGHT", "too large for this platform"))?,
            max_in_flight_per_shop: usize::try_from(count(
                "KEEL_MAX_IN_FLIGHT_PER_SHOP",
                raw.max_in_flight_per_shop,
            )?)
            .map_err(|_| err("KEEL_MAX_IN_FLIGHT_PER_SHOP", "too large for this platform"))?,
            tls_terminated: raw.tls_terminated,
        };
        let shutdown_grace = millis("KEEL_SHUTDOWN_GRACE_MS", raw.shutdown_grace_ms)?;
        let database = database(&raw)?;
        let worker_threads = usize::try_from(positive(
            "KEEL_WORKER_THREADS",
            u64::from(raw.worker_threads),
        )?)
        .map_err(|_| err("KEEL_WORKER_THREADS", "too large for this platform"))?;
        let auth = auth_settings(&raw.auth)?;
        let orders = orders_settings(&raw)?;
        let (store_cache_max_age_s, store_cache_bytes) = store_cache(&raw)?;
        Ok(Self {
            listen,
            metrics_listen,
            connections: edge::connection_limits(&raw)?,
            client_addr: edge::client_addr(&raw)?,
            data_dir: raw.data_dir,
            database,
            log_format,
            http,
            shutdown_grace,
            worker_threads,
            maintenance_interval: millis(
                "KEEL_MAINTENANCE_INTERVAL_S",
                raw.maintenance_interval_s.saturating_mul(1_000),
            )?,
            store_cache_max_age_s,
            store_cache_bytes,
            orders,
            idempotency_ttl: seconds("KEEL_IDEMPOTENCY_TTL_S", raw.idempotency_ttl_s)?,
            event_retention: seconds("KEEL_EVENT_RETENTION_S", raw.event_retention_s)?,
            webhooks: webhook_settings(&raw.webhooks)?,
            payments: payment_settings(&raw.payments)?,
            gateway: gateway_settings(&raw.gateway, &raw.auth.issuer)?,
            quotas: quota_settings(&raw.quotas)?,
            limits: limit_settings(&raw.limits)?,
            cors_admin_origins: admin_origins(&raw.cors.admin_origins)?,
            cors_max_age_s: raw.cors.max_age_s,
            redis_url: raw.redis_url.clone(),
            redis_timeout: Duration::from_millis(positive(
                "KEEL_LIMITS__REDIS_TIMEOUT_MS",
                raw.limits.redis_timeout_ms,
            )?),
            nats: nats_settings(raw.nats_url, &raw.nats)?,
            worker: worker_settings(&raw.webhooks)?,
            realtime: super::realtime::settings(&raw.realtime)?,
            graphql: super::realtime::graphql(&raw.graphql, body_limit_bytes)?,
            cluster: super::cluster::settings(&raw.cluster)?,
            secret_key: raw.secret_key,
            auth,
        })
    }

    /// Loads and validates from a file (optional) and an environment map.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_raw(load_raw(file, env)?)
    }

    /// The effective configuration as shown by `keel config check`: secrets redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let database = match &self.database {
            DatabaseSettings::Sqlite(s) => serde_json::json!({
                "backend": "sqlite",
                "path": s.path,
                "busy_timeout_ms": s.busy_timeout.as_millis(),
                "acquire_timeout_ms": s.acquire_timeout.as_millis(),
                "readers": s.readers,
                "synchronous": format!("{:?}", s.synchronous).to_ascii_lowercase(),
                "group_commit": s.group_commit,
            }),
            DatabaseSettings::Postgres { settings, url } => serde_json::json!({
                "backend": "postgres",
                "url": redact_url(url.expose_secret()),
                "pool_size": settings.pool_size,
                "acquire_timeout_ms": settings.acquire_timeout.as_millis(),
            }),
        };
        serde_json::json!({
            "listen": self.listen.to_string(),
            "metrics_listen": self.metrics_listen.map(|a| a.to_string()),
            "trusted_proxies": self.client_addr.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "forwarded_header": edge::header_name(self.client_addr.header),
            "header_read_timeout_ms": self.connections.header_read_timeout.as_millis(),
            "idle_timeout_ms": self.connections.idle_timeout.as_millis(),
            "max_connections": self.connections.max_connections,
            "max_connections_per_address": self.connections.max_per_address,
            "data_dir": self.data_dir,
            "database": database,
            "log_format": self.log_format,
            "body_limit_bytes": self.http.body_limit_bytes,
            "request_timeout_ms": self.http.request_timeout.as_millis(),
            "shutdown_grace_ms": self.shutdown_grace.as_millis(),
            "worker_threads": self.worker_threads,
            "maintenance_interval_s": self.maintenance_interval.as_secs(),
            "store_cache_max_age_s": self.store_cache_max_age_s,
            "store_cache_bytes": self.store_cache_bytes,
            "unpaid_order_ttl_s": self.orders.unpaid_order_ttl.whole_seconds(),
            "pricing_cache_ms": self.orders.pricing_cache.whole_milliseconds(),
            "cart_idle_ttl_s": self.orders.cart_idle_ttl.whole_seconds(),
            "unpaid_orders_per_customer": self.orders.unpaid_per_customer,
            "unpaid_orders_per_email": self.orders.unpaid_per_email,
            "unpaid_orders_per_address": self.orders.unpaid_per_address,
            "idempotency_ttl_s": self.idempotency_ttl.whole_seconds(),
            "event_retention_s": self.event_retention.whole_seconds(),
            "nats": self.nats.as_ref().map(|n| serde_json::json!({
                "url": "***",
                "stream": n.stream,
                "subject_prefix": n.subject_prefix,
                "duplicate_window_s": n.duplicate_window.as_secs(),
                "ack_wait_s": n.ack_wait.as_secs(),
                "changes_subject": n.changes_subject,
                "retry_schedule_ms": n.retry_schedule.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            })),
            "webhooks": self.webhooks_json(),
            "secret_key": if self.secret_key.is_some() { "***" } else { "<data_dir>/secret.key (embedded mode)" },
            "auth": auth_json(&self.auth),
            "max_in_flight": self.http.max_in_flight,
            "max_in_flight_per_shop": self.http.max_in_flight_per_shop,
            "tls_terminated": self.http.tls_terminated,
            "quotas": self.quotas.iter().map(|(q, m)| (q.name().to_owned(), serde_json::json!(m))).collect::<serde_json::Map<_, _>>(),
            "gateway": self.gateway.as_ref().map(|g| serde_json::json!({
                "upstream": g.upstream.as_str(),
                "routes": g.routes.iter().map(|(p, o)| format!("{p}={o:?}")).collect::<Vec<_>>(),
                "timeout_ms": g.policy.attempt_timeout.as_millis(),
            })),
            "cors": {
                "admin_origins": self.cors_admin_origins.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "max_age_s": self.cors_max_age_s,
            },
            "limits": self.limits_json(),
            "realtime": self.realtime_json(),
            "graphql": self.graphql_json(),
            "cluster": self.cluster_json(),
        })
    }
}
