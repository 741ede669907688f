//! `/v1/admin/webhook-endpoints*` and `/v1/admin/webhook-messages*` (`webhooks:manage`):
//! endpoints with their signing secrets (shown once), deliveries, attempts and replay.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use keel_webhooks::{
    domain::{Attempt, Endpoint, EndpointId, Message, MessageId},
    service::{EndpointInput, EndpointPatch, WebhookError},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{RequirePermission, perm::WebhooksManage},
    caching::{IfMatch, version_etag},
    extract::PageParams,
    extract::{self, ListQuery, form_pairs},
    problem::{FieldError, Problem, ProblemBody, ProblemKind},
    routes::rfc3339,
};

impl From<WebhookError> for Problem {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { pointer, message } => Self::validation(vec![FieldError {
                pointer: pointer.to_owned(),
                message,
            }]),
            WebhookError::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such resource."),
            WebhookError::PreconditionFailed => Self::new(
                ProblemKind::PRECONDITION_FAILED,
                "The endpoint changed since it was read; read it again and retry.",
            ),
            WebhookError::AccountEndpointExists => Self::new(
                ProblemKind::CONFLICT,
                "The shop's account-notification endpoint was set up meanwhile; read it and retry.",
            ),
            WebhookError::TooManyEndpoints { max } => Self::new(
                ProblemKind::TOO_MANY_ENDPOINTS,
                format!(
                    "The shop already has {max} webhook endpoints, the most allowed; delete one first."
                ),
            ),
            WebhookError::Store(e) => e.into(),
            WebhookError::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointResponse {
    id: String,
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    /// When the current run of failures began (cleared by a success).
    failing_since: Option<String>,
    /// Attempts failed in a row; at `KEEL_WEBHOOKS__CIRCUIT_FAILURES` the circuit opens.
    consecutive_failures: i64,
    /// The circuit is open until then: nothing is sent (messages keep their retries); then
    /// one probe, and a success closes it.
    paused_until: Option<String>,
    /// Secrets that sign now: 1, or 2 during a rotation's overlap (when the old one stops).
    signing_secrets: Vec<SecretInfo>,
    created_at: String,
    updated_at: String,
    version: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SecretInfo {
    created_at: String,
    expires_at: Option<String>,
}

pub(crate) fn endpoint_response(e: &Endpoint) -> EndpointResponse {
    let now = time::OffsetDateTime::now_utc();
    EndpointResponse {
        id: e.id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        failing_since: e.failing_since.map(rfc3339),
        consecutive_failures: e.consecutive_failures,
        paused_until: e.paused_until.map(rfc3339),
        signing_secrets: e
            .live_secrets(now)
            .map(|s| SecretInfo {
                created_at: rfc3339(s.created_at),
                expires_at: s.expires_at.map(rfc3339),
            })
            .collect(),
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
        version: e.version,
    }
}

/// An endpoint and its new signing secret, shown once.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointWithSecret {
    pub(crate) endpoint: EndpointResponse,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    pub(crate) secret: String,
}

#[derive(Serialize, ToSchema)]
struct EndpointList {
    data: Vec<EndpointResponse>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MessageResponse {
    /// The `webhook-id` of every attempt.
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    /// `pending`, `delivering`, `delivered` or `failed`.
    status: &'static str,
    attempts: i64,
    next_attempt_at: String,
    created_at: String,
}

impl From<&Message> for MessageResponse {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            endpoint_id: m.endpoint_id.to_string(),
            event_id: m.event_id.to_string(),
            event_type: m.event_type.clone(),
            status: m.status.as_str(),
            attempts: m.attempts,
            next_attempt_at: rfc3339(m.next_attempt_at),
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct MessageList {
    data: Vec<MessageResponse>,
    next_cursor: Option<String>,
}

impl From<keel_kernel::page::Page<Message>> for MessageList {
    fn from(page: keel_kernel::page::Page<Message>) -> Self {
        Self {
            data: page.items.iter().map(MessageResponse::from).collect(),
            next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AttemptResponse {
    id: String,
    attempted_at: String,
    status_code: Option<u16>,
    latency_ms: i64,
    error: Option<String>,
    /// The first 1024 bytes of the response.
    response_body: Option<String>,
}

impl From<&Attempt> for AttemptResponse {
    fn from(a: &Attempt) -> Self {
        Self {
            id: a.id.to_string(),
            attempted_at: rfc3339(a.attempted_at),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AttemptList {
    data: Vec<AttemptResponse>,
    next_cursor: Option<String>,
}

impl From<keel_kernel::page::Page<Attempt>> for AttemptList {
    fn from(page: keel_kernel::page::Page<Attempt>) -> Self {
        Self {
            data: page.items.iter().map(AttemptResponse::from).collect(),
            next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
        }
    }
}

pub(crate) fn with_etag(status: StatusCode, body: impl Serialize, version: i64) -> Response {
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::ETAG, version_etag(version));
    res
}

/// The shop's webhook endpoints.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = EndpointList)))]
async fn list_endpoints(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    ListQuery(page): ListQuery,
) -> Result<Json<EndpointList>, Problem> {
    let page = state
        .webhooks
        .endpoints(auth.principal.tenant_id, page)
        .await?;
    Ok(Json(EndpointList {
        data: page.items.iter().map(endpoint_response).collect(),
        next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
    }))
}

/// Creates an endpoint. The URL passes the SSRF guard (https, a public address) without any
/// connection being made; the signing secret is shown once. A shop has at most
/// `KEEL_WEBHOOKS__MAX_ENDPOINTS` endpoints (16 by default).
#[utoipa::path(post, path = "/v1/admin/webhook-endpoints", tag = "webhooks", security(("bearer" = [])), request_body = EndpointInput,
    responses((status = 201, body = EndpointWithSecret),
        (status = 409, description = "`too_many_endpoints`: the shop already has the most endpoints allowed.", body = ProblemBody),
        (status = 422, description = "`validation_failed` (e.g. a refused URL at `/url`).", body = ProblemBody)))]
async fn create_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    extract::Json(input): extract::Json<EndpointInput>,
) -> Result<Response, Problem> {
    let (e, secret) = state
        .webhooks
        .create_endpoint(auth.principal.tenant_id, &input)
        .await?;
    let version = e.version;
    Ok(with_etag(
        StatusCode::CREATED,
        EndpointWithSecret {
            endpoint: endpoint_response(&e),
            secret,
        },
        version,
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = EndpointResponse), (status = 404, body = ProblemBody)))]
async fn get_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
) -> Result<Response, Problem> {
    let e = state
        .webhooks
        .endpoint(auth.principal.tenant_id, id)
        .await?;
    Ok(with_etag(StatusCode::OK, endpoint_response(&e), e.version))
}

/// Changes an endpoint (a new URL passes the SSRF guard again; re-enabling clears failures).
#[utoipa::path(patch, path = "/v1/admin/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])), request_body = EndpointPatch,
    params(("id" = String, Path)), responses((status = 200, body = EndpointResponse), (status = 412, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn update_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
    IfMatch(if_match): IfMatch,
    extract::Json(patch): extract::Json<EndpointPatch>,
) -> Result<Response, Problem> {
    let e = state
        .webhooks
        .update_endpoint(auth.principal.tenant_id, id, &patch, if_match)
        .await?;
    Ok(with_etag(StatusCode::OK, endpoint_response(&e), e.version))
}

/// Deletes an endpoint with its messages and attempts.
#[utoipa::path(delete, path = "/v1/admin/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204, description = "Deleted."), (status = 404, body = ProblemBody)))]
async fn delete_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
) -> Result<StatusCode, Problem> {
    state
        .webhooks
        .delete_endpoint(auth.principal.tenant_id, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates the signing secret: the new one is shown once; the old one keeps signing beside it
/// for exactly the configured overlap (86 400 s), both signatures in `webhook-signature`.
#[utoipa::path(post, path = "/v1/admin/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = EndpointWithSecret), (status = 404, body = ProblemBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
) -> Result<Response, Problem> {
    let (e, secret) = state
        .webhooks
        .rotate_secret(auth.principal.tenant_id, id)
        .await?;
    let version = e.version;
    Ok(with_etag(
        StatusCode::OK,
        EndpointWithSecret {
            endpoint: endpoint_response(&e),
            secret,
        },
        version,
    ))
}

/// The endpoint's messages, newest first.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints/{id}/messages", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = MessageList), (status = 404, body = ProblemBody)))]
async fn list_messages(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
    ListQuery(page): ListQuery,
) -> Result<Json<MessageList>, Problem> {
    let page = state
        .webhooks
        .messages(auth.principal.tenant_id, id, page)
        .await?;
    Ok(Json(page.into()))
}

/// `?since=` (RFC 3339) of an endpoint replay.
struct Since(time::OffsetDateTime);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Since {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        form_pairs(parts.uri.query().unwrap_or_default())
            .into_iter()
            .find(|(k, _)| k == "since")
            .and_then(|(_, v)| {
                time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(Self)
            .ok_or_else(|| {
                Problem::new(
                    ProblemKind::BAD_REQUEST,
                    "`since` is required: an RFC 3339 time such as 2026-11-21T00:00:00Z.",
                )
            })
    }
}

#[derive(Serialize, ToSchema)]
struct ReplayCount {
    /// Failed messages queued again.
    replayed: u64,
}

/// Queues again every failed message of the endpoint created at or after `since`.
#[utoipa::path(post, path = "/v1/admin/webhook-endpoints/{id}/replay", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), ("since" = String, Query)),
    responses((status = 200, body = ReplayCount), (status = 404, body = ProblemBody)))]
async fn replay_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<EndpointId>,
    Since(since): Since,
) -> Result<Json<ReplayCount>, Problem> {
    let replayed = state
        .webhooks
        .replay_failed_since(auth.principal.tenant_id, id, since)
        .await?;
    state.worker_wake.notify_one();
    Ok(Json(ReplayCount { replayed }))
}

/// A message's attempts, oldest first.
#[utoipa::path(get, path = "/v1/admin/webhook-messages/{id}/attempts", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = AttemptList), (status = 404, body = ProblemBody)))]
async fn list_attempts(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<MessageId>,
    ListQuery(page): ListQuery,
) -> Result<Json<AttemptList>, Problem> {
    let page = state
        .webhooks
        .attempts(auth.principal.tenant_id, id, page)
        .await?;
    Ok(Json(page.into()))
}

/// Queues one message again (same `webhook-id`).
#[utoipa::path(post, path = "/v1/admin/webhook-messages/{id}/replay", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = MessageResponse), (status = 404, body = ProblemBody)))]
async fn replay_message(
    State(state): State<AppState>,
    auth: RequirePermission<WebhooksManage>,
    Id(id): Id<MessageId>,
) -> Result<Json<MessageResponse>, Problem> {
    let m = state
        .webhooks
        .replay_message(auth.principal.tenant_id, id)
        .await?;
    Ok(Json(MessageResponse::from(&m)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_messages))
        .routes(routes!(replay_endpoint))
        .routes(routes!(list_attempts))
        .routes(routes!(replay_message))
}
