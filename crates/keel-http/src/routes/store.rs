//! `/v1/store/*` identity routes for shoppers: sign-up, login (with MFA), refresh, logout,
//! password change and reset, `/me` and the customer's own MFA. Every
//! route needs the storefront's publishable key (`Keel-Publishable-Key`).

use axum::{Json, extract::State, http::StatusCode};
use keel_identity::services::auth::Side;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{Customer, Storefront},
    client::ClientAddr,
    extract,
    problem::{Problem, ProblemBody},
    routes::{
        auth::{LoginResponse, MfaRequest, RefreshRequest, ResetConfirmRequest, TokenResponse},
        me::{
            BackupCodes, BeginTotpRequest, ChangePasswordRequest, ConfirmTotpRequest,
            DisableTotpRequest, TotpEnrolmentResponse,
        },
    },
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
        (status = 503, description = "`overloaded`: password work is at its bound (node-wide, or for this client address); see `Retry-After`.", body = ProblemBody),
    ))]
async fn sign_up(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<CustomerCredentials>,
) -> Result<(StatusCode, Json<SignUpResponse>), Problem> {
    let (id, pair) = state
        .auth
        .sign_up_customer(tenant, &req.email, req.password, Some(client))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SignUpResponse {
            customer_id: id.to_string(),
            tokens: pair.into(),
        }),
    ))
}

/// Customer login (throttled like staff logins). A customer with MFA gets `mfa_required` and
/// an `mfa_token` for `/v1/store/auth/mfa`.
#[utoipa::path(post, path = "/v1/store/auth/login", tag = "store", request_body = CustomerCredentials,
    params(("Keel-Publishable-Key" = String, Header)),
    responses(
        (status = 200, description = "Logged in, or `mfa_required` with an `mfa_token`.", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: the same answer whatever was wrong.", body = ProblemBody),
        (status = 429, description = "`too_many_attempts`; see `Retry-After`.", body = ProblemBody),
    ))]
async fn customer_login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<CustomerCredentials>,
) -> Result<Json<LoginResponse>, Problem> {
    Ok(Json(
        state
            .auth
            .login_customer(tenant, &req.email, req.password, Some(client))
            .await?
            .into(),
    ))
}

/// Completes a customer login with MFA: the token from `/v1/store/auth/login` and a TOTP or
/// backup code. Only this storefront's customers' tokens are accepted.
#[utoipa::path(post, path = "/v1/store/auth/mfa", tag = "store", request_body = MfaRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), 
        (status = 200, description = "Logged in.", body = TokenResponse),
        (status = 400, description = "`invalid_token`: unknown, expired, used or killed MFA token, or another shop's.", body = ProblemBody),
        (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody),
    ))]
async fn customer_mfa(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<MfaRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let pair = state
        .auth
        .complete_mfa(
            &req.mfa_token,
            req.code.as_deref(),
            req.backup_code.as_deref(),
            Side::Store { tenant },
        )
        .await?;
    Ok(Json(pair.into()))
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

/// Starts TOTP enrolment for the customer (replacing an unconfirmed one); needs the current
/// password, which counts against the account's second-factor limit.
#[utoipa::path(post, path = "/v1/store/me/mfa/totp", tag = "store", security(("bearer" = [])), request_body = BeginTotpRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses(
        (status = 200, body = TotpEnrolmentResponse),
        (status = 401, body = ProblemBody),
        (status = 403, description = "`reauthentication_failed`: the password is wrong.", body = ProblemBody),
        (status = 409, description = "`mfa_already_enabled`.", body = ProblemBody),
        (status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody),
    ))]
async fn customer_begin_totp(
    State(state): State<AppState>,
    Customer(p): Customer,
    extract::Json(req): extract::Json<BeginTotpRequest>,
) -> Result<Json<TotpEnrolmentResponse>, Problem> {
    Ok(Json(state.auth.begin_totp(&p, req.password).await?.into()))
}

/// Confirms the customer's enrolment with a current code; MFA is on from now and the backup
/// codes are returned once.
#[utoipa::path(post, path = "/v1/store/me/mfa/totp/confirm", tag = "store", security(("bearer" = [])), request_body = ConfirmTotpRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 200, body = BackupCodes), (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody), (status = 409, description = "`mfa_already_enabled` or `mfa_not_pending`.", body = ProblemBody)))]
async fn customer_confirm_totp(
    State(state): State<AppState>,
    Customer(p): Customer,
    extract::Json(req): extract::Json<ConfirmTotpRequest>,
) -> Result<Json<BackupCodes>, Problem> {
    Ok(Json(BackupCodes {
        backup_codes: state.auth.confirm_totp(&p, &req.code).await?,
    }))
}

