//! The Keel program: configuration, telemetry, wiring of the chosen backend into the HTTP
//! router, and the [`App`] that `keel serve` and the test kit both run.
#![forbid(unsafe_code)]

pub mod config;
pub mod jobs;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod telemetry;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use keel_http::{AppState, AppStateParts, metrics::Metrics};
use keel_identity::services::auth::{AuthPorts, AuthService, KeyRing};
use keel_kernel::clock::{Clock, SystemClock};
use utoipa_axum::router::OpenApiRouter;

pub use crate::{
    config::Settings,
    jobs::{MaintenanceReport, maintenance_pass, payments_pass},
    store::Store,
};

/// The consumer name of the webhook fan-out on the bus (its durable consumer and its rows in
/// the processed-event and dead-letter tables).
pub const WEBHOOK_CONSUMER: &str = "webhooks";

/// The JetStream stream when `KEEL_NATS_URL` is set (created if missing).
///
/// # Errors
/// When the server cannot be reached or refuses the stream.
pub async fn event_bus(
    settings: &Settings,
) -> anyhow::Result<Option<keel_worker::bus::JetStreamBus>> {
    let Some(n) = &settings.nats else {
        return Ok(None);
    };
    // The URL may carry credentials: the error names the setting, not the value.
    keel_worker::bus::JetStreamBus::connect(
        secrecy::ExposeSecret::expose_secret(&n.url),
        &n.stream,
        &n.subject_prefix,
        n.duplicate_window,
    )
    .await
    .map(Some)
    .context("cannot set up the event bus at KEEL_NATS_URL")
}

/// Connects to JetStream when `KEEL_NATS_URL` is set: the stream, and the durable consumer
/// that fans events out to webhook endpoints.
///
/// # Errors
/// When the server cannot be reached or refuses the stream or consumer.
pub async fn nats(settings: &Settings, store: &Store) -> anyhow::Result<Option<keel_worker::Nats>> {
    let Some(n) = &settings.nats else {
        return Ok(None);
    };
    let Some(bus) = event_bus(settings).await? else {
        return Ok(None);
    };
    let fan_out = keel_worker::bus::Consumer::new(
        &bus,
        WEBHOOK_CONSUMER,
        store.consumers(),
        Arc::new(keel_worker::bus::WebhookFanOut {
            store: store.webhooks(),
        }),
        n.retry_schedule.clone(),
        n.ack_wait,
        Arc::new(SystemClock),
    )
    .await
    .context("cannot create the webhook consumer on the event bus")?;
    Ok(Some(keel_worker::Nats {
        bus,
        fan_out: Arc::new(fan_out),
        hold: n.ack_wait,
    }))
}

/// The node's realtime side and its worker, sharing one hub, and the relay's wake (pinged
/// after every committed write).
async fn realtime_and_worker(
    settings: &Settings,
    store: &Store,
    webhooks: &keel_webhooks::service::WebhooksService,
) -> anyhow::Result<(
    Arc<keel_http::realtime::Realtime>,
    Arc<tokio::sync::Notify>,
    keel_worker::Worker,
)> {
    let realtime = Arc::new(keel_http::realtime::Realtime::new(settings.realtime));
    let wake = Arc::new(tokio::sync::Notify::new());
    let worker = worker(settings, store, webhooks.clone(), wake.clone()).await?;
    let worker = keel_worker::Worker {
        hub: realtime.hub.clone(),
        ..worker
    };
    Ok((realtime, wake, worker))
}

/// A bound, ready-to-run Keel server.
#[derive(Debug)]
pub struct App {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    /// `/metrics` on its own listener (`KEEL_METRICS_LISTEN`), when configured.
    metrics_listener: Option<(tokio::net::TcpListener, axum::Router)>,
    metrics: Arc<Metrics>,
    store: Store,
    grace: Duration,
    settings: Settings,
    worker: keel_worker::Worker,
    payments: keel_payments::service::PaymentsService,
    scheduler: keel_worker::schedule::Scheduler,
    /// With a bus: applies the other nodes' announced writes to this node's caches.
    changes_listener: Option<ChangesListener>,
}

/// The task applying the other nodes' changes, started with the node.
struct ChangesListener(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for ChangesListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangesListener")
    }
}

