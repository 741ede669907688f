//! Keel's HTTP surface (axum): the router, its middleware, RFC 9457 problems, metrics and the
//! OpenAPI 3.1 document generated from the handlers.
//!
//! Handlers are thin: parse the request into domain types ([`extract::Json`]), call a
//! service, map the context's error into a [`problem::Problem`]. No business rule lives here.
#![forbid(unsafe_code)]

pub mod auth;
pub mod browser;
pub mod caching;
pub mod client;
pub mod cors;
pub mod extract;
pub mod gateway;
pub mod headers;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod store_cache;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::{from_fn, from_fn_with_state},
};
use keel_kernel::health::StoreHealth;
use tower_http::{catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    metrics::Metrics,
    problem::{Problem, ProblemKind},
};

/// What handlers share: the ports and services picked once at startup. axum clones it for
/// every request and every stateful middleware, so it is one `Arc`: one reference count to
/// bump instead of one per service (those clones and drops were about 3 % of the server's CPU
/// under load).
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct AppStateParts {
    pub health: Arc<dyn StoreHealth>,
    pub metrics: Arc<Metrics>,
    pub auth: keel_identity::services::auth::AuthService,
    pub users: keel_identity::services::staff_admin::UserService,
    pub keys: keel_identity::services::api_keys::ApiKeyService,
    pub events: Arc<dyn keel_kernel::event::EventLog>,
    pub catalog: keel_catalog::CatalogService,
    /// `max-age` of public storefront reads, in exact seconds.
    pub store_cache_max_age_s: u64,
    /// This node's cache of storefront reads (ADR 0014).
    pub store_cache: Arc<store_cache::StoreCache>,
    pub orders: keel_orders::service::OrdersService,
    pub payments: keel_payments::service::PaymentsService,
    /// The outbound dependencies behind circuit breakers and bulkheads (the payment
    /// provider), for `/metrics`.
    pub dependencies: Vec<keel_resilience::Dependency>,
    pub idempotency: Arc<dyn keel_kernel::idempotency::IdempotencyStore>,
    /// How long a response to an `Idempotency-Key` is replayed.
    pub idempotency_ttl: time::Duration,
    /// How long a request holds its key in flight before another may take it over.
    pub idempotency_lock: time::Duration,
    pub webhooks: keel_webhooks::service::WebhooksService,
    /// Pinged after a write succeeds, so the outbox relay runs at once.
    pub worker_wake: Arc<tokio::sync::Notify>,
    /// How the client address behind trusted proxies is found.
    pub client_addr: client::ClientAddrPolicy,
    /// The edge's rate limits and their state (ADR 0035).
    pub limits: Arc<ratelimit::EdgeLimits>,
    /// CORS: the admin console's origins, preflight lifetime (ADR 0036).
    pub cors: cors::CorsSettings,
    /// Browser sessions: cookies and CSRF tokens (ADR 0037).
    pub browser: browser::BrowserSessions,
    /// Gateway mode: the legacy API behind Keel, when configured (ADR 0038).
    pub gateway: Option<Arc<gateway::Gateway>>,
    /// Realtime delivery: the node's event hub and its open streams (ADR 0040).
    pub realtime: Arc<realtime::Realtime>,
    /// Where this node announces its writes to the other nodes (ADR 0041).
    pub changes: Arc<dyn keel_kernel::changes::ChangeFeed>,
}

/// Exact limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes; larger is 413.
    pub body_limit_bytes: usize,
    /// Longest a request may take before 503 `request_timeout`.
    pub request_timeout: Duration,
    /// `/metrics` is served on a listener of its own ([`metrics_router`]); the API listener
    /// then answers 404 there, so the public port discloses nothing about the node.
    pub metrics_elsewhere: bool,
    /// Requests this node serves at once; one more is answered 503 `overloaded` at once
    /// (probes and `/metrics` are never shed).
    pub max_in_flight: usize,
    /// Requests of one shop this node serves at once, counted once the shop's credential is
    /// authenticated; one more is answered 503 `overloaded` at once.
    pub max_in_flight_per_shop: usize,
    /// TLS terminates in front of Keel: answers carry HSTS.
    pub tls_terminated: bool,
}