/// Turns the customer's MFA off; needs the password and a current TOTP or backup code.
#[utoipa::path(delete, path = "/v1/store/me/mfa/totp", tag = "store", security(("bearer" = [])), request_body = DisableTotpRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 204, description = "MFA is off."), (status = 403, description = "`reauthentication_failed`.", body = ProblemBody), (status = 409, description = "`mfa_not_enabled`.", body = ProblemBody)))]
async fn customer_disable_totp(
    State(state): State<AppState>,
    Customer(p): Customer,
    extract::Json(req): extract::Json<DisableTotpRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .disable_totp(
            &p,
            req.password,
            req.code.as_deref(),
            req.backup_code.as_deref(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the customer's backup codes; needs a current TOTP code.
#[utoipa::path(post, path = "/v1/store/me/mfa/backup-codes", tag = "store", security(("bearer" = [])), request_body = ConfirmTotpRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 200, body = BackupCodes), (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody), (status = 409, description = "`mfa_not_enabled`.", body = ProblemBody)))]
async fn customer_regenerate_backup_codes(
    State(state): State<AppState>,
    Customer(p): Customer,
    extract::Json(req): extract::Json<ConfirmTotpRequest>,
) -> Result<Json<BackupCodes>, Problem> {
    Ok(Json(BackupCodes {
        backup_codes: state.auth.regenerate_backup_codes(&p, &req.code).await?,
    }))
}

/// Changes the customer's password; every other session of theirs ends, this one stays.
#[utoipa::path(post, path = "/v1/store/me/password", tag = "store", security(("bearer" = [])), request_body = ChangePasswordRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), 
        (status = 204, description = "Changed."),
        (status = 403, description = "`reauthentication_failed`: the current password is wrong.", body = ProblemBody),
        (status = 422, body = ProblemBody),
    ))]
async fn customer_change_password(
    State(state): State<AppState>,
    Customer(p): Customer,
    extract::Json(req): extract::Json<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .change_password(&p, req.current_password, req.new_password)
        .await
        .map_err(|e| crate::problem::auth_problem_for_field(e, "/new_password"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerResetRequest {
    email: String,
}

/// Starts a customer password reset. Always 202: the answer never says whether the account
/// exists. For an account of this shop, `customer.password_reset_requested` (with a
/// single-use `reset_token`, valid 3600 s) is recorded for the shop's own systems to deliver.
#[utoipa::path(post, path = "/v1/store/auth/password-reset", tag = "store", request_body = CustomerResetRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 202, description = "Accepted.")))]
async fn customer_request_password_reset(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<CustomerResetRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .request_customer_password_reset(tenant, &req.email, Some(client))
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new customer password with a reset token from this shop; every session of the
/// account ends.
#[utoipa::path(post, path = "/v1/store/auth/password-reset/confirm", tag = "store", request_body = ResetConfirmRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses(
        (status = 204, description = "Password replaced."),
        (status = 400, description = "`invalid_token`: unknown, expired, used, or not this shop's customer's.", body = ProblemBody),
        (status = 422, description = "`validation_failed`: the new password does not meet the policy.", body = ProblemBody),
    ))]
async fn customer_confirm_password_reset(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    extract::Json(req): extract::Json<ResetConfirmRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .confirm_password_reset(&req.reset_token, req.new_password, Side::Store { tenant })
        .await
        .map_err(|e| crate::problem::auth_problem_for_field(e, "/new_password"))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(customer_login))
        .routes(routes!(customer_mfa))
        .routes(routes!(customer_begin_totp, customer_disable_totp))
        .routes(routes!(customer_confirm_totp))
        .routes(routes!(customer_regenerate_backup_codes))
        .routes(routes!(customer_change_password))
        .routes(routes!(customer_request_password_reset))
        .routes(routes!(customer_confirm_password_reset))
        .routes(routes!(customer_refresh))
        .routes(routes!(customer_logout))
        .routes(routes!(get_store_me))
}