impl App {
    /// Opens the store, migrates it when asked (SQLite always: it is embedded and owned by
    /// this process), builds the router and binds the listener. After this returns, the
    /// port accepts connections (queued until [`App::run_until_stopped`] serves them), so
    /// callers need no readiness sleep.
    pub async fn build(settings: &Settings, migrate: bool) -> anyhow::Result<Self> {
        Self::build_with_routes(settings, migrate, OpenApiRouter::new()).await
    }

    /// [`App::build`] plus extra routes under the same middleware (tests, embedding).
    pub async fn build_with_routes(
        settings: &Settings,
        migrate: bool,
        extra: OpenApiRouter<AppState>,
    ) -> anyhow::Result<Self> {
        check_role(settings)?;
        let store = Store::open(&settings.database)
            .await
            .context("cannot open the database")?;
        prepare_store(&store, settings, migrate).await?;
        let master = Arc::new(secrets::master_key(settings)?);
        let gateway = gateway(settings)?;
        let webhooks = keel_webhooks::service::WebhooksService::new(
            store.webhooks(),
            master.clone(),
            Arc::new(SystemClock),
            settings.webhooks.clone(),
        );
        let (realtime, wake, worker) = realtime_and_worker(settings, &store, &webhooks).await?;
        let changes = changes(settings, &worker);
        let metrics = Arc::new(Metrics::default());
        let payments = payments_service_and_dependency(
            settings,
            &store,
            master.clone(),
            Arc::new(SystemClock),
        )?;
        let state = AppState::new(AppStateParts {
            health: store.health(),
            metrics: metrics.clone(),
            auth: auth_service(settings, &store)?,
            users: keel_identity::services::staff_admin::UserService::new(
                store.staff(),
                Arc::new(SystemClock),
                settings.auth.setup_ttl,
                master,
            ),
            events: store.events(),
            keys: keel_identity::services::api_keys::ApiKeyService::new(
                store.api_keys(),
                Arc::new(SystemClock),
                settings.auth.api_key_overlap,
            )
            .with_publishable_cache(settings.auth.publishable_key_cache),
            catalog: keel_catalog::CatalogService::new(
                keel_catalog::CatalogPorts {
                    catalog: store.catalog(),
                    inventory: store.inventory(),
                },
                Arc::new(SystemClock),
            ),
            store_cache_max_age_s: settings.store_cache_max_age_s,
            store_cache: Arc::new(keel_http::store_cache::StoreCache::new(
                settings.store_cache_max_age_s,
                settings.store_cache_bytes,
            )),
            orders: orders_service(settings, &store, Arc::new(SystemClock)),
            payments: payments.0.clone(),
            dependencies: std::iter::once(payments.1)
                .chain(gateway.as_ref().map(|g| g.dependency().clone()))
                .collect(),
            idempotency: store.idempotency(),
            idempotency_ttl: settings.idempotency_ttl,
            idempotency_lock: time::Duration::try_from(settings.http.request_timeout)
                .context("the request timeout is out of range")?,
            webhooks,
            worker_wake: wake,
            client_addr: settings.client_addr.clone(),
            limits: edge_limits(settings, &store).await?,
            browser: browser_sessions(settings, &secrets::master_key(settings)?),
            gateway: gateway.clone(),
            cors: cors(settings),
            realtime,
            changes: feed(changes.as_ref()),
        });
        let changes_listener = changes.map(|c| listen_for_changes(c, &state));
        let metrics_listener = metrics_listener(settings, &state).await?;
        let leases = store.leases();
        let router = router(settings, state, extra);
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} (KEEL_LISTEN)", settings.listen))?;
        Ok(Self {
            listener,
            router,
            metrics_listener,
            metrics,
            store,
            grace: settings.shutdown_grace,
            settings: settings.clone(),
            worker,
            payments: payments.0,
            changes_listener,
            scheduler: scheduler(settings, leases),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The bound address of the metrics listener, when `KEEL_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(l, _)| {
            l.local_addr()
                .expect("a bound TCP listener has a local address")
        })
    }

    /// The store this app serves from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish for at most the grace period. `Ok` when everything drained in time.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Background work by role: the scheduled jobs (each on one node at a time, through its
        // lease) and the relay, deliveries and bus consumers; an `api` node only tails the bus
        // for its realtime subscribers.
        let role = self.settings.cluster.role;
        let mut background = Vec::new();
        if role.runs_background() {
            background = jobs::spawn(&self.scheduler, &self.settings, &self.store, &self.payments);
            background.push(tokio::spawn(self.worker.clone().run()));
        } else {
            background.push(tokio::spawn(self.worker.clone().tail_forever()));
        }
        if let Some(listener) = self.changes_listener {
            background.push(tokio::spawn(listener.0));
        }
        tracing::info!(role = ?role, node = %self.settings.cluster.node_id, "serving");
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.grace;
        let limits = self.settings.connections;
        let trusted: Arc<[keel_kernel::net::Cidr]> =
            self.settings.client_addr.trusted_proxies.clone().into();
        // The metrics listener stops with the API listener.
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        let metrics_server = self.metrics_listener.map(|(listener, router)| {
            let metrics = self.metrics.clone();
            let mut stopped = metrics_stopped.clone();
            tokio::spawn(serve::serve(
                listener,
                router,
                limits,
                trusted.clone(),
                metrics,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ))
        });
        let server = serve::serve(
            self.listener,
            self.router,
            limits,
            trusted,
            self.metrics.clone(),
            async move {
                shutdown.await;
                tracing::info!(
                    grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                    "shutting down: no new connections, draining in-flight requests"
                );
                let _ = stop_metrics.send(true);
                let _ = draining_tx.send(());
            },
        );
        let deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {
                for task in &background {
                    task.abort();
                }
                // The next node takes the jobs at its next ask, not at the lease's expiry.
                if role.runs_background() {
                    self.scheduler.release_all(&jobs::JOBS).await;
                }
                if let Some(metrics_server) = metrics_server {
                    let _ = metrics_server.await;
                }
                // Every request finished, so every pooled connection is back: close cleanly.
                self.store.close().await;
                tracing::info!("stopped");
                Ok(())
            }
            () = deadline => {
                // Requests still hold connections; closing the pool would wait on them.
                anyhow::bail!(
                    "shutdown grace period of {} ms elapsed with requests still in flight",
                    grace.as_millis()
                )
            }
        }
    }
}

/// The deployment's quota defaults (`KEEL_QUOTAS__*`) into the database, which enforces them.
pub async fn write_quota_defaults(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    store
        .quotas()
        .set_quota_defaults(&settings.quotas)
        .await
        .context("cannot write the quota defaults")
}

/// Migrates the store when asked (always for SQLite) and then writes this deployment's quota
/// defaults.
async fn prepare_store(store: &Store, settings: &Settings, migrate: bool) -> anyhow::Result<()> {
    if store.is_sqlite() || migrate {
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
    }
    // Written where the schema is written (the database is there), so quotas hold from the
    // first request: by a node that migrates, and by `keel migrate`. A PostgreSQL node
    // started without `--migrate` leaves them as the last migration wrote them.
    if store.is_sqlite() || migrate {
        write_quota_defaults(store, settings).await?;
    }
    Ok(())
}

/// CORS: the operator's admin console origins.
fn cors(settings: &Settings) -> keel_http::cors::CorsSettings {
    keel_http::cors::CorsSettings::new(settings.cors_admin_origins.clone(), settings.cors_max_age_s)
}

/// Gateway mode's forwarder, when an upstream is configured.
fn gateway(settings: &Settings) -> anyhow::Result<Option<Arc<keel_http::gateway::Gateway>>> {
    settings
        .gateway
        .as_ref()
        .map(|g| {
            keel_http::gateway::Gateway::new(g.clone())
                .map(Arc::new)
                .map_err(anyhow::Error::msg)
        })
        .transpose()
}

/// Browser sessions: CSRF tokens under a key derived from the master key.
fn browser_sessions(
    settings: &Settings,
    master: &keel_identity::domain::sealed::MasterKey,
) -> keel_http::browser::BrowserSessions {
    keel_http::browser::BrowserSessions {
        csrf: keel_identity::domain::csrf::CsrfKey::derive(master),
        tls: settings.http.tls_terminated,
    }
}

/// The listener of `/metrics` alone, when `KEEL_METRICS_LISTEN` is set.
async fn metrics_listener(
    settings: &Settings,
    state: &AppState,
) -> anyhow::Result<Option<(tokio::net::TcpListener, axum::Router)>> {
    let Some(addr) = settings.metrics_listen else {
        return Ok(None);
    };
    Ok(Some((
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (KEEL_METRICS_LISTEN)"))?,
        keel_http::metrics_router(state.clone()),
    )))
}

/// The edge's rate limits: in memory, or shared through Redis when configured.
async fn edge_limits(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<Arc<keel_http::ratelimit::EdgeLimits>> {
    let redis = match &settings.redis_url {
        Some(url) => Some(
            keel_http::ratelimit::RedisLimits::start(
                secrecy::ExposeSecret::expose_secret(url),
                settings.redis_timeout,
            )
            .await
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    Ok(Arc::new(keel_http::ratelimit::EdgeLimits::new(
        settings.limits,
        redis,
        store.tenant_limits(),
        &SystemClock,
    )))
}

/// The node's side of the job leases.
fn scheduler(
    settings: &Settings,
    leases: Arc<dyn keel_kernel::lease::LeaseStore>,
) -> keel_worker::schedule::Scheduler {
    keel_worker::schedule::Scheduler {
        store: leases,
        node: settings.cluster.node_id.as_str().into(),
        timing: settings.cluster.leases,
        clock: Arc::new(SystemClock),
    }
}

/// Where the node announces its writes: the bus, or nowhere (embedded mode).
fn feed(
    changes: Option<&(
        keel_worker::changes::NatsChanges,
        keel_worker::changes::NatsClient,
        String,
    )>,
) -> Arc<dyn keel_kernel::changes::ChangeFeed> {
    match changes {
        Some((feed, ..)) => Arc::new(feed.clone()),
        None => Arc::new(keel_kernel::changes::Alone),
    }
}

/// Split roles need a shared database (an embedded SQLite file belongs to one process) and
/// the bus (an `api` node's live subscribers get the events the worker relays through it).
fn check_role(settings: &Settings) -> anyhow::Result<config::Role> {
    let role = settings.cluster.role;
    if role != config::Role::All
        && !matches!(settings.database, config::DatabaseSettings::Postgres { .. })
    {
        anyhow::bail!(
            "--role {role:?} needs PostgreSQL (KEEL_DATABASE_URL): an embedded SQLite database belongs to one process, which runs every role"
        );
    }
    if role != config::Role::All && settings.nats.is_none() {
        anyhow::bail!(
            "--role {role:?} needs the bus (KEEL_NATS_URL): events relayed by a worker reach the api nodes' subscribers through it"
        );
    }
    Ok(role)
}

/// The node's router by role: the API (REST, GraphQL, `extra`), or for a `worker` only the
/// probes and `/metrics`.
fn router(settings: &Settings, state: AppState, extra: OpenApiRouter<AppState>) -> axum::Router {
    if settings.cluster.role.serves_api() {
        let graphql = Arc::new(keel_graphql::Graphql::new(
            settings.graphql.0.clone(),
            settings.graphql.1,
        ));
        keel_http::router_with(
            state,
            settings.http,
            extra.merge(keel_graphql::routes(graphql)),
        )
    } else {
        keel_http::probes_router(state, settings.http)
    }
}

/// With a bus: this node's announcements of its writes, the connection and the subject.
fn changes(
    settings: &Settings,
    worker: &keel_worker::Worker,
) -> Option<(
    keel_worker::changes::NatsChanges,
    keel_worker::changes::NatsClient,
    String,
)> {
    let (nats, n) = (worker.nats.as_ref()?, settings.nats.as_ref()?);
    let client = nats.bus.client();
    let feed = keel_worker::changes::NatsChanges::start(
        client.clone(),
        n.changes_subject.clone(),
        settings.cluster.node_id.as_str().into(),
    );
    Some((feed, client, n.changes_subject.clone()))
}

/// Applies the other nodes' announced writes to this node's copies (ADR 0041): the shop's
/// storefront answers always; with a staff or secret-key write, its publishable keys,
/// pricing setup and limits too; after a key rotation, the signing key set. Resubscribes
/// after one second when the subscription ends.
fn listen_for_changes(
    (feed, client, subject): (
        keel_worker::changes::NatsChanges,
        keel_worker::changes::NatsClient,
        String,
    ),
    state: &AppState,
) -> ChangesListener {
    use keel_kernel::changes::Change;
    let state = state.clone();
    ChangesListener(Box::pin(async move {
        loop {
            let apply = |change: Change| match change {
                Change::Shop { tenant, setup } => {
                    state.store_cache.invalidate(tenant);
                    if setup {
                        state.keys.forget_tenant(tenant);
                        state.orders.forget_pricing(tenant);
                        state.limits.forget_tenant(tenant);
                    }
                }
                Change::SigningKeys => state.auth.keys().forget(),
            };
            if let Err(e) = feed.listen(&client, subject.clone(), apply).await {
                tracing::warn!(error = %e, "cannot subscribe to the other nodes' changes");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

/// The outbox relay and webhook delivery over `store`.
async fn worker(
    settings: &Settings,
    store: &Store,
    webhooks: keel_webhooks::service::WebhooksService,
    wake: Arc<tokio::sync::Notify>,
) -> anyhow::Result<keel_worker::Worker> {
    Ok(keel_worker::Worker {
        store: store.webhooks(),
        webhooks,
        clock: Arc::new(SystemClock),
        settings: settings.worker,
        wake,
        nats: nats(settings, store).await?,
        deliveries: Arc::new(tokio::sync::Notify::new()),
        congested: Arc::default(),
        // Replaced by the node's own hub when it serves realtime subscribers.
        hub: Arc::new(keel_kernel::hub::EventHub::new(1)),
        relay_turn: Arc::default(),
        client: keel_worker::delivery::client(
            &settings.webhooks.ssrf,
            std::time::Duration::try_from(settings.webhooks.policy.timeout)
                .context("the webhook timeout is out of range")?,
        )
        .map_err(anyhow::Error::msg)?,
    })
}

/// The staff authentication service over `store`, with the master key from the settings.
pub fn auth_service(settings: &Settings, store: &Store) -> anyhow::Result<AuthService> {
    auth_service_with_clock(settings, store, Arc::new(SystemClock))
}

/// [`auth_service`] with an explicit clock (tests of expiry and lockout timing).
pub fn auth_service_with_clock(
    settings: &Settings,
    store: &Store,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AuthService> {
    let master = secrets::master_key(settings)?;
    let keys = Arc::new(KeyRing::new(
        store.signing_keys(),
        master,
        clock.clone(),
        settings.auth.key_overlap,
        settings.auth.key_cache,
    ));
    let ports = AuthPorts {
        tenants: store.tenants(),
        staff: store.staff(),
        sessions: store.sessions(),
        events: store.events(),
        throttle: store.throttle(),
        mfa: store.mfa(),
        customers: store.customers(),
    };
    Ok(AuthService::new(ports, keys, clock, settings.auth.clone()))
}

/// The orders service over `store`, with an explicit clock (tests of expiry use a manual one).
pub fn orders_service(
    settings: &Settings,
    store: &Store,
    clock: Arc<dyn Clock>,
) -> keel_orders::service::OrdersService {
    keel_orders::service::OrdersService::new(
        keel_orders::service::OrdersPorts {
            setup: store.setup(),
            carts: store.carts(),
            orders: store.orders(),
            catalog: store.catalog(),
            inventory: store.inventory(),
        },
        clock,
        settings.orders,
    )
}

/// The payments service over `store`: the Stripe-compatible provider on its resilience
/// policy (one dependency per node, ADR 0033), secrets sealed with the master key.
pub fn payments_service(
    settings: &Settings,
    store: &Store,
    master: Arc<keel_identity::domain::sealed::MasterKey>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<keel_payments::service::PaymentsService> {
    Ok(payments_service_and_dependency(settings, store, master, clock)?.0)
}

/// [`payments_service`] and the provider's dependency (its breaker and bulkhead, for
/// `/metrics`).
fn payments_service_and_dependency(
    settings: &Settings,
    store: &Store,
    master: Arc<keel_identity::domain::sealed::MasterKey>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(
    keel_payments::service::PaymentsService,
    keel_resilience::Dependency,
)> {
    let p = &settings.payments;
    let dependency = keel_resilience::Dependency::new("stripe", p.stripe.policy.clone());
    let stripe = keel_payments_stripe::StripeProvider::new(
        &p.stripe.api_base,
        p.stripe.connect_timeout,
        dependency.clone(),
    )
    .map_err(anyhow::Error::msg)
    .context("KEEL_PAYMENTS__STRIPE__API_BASE")?;
    let service = keel_payments::service::PaymentsService::new(
        store.payments(),
        store.orders(),
        orders_service(settings, store, clock.clone()),
        keel_payments::service::Providers {
            stripe: Some(Arc::new(stripe)),
        },
        master,
        clock,
        p.service,
    );
    Ok((service, dependency))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
