//! Probes: `/livez` (the process answers) and `/readyz` (it can serve: database reachable
//! and every embedded migration applied).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

/// Liveness: the process is up and answering.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: &'static str,
}

/// Readiness: whether this node can serve traffic, and why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub database: DatabaseCheck,
}

/// The database check inside [`Readiness`].
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseCheck {
    /// `ok`, `migrations_pending` (run `keel migrate`), `schema_mismatch` (the database has
    /// migrations this binary does not know, or edited/failed ones) or `unreachable`.
    pub status: &'static str,
    /// Embedded migrations applied (absent when unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations_applied: Option<usize>,
    /// Migrations this binary embeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations_expected: Option<usize>,
}

/// Liveness probe.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Liveness)))]
async fn livez() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness probe: 200 when the database is reachable and fully migrated, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve.", body = Readiness),
        (status = 503, description = "Not ready; `database.status` says why.", body = Readiness),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let database = match state.health.schema_status().await {
        Ok(s) => DatabaseCheck {
            status: if s.is_current() {
                "ok"
            } else if s.mismatched.is_empty() {
                "migrations_pending"
            } else {
                "schema_mismatch"
            },
            migrations_applied: Some(s.applied),
            migrations_expected: Some(s.expected),
        },
        Err(e) => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), "readiness: database check failed");
            DatabaseCheck {
                status: "unreachable",
                migrations_applied: None,
                migrations_expected: None,
            }
        }
    };
    let ready = database.status == "ok";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
    };
    (code, Json(body)).into_response()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
}
