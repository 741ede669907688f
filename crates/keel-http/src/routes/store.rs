//! `/v1/store/*` identity routes for shoppers: sign-up, login, refresh, logout, `/me`. Every
//! route needs the storefront's publishable key (`Keel-Publishable-Key`).

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::StatusCode,
};
use keel_identity::auth::Side;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{Customer, Storefront},
    extract,
    problem::{Problem, ProblemBody},
    routes::auth::{RefreshRequest, TokenResponse},
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerCredentials {
    email: String,
    password: String,
}

/// A customer account.
#[derive(Serialize, ToSchema)]
struct CustomerResponse {
    id: String,
    email: String,
    created_at: String,
}

/// A new account and its first tokens.
#[derive(Serialize, ToSchema)]
struct SignUpResponse {
    customer_id: String,
    tokens: TokenResponse,
}

/// Creates a customer account in this storefront's shop and logs it in.
#[utoipa::path(post, path = "/v1/store/customers", tag = "store", request_body = CustomerCredentials,
    params(("Keel-Publishable-Key" = String, Header, description = "The storefront's `pk_…` key")),
    responses(
        (status = 201, body = SignUpResponse),
        (status = 401, description = "`unauthorized`: missing or unknown publishable key.", body = ProblemBody),
        (status = 409, description = "`email_taken`.", body = ProblemBody),
        (status = 422, body = ProblemBody),
    ))]
async fn sign_up(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<CustomerCredentials>,
) -> Result<(StatusCode, Json<SignUpResponse>), Problem> {
    let (id, pair) = state
        .auth
        .sign_up_customer(tenant, &req.email, req.password)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SignUpResponse {
            customer_id: id.to_string(),
            tokens: pair.into(),
        }),
    ))
}

/// Customer login (throttled like staff logins).
#[utoipa::path(post, path = "/v1/store/auth/login", tag = "store", request_body = CustomerCredentials,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 200, body = TokenResponse), (status = 401, body = ProblemBody), (status = 429, body = ProblemBody)))]
async fn customer_login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<CustomerCredentials>,
) -> Result<Json<TokenResponse>, Problem> {
    Ok(Json(
        state
            .auth
            .login_customer(tenant, &req.email, req.password, Some(peer.ip()))
            .await?
            .into(),
    ))
}

/// Exchanges a customer refresh token for a new pair (rotation and reuse detection as for staff).
#[utoipa::path(post, path = "/v1/store/auth/refresh", tag = "store", request_body = RefreshRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 200, body = TokenResponse), (status = 401, body = ProblemBody)))]
async fn customer_refresh(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    Ok(Json(
        state
            .auth
            .refresh(&req.refresh_token, Side::Store { tenant })
            .await?
            .into(),
    ))
}

/// Ends the customer's session.
#[utoipa::path(post, path = "/v1/store/auth/logout", tag = "store", request_body = RefreshRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 204, description = "Session ended."), (status = 401, body = ProblemBody)))]
async fn customer_logout(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<RefreshRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .logout(&req.refresh_token, Side::Store { tenant })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The authenticated customer.
#[utoipa::path(get, path = "/v1/store/me", tag = "store", security(("bearer" = [])),
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 200, body = CustomerResponse), (status = 401, body = ProblemBody)))]
async fn get_store_me(
    State(state): State<AppState>,
    Customer(p): Customer,
) -> Result<Json<CustomerResponse>, Problem> {
    let c = state.auth.customer(&p).await?;
    Ok(Json(CustomerResponse {
        id: c.id.to_string(),
        email: c.email.as_str().to_owned(),
        created_at: c
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a UTC timestamp always formats as RFC 3339"),
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(customer_login))
        .routes(routes!(customer_refresh))
        .routes(routes!(customer_logout))
        .routes(routes!(get_store_me))
}
