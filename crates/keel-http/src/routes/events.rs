//! `GET /v1/admin/events`: the tenant's event log, security events included (`audit:read`).

use axum::{Json, extract::State, http::request::Parts};
use keel_kernel::event::RecordedEvent;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{RequirePermission, perm::AuditRead},
    extract::PageParams,
    extract::{ListQuery, form_pairs},
    problem::{Problem, ProblemBody, ProblemKind},
};

#[derive(Serialize, ToSchema)]
struct EventResponse {
    id: String,
    /// Dotted and past tense: `tenant.created`, `security.login_failed`, …
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: String,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
struct EventList {
    data: Vec<EventResponse>,
    next_cursor: Option<String>,
}

impl From<RecordedEvent> for EventResponse {
    fn from(e: RecordedEvent) -> Self {
        Self {
            id: e.id.to_string(),
            event_type: e.event_type,
            occurred_at: e
                .occurred_at
                .format(&time::format_description::well_known::Rfc3339)
                .expect("a UTC timestamp always formats as RFC 3339"),
            data: e.payload,
        }
    }
}

/// `?type=` filter: an exact type, or a prefix ending in `.` or `.*` (`security.*`).
pub(crate) struct TypeFilter(pub(crate) Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TypeFilter {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = form_pairs(parts.uri.query().unwrap_or_default())
            .into_iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v);
        let Some(v) = value else {
            return Ok(Self(None));
        };
        let prefix = v.strip_suffix('*').unwrap_or(&v);
        let valid = !prefix.is_empty()
            && prefix.len() <= 100
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        if valid {
            Ok(Self(Some(prefix.to_owned())))
        } else {
            Err(Problem::new(
                ProblemKind::BAD_REQUEST,
                "`type` must be an event type such as `security.login_failed`, or a prefix such as `security.*`.",
            ))
        }
    }
}

/// The shop's events, oldest first.
#[utoipa::path(get, path = "/v1/admin/events", tag = "events", security(("bearer" = [])),
    params(
        ("type" = Option<String>, Query, description = "exact type, or prefix with `*`: `security.*`"),
        PageParams,
    ),
    responses((status = 200, body = EventList), (status = 403, body = ProblemBody)))]
async fn list_events(
    State(state): State<AppState>,
    RequirePermission { principal, .. }: RequirePermission<AuditRead>,
    ListQuery(page): ListQuery,
    TypeFilter(prefix): TypeFilter,
) -> Result<Json<EventList>, Problem> {
    let page = state
        .events
        .list(principal.tenant_id, page, prefix.as_deref())
        .await?;
    let (data, next_cursor) = crate::extract::page_parts(page);
    Ok(Json(EventList { data, next_cursor }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}