/// Every route of the API with its OpenAPI annotations (`/metrics` only when it is served on
/// the API listener).
fn api_routes(metrics_elsewhere: bool) -> OpenApiRouter<AppState> {
    let ops = if metrics_elsewhere {
        OpenApiRouter::new()
    } else {
        routes::ops::router()
    };
    OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::health::router())
        .merge(ops)
        .merge(routes::auth::router())
        .merge(routes::me::router())
        .merge(routes::users::router())
        .merge(routes::api_keys::router())
        .merge(routes::events::router())
        .merge(routes::streams::router())
        .merge(routes::store::router())
        .merge(routes::settings::router())
        .merge(routes::catalog::router())
        .merge(routes::inventory::router())
        .merge(routes::pricing::router())
        .merge(routes::orders::router())
        .merge(routes::payments::router())
        .merge(routes::webhooks::router())
        .merge(routes::account_notifications::router())
}

/// The OpenAPI document a node with the default settings serves at `/openapi.json`, built
/// without a node (for `keel openapi` and the check of `docs/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(api_routes(false).split_for_parts().1)
}

/// The complete application router.
pub fn router(state: AppState, settings: HttpSettings) -> Router {
    router_with(state, settings, OpenApiRouter::new())
}

/// The application router plus `extra` routes, which get the same middleware and appear in
/// the OpenAPI document. The seam for embedding Keel and for testing extractors end to end.
pub fn router_with(
    state: AppState,
    settings: HttpSettings,
    extra: OpenApiRouter<AppState>,
) -> Router {
    let (api, doc) = api_routes(settings.metrics_elsewhere)
        .merge(extra)
        .split_for_parts();
    let metrics = state.metrics.clone();
    let wake = state.worker_wake.clone();
    let cache = state.store_cache.clone();
    // `Router::layer` runs after routing, so `MatchedPath` is known to `request_context`.
    // The last layer added is the outermost.
    api.merge(openapi::docs_router(openapi::finish(doc)))
        .fallback(|| async { Problem::new(ProblemKind::NOT_FOUND, "No route matches this path.") })
        .with_state(state.clone())
        .layer(from_fn_with_state(cache.clone(), store_cache::serve))
        .layer(from_fn_with_state(
            store_cache::Tracker {
                cache,
                changes: state.changes.clone(),
            },
            store_cache::track,
        ))
        // Outside the storefront cache: a read answered from memory is still a request. One
        // layer for the whole edge (gateway, limits, CORS preflights, identification, places
        // per shop): each layer costs every request a boxed service and future.
        .layer(from_fn_with_state(
            ratelimit::Edge {
                app: state,
                shops: Arc::new(ratelimit::ShopsInFlight::new(
                    settings.max_in_flight_per_shop,
                )),
            },
            ratelimit::limit,
        ))
        .layer(from_fn_with_state(wake, middleware::wake_worker))
        .layer(RequestBodyLimitLayer::new(settings.body_limit_bytes))
        .layer(DefaultBodyLimit::disable())
        .layer(from_fn_with_state(
            settings.request_timeout,
            middleware::timeout,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_to_problem))
        .layer(from_fn(middleware::problems_for_bare_errors))
        .layer(from_fn_with_state(
            settings.tls_terminated,
            middleware::security_headers,
        ))
        .layer(from_fn_with_state(
            Arc::new(middleware::InFlight::new(settings.max_in_flight)),
            middleware::shed,
        ))
        .layer(from_fn_with_state(metrics, middleware::request_context))
}

/// The probes and `/metrics` alone: what a `worker` node serves (issue 25). Every other path
/// is a 404 problem, with the same security headers and request metrics as the API.
pub fn probes_router(state: AppState, settings: HttpSettings) -> Router {
    let probes = routes::health::router();
    // `/metrics` stays on its own listener when one is configured.
    let probes = if settings.metrics_elsewhere {
        probes
    } else {
        probes.merge(routes::ops::router())
    };
    let (router, _) = probes.split_for_parts();
    let metrics = state.metrics.clone();
    router
        .fallback(|| async { Problem::new(ProblemKind::NOT_FOUND, "No route matches this path.") })
        .with_state(state)
        .layer(from_fn(middleware::problems_for_bare_errors))
        .layer(from_fn_with_state(false, middleware::security_headers))
        .layer(from_fn_with_state(metrics, middleware::request_context))
}

/// `/metrics` alone, for the metrics listener (`KEEL_METRICS_LISTEN`): every other path is a
/// 404 problem there, and responses carry the same security headers.
pub fn metrics_router(state: AppState) -> Router {
    let (router, _) = routes::ops::router().split_for_parts();
    router
        .fallback(|| async { Problem::new(ProblemKind::NOT_FOUND, "No route matches this path.") })
        .with_state(state)
        .layer(from_fn(middleware::problems_for_bare_errors))
        .layer(from_fn_with_state(false, middleware::security_headers))
}
