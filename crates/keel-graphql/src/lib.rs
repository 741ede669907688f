//! Keel's GraphQL (ADR 0040): an admin schema and a storefront schema over the same services
//! as REST, with field-level security from one table, DataLoaders for every relation, exact
//! limits checked before anything runs, and subscriptions over WebSocket
//! (`graphql-transport-ws`) fed by committed events only.
//!
//! Routes mount through `keel_http::router_with`, so the edge (limits, shedding, CORS,
//! identification) applies to GraphQL as to any route.
#![forbid(unsafe_code)]

mod access;
mod admin;
mod errors;
mod limits;
mod loaders;
mod scalars;
mod store;
mod subscriptions;
mod types;
mod ws;

use std::sync::Arc;

use async_graphql::Schema;
use axum::{
    Extension,
    body::Bytes,
    extract::{FromRequestParts, State, WebSocketUpgrade},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use keel_http::{
    AppState,
    auth::{Admin, Shopper},
};
use utoipa_axum::router::OpenApiRouter;

pub use access::{FIELDS, Need};
pub use limits::{GraphqlSettings, code, sha256_hex};
pub use subscriptions::SLOW_CONSUMER;
pub use ws::WsSettings;

pub type AdminSchema = Schema<admin::Query, admin::Mutation, admin::Subscription>;
pub type StoreSchema = Schema<store::Query, store::Mutation, store::Subscription>;

/// The admin schema with the limits (its SDL is `docs/graphql/admin.graphql`).
pub fn admin_schema(settings: &Arc<GraphqlSettings>) -> AdminSchema {
    Schema::build(admin::Query, admin::Mutation, admin::Subscription)
        .extension(limits::Limits(settings.clone()))
        .finish()
}

/// The storefront schema with the limits; introspection only where the operator allows it.
pub fn store_schema(settings: &Arc<GraphqlSettings>) -> StoreSchema {
    let b = Schema::build(store::Query, store::Mutation, store::Subscription)
        .extension(limits::Limits(settings.clone()));
    if settings.store_introspection {
        b.finish()
    } else {
        b.disable_introspection().finish()
    }
}

/// The admin schema's SDL, as served and as checked into `docs/graphql/admin.graphql`.
pub fn admin_sdl() -> String {
    admin_schema(&Arc::new(GraphqlSettings::default())).sdl()
}

/// The storefront schema's SDL (`docs/graphql/store.graphql`).
pub fn store_sdl() -> String {
    Schema::build(store::Query, store::Mutation, store::Subscription)
        .finish()
        .sdl()
}

/// What the GraphQL routes share.
pub struct Graphql {
    admin: AdminSchema,
    store: StoreSchema,
    settings: Arc<GraphqlSettings>,
    /// Automatic persisted queries, one store per schema (a shop's entries its own).
    persisted_admin: limits::PersistedQueries,
    persisted_store: limits::PersistedQueries,
    presence: Arc<subscriptions::presence::Presence>,
    ws: WsSettings,
}

impl std::fmt::Debug for Graphql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graphql")
            .field("settings", &self.settings)
            .field("ws", &self.ws)
            .finish_non_exhaustive()
    }
}

impl Graphql {
    pub fn new(settings: GraphqlSettings, ws: WsSettings) -> Self {
        let settings = Arc::new(settings);
        Self {
            admin: admin_schema(&settings),
            store: store_schema(&settings),
            persisted_admin: limits::PersistedQueries::new(&settings),
            persisted_store: limits::PersistedQueries::new(&settings),
            presence: Arc::new(subscriptions::presence::Presence::new(
                ws.presence_ttl,
                ws.presence_rooms_per_shop,
            )),
            settings,
            ws,
        }
    }
}

/// The GraphQL routes: `POST /v1/admin/graphql` and `/v1/store/graphql`, their WebSocket
/// upgrades (`GET`), and the admin SDL.
pub fn routes(graphql: Arc<Graphql>) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/v1/admin/graphql", post(admin_post).get(admin_get))
        .route("/v1/admin/graphql/schema.graphql", get(admin_schema_text))
        .route("/v1/store/graphql", post(store_post).get(store_get))
        .route("/graphiql", get(graphiql_page))
        .route("/graphiql/{file}", get(graphiql_file))
        .layer(Extension(graphql))
}

fn json(res: &async_graphql::Response) -> Response {
    let mut out = axum::Json(res).into_response();
    // Answers carry a shop's data: never cached by a shared cache.
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

/// Whether the request's operation is a query (a mutation writes; a parse error is reported
/// by the execution that follows).
fn reads_only(request: &mut async_graphql::Request) -> bool {
    use async_graphql::parser::types::OperationType;
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false;
    };
    let op = match name {
        Some(n) => doc
            .operations
            .iter()
            .find(|(op_name, _)| op_name.is_some_and(|o| o.as_str() == n))
            .map(|(_, op)| op.node.ty),
        None => doc.operations.iter().next().map(|(_, op)| op.node.ty),
    };
    op == Some(OperationType::Query)
}

/// The answer, marked read-only for a query (the outbox relay is woken by writes only).
fn answer(res: &async_graphql::Response, read_only: bool) -> Response {
    let mut out = json(res);
    if read_only {
        out.extensions_mut().insert(keel_http::middleware::ReadOnly);
    }
    out
}

fn refused(e: async_graphql::ServerError) -> Response {
    answer(&async_graphql::Response::from_errors(vec![e]), true)
}

