//! `/v1/admin/account-notifications*` (owners: `settings:manage`): the shop's
//! account-notification endpoint, an HTTPS endpoint of its own mail system that receives the
//! one-time secrets Keel never writes to its event log (password-reset and invitation
//! tokens). Signed like webhooks (Standard Webhooks) with a secret of its own, behind the same
//! SSRF guard, retry schedule and attempt log. Notifications are listed without their bodies,
//! and no other route (events, webhook endpoints and messages) ever shows them.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use keel_webhooks::service::AccountEndpointInput;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{RequirePermission, perm::SettingsManage},
    extract::PageParams,
    extract::{self, ListQuery},
    problem::{Problem, ProblemBody},
    routes::webhooks::{
        AttemptList, EndpointResponse, EndpointWithSecret, MessageList, endpoint_response,
        with_etag,
    },
};

/// The shop's account-notification endpoint.
#[utoipa::path(get, path = "/v1/admin/account-notifications", tag = "account-notifications", security(("bearer" = [])),
    responses(
        (status = 200, body = EndpointResponse),
        (status = 403, description = "`forbidden`: only owners (`settings:manage`).", body = ProblemBody),
        (status = 404, description = "`not_found`: none is set up.", body = ProblemBody),
    ))]
async fn get_account_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
) -> Result<Response, Problem> {
    let e = state
        .webhooks
        .account_endpoint(auth.principal.tenant_id)
        .await?;
    Ok(with_etag(StatusCode::OK, endpoint_response(&e), e.version))
}

/// Sets up the endpoint (201, with its signing secret, shown once) or changes its URL or
/// state (200, no secret). The URL passes the SSRF guard (https, a public address).
#[utoipa::path(put, path = "/v1/admin/account-notifications", tag = "account-notifications", security(("bearer" = [])),
    request_body = AccountEndpointInput,
    responses(
        (status = 201, description = "Set up; the secret is shown once.", body = EndpointWithSecret),
        (status = 200, description = "Changed.", body = EndpointResponse),
        (status = 403, description = "`forbidden`: only owners (`settings:manage`).", body = ProblemBody),
        (status = 422, description = "`validation_failed` (e.g. a refused URL at `/url`).", body = ProblemBody),
    ))]
async fn put_account_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
    extract::Json(input): extract::Json<AccountEndpointInput>,
) -> Result<Response, Problem> {
    let (e, secret) = state
        .webhooks
        .put_account_endpoint(auth.principal.tenant_id, &input)
        .await?;
    let version = e.version;
    Ok(match secret {
        Some(secret) => with_etag(
            StatusCode::CREATED,
            EndpointWithSecret {
                endpoint: endpoint_response(&e),
                secret,
            },
            version,
        ),
        None => with_etag(StatusCode::OK, endpoint_response(&e), version),
    })
}

/// Removes the endpoint with its notifications and their attempts.
#[utoipa::path(delete, path = "/v1/admin/account-notifications", tag = "account-notifications", security(("bearer" = [])),
    responses((status = 204, description = "Removed."), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
async fn delete_account_endpoint(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
) -> Result<StatusCode, Problem> {
    state
        .webhooks
        .delete_account_endpoint(auth.principal.tenant_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret (shown once); the old one signs beside it for the exact overlap.
#[utoipa::path(post, path = "/v1/admin/account-notifications/rotate-secret", tag = "account-notifications", security(("bearer" = [])),
    responses((status = 200, body = EndpointWithSecret), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
async fn rotate_account_secret(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
) -> Result<Response, Problem> {
    let (e, secret) = state
        .webhooks
        .rotate_account_secret(auth.principal.tenant_id)
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

/// The notifications, newest first: their type, state and attempts, never their bodies.
#[utoipa::path(get, path = "/v1/admin/account-notifications/messages", tag = "account-notifications", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = MessageList), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
async fn list_account_messages(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
    ListQuery(page): ListQuery,
) -> Result<Json<MessageList>, Problem> {
    let page = state
        .webhooks
        .account_messages(auth.principal.tenant_id, page)
        .await?;
    Ok(Json(page.into()))
}

/// A notification's attempts, oldest first (the mail system's answers are not kept: they may
/// echo the secret).
#[utoipa::path(get, path = "/v1/admin/account-notifications/messages/{id}/attempts", tag = "account-notifications", security(("bearer" = [])),
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = AttemptList), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
async fn list_account_attempts(
    State(state): State<AppState>,
    auth: RequirePermission<SettingsManage>,
    Id(id): Id<keel_webhooks::domain::MessageId>,
    ListQuery(page): ListQuery,
) -> Result<Json<AttemptList>, Problem> {
    let page = state
        .webhooks
        .account_attempts(auth.principal.tenant_id, id, page)
        .await?;
    Ok(Json(page.into()))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            get_account_endpoint,
            put_account_endpoint,
            delete_account_endpoint
        ))
        .routes(routes!(rotate_account_secret))
        .routes(routes!(list_account_messages))
        .routes(routes!(list_account_attempts))
}
