//! `/v1/auth/*`: owner setup, login, refresh, logout (staff), and the public JWKS.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use keel_identity::services::auth::{LoginOutcome, Side, TokenPair};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    client::ClientAddr,
    extract,
    problem::{Problem, ProblemBody},
};

/// Redeems the one-time setup token printed by `keel tenant create --owner-email`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    setup_token: String,
    /// At least 12 characters, at most 1024 bytes, hard to guess, not containing the email or shop name.
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// The shop's slug.
    tenant: String,
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    pub(crate) refresh_token: String,
}

/// The second step of a login with MFA: the token from `/v1/auth/login` and one code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MfaRequest {
    pub(crate) mfa_token: String,
    /// A current 6-digit TOTP code…
    pub(crate) code: Option<String>,
    /// …or one of the single-use backup codes.
    pub(crate) backup_code: Option<String>,
}

/// The password was right; send a code with this token to `/v1/auth/mfa` (staff) or
/// `/v1/store/auth/mfa` (customers).
#[derive(Serialize, ToSchema)]
pub(crate) struct MfaChallenge {
    /// Always `true`.
    mfa_required: bool,
    mfa_token: String,
    /// Seconds until the MFA token expires.
    expires_in: i64,
}

/// Either tokens, or an MFA challenge.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum LoginResponse {
    Tokens(TokenResponse),
    MfaRequired(MfaChallenge),
}

impl From<LoginOutcome> for LoginResponse {
    fn from(outcome: LoginOutcome) -> Self {
        match outcome {
            LoginOutcome::Tokens(pair) => Self::Tokens(pair.into()),
            LoginOutcome::MfaRequired {
                mfa_token,
                expires_in,
            } => Self::MfaRequired(MfaChallenge {
                mfa_required: true,
                mfa_token,
                expires_in,
            }),
        }
    }
}

/// Tokens: a short-lived access token and a single-use refresh token.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    /// EdDSA-signed JWT; send as `Authorization: Bearer …`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    /// Opaque; exchange it once at `/v1/auth/refresh`. Using it twice revokes the session.
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: i64,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            token_type: p.token_type,
            expires_in: p.expires_in,
            refresh_token: p.refresh_token,
            refresh_expires_in: p.refresh_expires_in,
        }
    }
}

/// Sets the owner's first password and logs them in.
#[utoipa::path(post, path = "/v1/auth/setup", tag = "auth", request_body = SetupRequest,
    responses(
        (status = 200, description = "Owner activated and logged in.", body = TokenResponse),
        (status = 400, description = "`invalid_token`: unknown, expired or used setup token.", body = ProblemBody),
        (status = 422, description = "`validation_failed`: the password does not meet the policy.", body = ProblemBody),
    ))]
async fn setup(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<SetupRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    Ok(Json(
        state
            .auth
            .setup(&req.setup_token, req.password)
            .await?
            .into(),
    ))
}

/// Logs a staff member in with shop, email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in, or `mfa_required` with an `mfa_token`.", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: the same answer whatever was wrong.", body = ProblemBody),
        (status = 429, description = "`too_many_attempts`: the account or address reached its limit; see `Retry-After`.", body = ProblemBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    extract::Json(req): extract::Json<LoginRequest>,
) -> Result<Json<LoginResponse>, Problem> {
    let outcome = state
        .auth
        .login(&req.tenant, &req.email, req.password, Some(client))
        .await?;
    Ok(Json(outcome.into()))
}

/// Completes a login with MFA.
#[utoipa::path(post, path = "/v1/auth/mfa", tag = "auth", request_body = MfaRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), 
        (status = 200, description = "Logged in.", body = TokenResponse),
        (status = 400, description = "`invalid_token`: unknown, expired, used or killed MFA token.", body = ProblemBody),
        (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody),
    ))]
async fn mfa(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<MfaRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let pair = state
        .auth
        .complete_mfa(
            &req.mfa_token,
            req.code.as_deref(),
            req.backup_code.as_deref(),
            Side::Admin,
        )
        .await?;
    Ok(Json(pair.into()))
}

/// Exchanges a refresh token for a new pair; the presented token is spent.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens.", body = TokenResponse),
        (status = 401, description = "`invalid_refresh_token`, or `refresh_token_reused` (the session is now revoked).", body = ProblemBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    Ok(Json(
        state
            .auth
            .refresh(&req.refresh_token, Side::Admin)
            .await?
            .into(),
    ))
}

/// Ends the session the refresh token belongs to.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 204, description = "Session ended."),
        (status = 401, description = "`invalid_refresh_token`.", body = ProblemBody),
    ))]
async fn logout(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<RefreshRequest>,
) -> Result<StatusCode, Problem> {
    state.auth.logout(&req.refresh_token, Side::Admin).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify access tokens (RFC 7517 JWK Set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JWK Set with Ed25519 (`OKP`) keys.")))]
async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    let keys = state.auth.keys().public_keys().await?;
    Ok(Json(
        serde_json::json!({"keys": keys.iter().map(keel_identity::domain::jwt::PublicKey::to_jwk).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    tenant: String,
    email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetConfirmRequest {
    pub(crate) reset_token: String,
    pub(crate) new_password: String,
}

/// Starts a password reset. Always 202: the answer never says whether the account exists.
/// For an active account, `staff_user.password_reset_requested` (with a single-use
/// `reset_token`, valid 3600 s) is recorded for the shop's own systems to deliver.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "Accepted.")))]
async fn request_password_reset(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    extract::Json(req): extract::Json<ResetRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .request_password_reset(&req.tenant, &req.email, Some(client))
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with a reset token; every session of the account ends.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirmRequest,
    responses(
        (status = 204, description = "Password replaced."),
        (status = 400, description = "`invalid_token`.", body = ProblemBody),
        (status = 422, description = "`validation_failed`: the new password does not meet the policy.", body = ProblemBody),
    ))]
async fn confirm_password_reset(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<ResetConfirmRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .confirm_password_reset(&req.reset_token, req.new_password, Side::Admin)
        .await
        .map_err(|e| crate::problem::auth_problem_for_field(e, "/new_password"))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(setup))
        .routes(routes!(login))
        .routes(routes!(mfa))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(jwks))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
}