async fn admin_post(
    State(state): State<AppState>,
    Extension(g): Extension<Arc<Graphql>>,
    Admin(principal): Admin,
    body: Bytes,
) -> Response {
    let owner = principal.tenant_id.to_string();
    let mut request = match limits::request(&body, &g.settings, &g.persisted_admin, false, &owner) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let read_only = reads_only(&mut request);
    let tenant = principal.tenant_id;
    let request = loaders::for_tenant(request, &state, tenant)
        .data(access::AdminViewer(principal))
        .data(g.presence.clone())
        .data(state);
    answer(&g.admin.execute(request).await, read_only)
}

async fn store_post(
    State(state): State<AppState>,
    Extension(g): Extension<Arc<Graphql>>,
    shopper: Shopper,
    body: Bytes,
) -> Response {
    let mut request = match limits::request(
        &body,
        &g.settings,
        &g.persisted_store,
        g.settings.store_persisted_only,
        &shopper.tenant_id.to_string(),
    ) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let read_only = reads_only(&mut request);
    let request = loaders::for_tenant(request, &state, shopper.tenant_id)
        .data(access::StoreViewer::new(&shopper))
        .data(shopper)
        .data(state);
    answer(&g.store.execute(request).await, read_only)
}

/// The admin SDL, for admin callers (it is also in `docs/graphql/`).
async fn admin_schema_text(Admin(_): Admin) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        admin_sdl(),
    )
        .into_response()
}

/// GraphiQL's files, vendored (`graphiql/VENDOR.md`): name, media type, bytes.
const GRAPHIQL: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript",
        include_bytes!("../graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css",
        include_bytes!("../graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript",
        include_bytes!("../graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript",
        include_bytes!("../graphiql/react-dom.production.min.js"),
    ),
    (
        "init.js",
        "text/javascript",
        include_bytes!("../graphiql/init.js"),
    ),
    (
        "keel.css",
        "text/css",
        include_bytes!("../graphiql/keel.css"),
    ),
];

/// The admin schema's console (the `/docs` CSP: its own files only).
async fn graphiql_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../graphiql/index.html"),
    )
        .into_response()
}

async fn graphiql_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match GRAPHIQL.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => keel_http::problem::Problem::new(
            keel_http::problem::ProblemKind::NOT_FOUND,
            "No such file.",
        )
        .into_response(),
    }
}

/// A browser asking for the admin endpoint (`Accept: text/html`) is sent to the console.
fn wants_html(parts: &axum::http::request::Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `GET` of a GraphQL endpoint: the WebSocket transport; a browser asking for the admin
/// endpoint is sent to the console.
async fn upgrade_or_explain(
    upgrade: Upgrade,
    parts: axum::http::request::Parts,
    state: AppState,
    g: Arc<Graphql>,
    side: ws::Side,
) -> Response {
    match upgrade {
        Ok(up) => ws::upgrade(up, parts, state, g, side).await,
        Err(_) if side == ws::Side::Admin && wants_html(&parts) => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/graphiql")]).into_response()
        }
        Err(_) => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "GraphQL takes POST; GET is for the WebSocket transport (graphql-transport-ws).",
        )
            .into_response(),
    }
}

async fn admin_get(
    State(state): State<AppState>,
    Extension(g): Extension<Arc<Graphql>>,
    upgrade: Upgrade,
    parts: axum::http::request::Parts,
) -> Response {
    upgrade_or_explain(upgrade, parts, state, g, ws::Side::Admin).await
}

async fn store_get(
    State(state): State<AppState>,
    Extension(g): Extension<Arc<Graphql>>,
    upgrade: Upgrade,
    parts: axum::http::request::Parts,
) -> Response {
    upgrade_or_explain(upgrade, parts, state, g, ws::Side::Store).await
}

/// A principal from headers that need not be the request's (a WebSocket's `connection_init`
/// payload): the same extractors as any route.
async fn extract<T: FromRequestParts<AppState, Rejection = keel_http::problem::Problem>>(
    headers: axum::http::HeaderMap,
    client: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
    state: &AppState,
) -> Result<T, keel_http::problem::Problem> {
    let mut request = axum::http::Request::new(());
    *request.headers_mut() = headers;
    // The client's address, for what is counted per address (unpaid orders).
    if let Some(c) = client {
        request.extensions_mut().insert(c);
    }
    let (mut parts, ()) = request.into_parts();
    T::from_request_parts(&mut parts, state).await
}

#[cfg(test)]
mod tests {
    /// The SDL is reviewed like code: a schema change shows in `docs/graphql/`'s diff.
    #[test]
    fn the_checked_in_sdl_is_the_schema() {
        for (name, sdl) in [("admin", super::admin_sdl()), ("store", super::store_sdl())] {
            let path = format!(
                "{}/../../docs/graphql/{name}.graphql",
                env!("CARGO_MANIFEST_DIR")
            );
            let checked_in = std::fs::read_to_string(&path).expect("docs/graphql/*.graphql");
            assert!(
                checked_in == sdl,
                "docs/graphql/{name}.graphql is stale: `keel graphql-schema {name} > docs/graphql/{name}.graphql`"
            );
        }
    }

    #[test]
    fn every_guarded_field_of_the_table_exists_in_a_schema() {
        let (admin, store) = (super::admin_sdl(), super::store_sdl());
        for (field, _) in super::FIELDS {
            let (ty, name) = field.split_once('.').expect("Type.field");
            let found = [&admin, &store].iter().any(|sdl| {
                let Some(start) = sdl.find(&format!("type {ty} ")) else {
                    return false;
                };
                let body = &sdl[start..];
                let body = &body[..body.find("\n}").unwrap_or(body.len())];
                body.contains(&format!("\t{name}:")) || body.contains(&format!("\t{name}("))
            });
            assert!(found, "{field} is in the table but not in a schema");
        }
    }
}
