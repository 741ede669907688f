//! `/v1/auth/*`: owner setup, login, refresh, logout (staff), and the public JWKS.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use keel_identity::services::auth::{LoginOutcome, Side, TokenPair};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, browser,
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
    /// `token` (default): both tokens in the body. `cookie`, for a browser console: the
    /// refresh token in an `HttpOnly` cookie for `/v1/auth` only, a `csrf_token` in the body
    /// (and a `keel_csrf` cookie) to send as `X-CSRF-Token` on refresh and logout.
    #[serde(default)]
    session: SessionMode,
}

/// How a login's tokens are handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionMode {
    #[default]
    Token,
    Cookie,
}

/// A staff refresh or logout: the refresh token in the body, or (a browser session) none,
/// and the session's cookie with `X-CSRF-Token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StaffRefreshRequest {
    refresh_token: Option<String>,
}

/// The second step of a staff login with MFA.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StaffMfaRequest {
    mfa_token: String,
    /// A current 6-digit TOTP code…
    code: Option<String>,
    /// …or one of the single-use backup codes.
    backup_code: Option<String>,
    /// As at login.
    #[serde(default)]
    session: SessionMode,
}

/// A browser session's tokens: the access token for the page's memory, the CSRF token for
/// `X-CSRF-Token`; the refresh token is only in its `HttpOnly` cookie.
#[derive(Serialize, ToSchema)]
pub(crate) struct BrowserSessionResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: i64,
    /// Seconds until the refresh cookie expires.
    refresh_expires_in: i64,
    csrf_token: String,
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
    BrowserSession(BrowserSessionResponse),
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

/// A new or refreshed pair as a browser session: the access and CSRF tokens in the body, the
/// refresh token and the CSRF token in cookies.
async fn browser_session(state: &AppState, pair: TokenPair) -> Result<Response, Problem> {
    let (tenant, session) = state
        .auth
        .refresh_session(&pair.refresh_token, Side::Admin)
        .await?;
    let csrf = state.browser.csrf.token(tenant, session);
    let cookies =
        state
            .browser
            .cookies(Some((&pair.refresh_token, &csrf, pair.refresh_expires_in)));
    let mut res = Json(LoginResponse::BrowserSession(BrowserSessionResponse {
        access_token: pair.access_token,
        token_type: pair.token_type,
        expires_in: pair.expires_in,
        refresh_expires_in: pair.refresh_expires_in,
        csrf_token: csrf,
    }))
    .into_response();
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
}

/// Tokens as the client asked for them.
async fn hand_over(
    state: &AppState,
    pair: TokenPair,
    mode: SessionMode,
) -> Result<Response, Problem> {
    match mode {
        SessionMode::Token => Ok(Json(TokenResponse::from(pair)).into_response()),
        SessionMode::Cookie => browser_session(state, pair).await,
    }
}

/// Logs a staff member in with shop, email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in (tokens, or with `\"session\": \"cookie\"` a browser session: cookies `keel_refresh` and `keel_csrf`), or `mfa_required` with an `mfa_token`.", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: the same answer whatever was wrong.", body = ProblemBody),
        (status = 429, description = "`too_many_attempts`: the account or address reached its limit; see `Retry-After`.", body = ProblemBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    extract::Json(req): extract::Json<LoginRequest>,
) -> Result<Response, Problem> {
    let outcome = state
        .auth
        .login(&req.tenant, &req.email, req.password, Some(client))
        .await?;
    match outcome {
        LoginOutcome::Tokens(pair) => hand_over(&state, pair, req.session).await,
        mfa @ LoginOutcome::MfaRequired { .. } => {
            Ok(Json(LoginResponse::from(mfa)).into_response())
        }
    }
}

/// Completes a login with MFA.
#[utoipa::path(post, path = "/v1/auth/mfa", tag = "auth", request_body = StaffMfaRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), 
        (status = 200, description = "Logged in (a browser session with `\"session\": \"cookie\"`).", body = LoginResponse),
        (status = 400, description = "`invalid_token`: unknown, expired, used or killed MFA token.", body = ProblemBody),
        (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody),
    ))]
async fn mfa(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<StaffMfaRequest>,
) -> Result<Response, Problem> {
    let pair = state
        .auth
        .complete_mfa(
            &req.mfa_token,
            req.code.as_deref(),
            req.backup_code.as_deref(),
            Side::Admin,
        )
        .await?;
    hand_over(&state, pair, req.session).await
}

/// Exchanges a refresh token for a new pair; the presented token is spent. A browser session
/// sends no token: its cookie, with the session's CSRF token in `X-CSRF-Token`, from the
/// console's own site.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = StaffRefreshRequest,
    responses(
        (status = 200, description = "New tokens (a browser session: new cookies and its tokens).", body = LoginResponse),
        (status = 401, description = "`invalid_refresh_token`, or `refresh_token_reused` (the session is now revoked).", body = ProblemBody),
        (status = 403, description = "`csrf_failed`: a browser session's request from another site or without its CSRF token; nothing was done.", body = ProblemBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    extract::Json(req): extract::Json<StaffRefreshRequest>,
) -> Result<Response, Problem> {
    if let Some(token) = req.refresh_token {
        let pair = state.auth.refresh(&token, Side::Admin).await?;
        return hand_over(&state, pair, SessionMode::Token).await;
    }
    let token = browser::cookie_refresh_token(&state, &headers).await?;
    let pair = state.auth.refresh(&token, Side::Admin).await?;
    browser_session(&state, pair).await
}

/// Ends the session the refresh token belongs to (a browser session: by its cookie, with its
/// CSRF token, and the cookies are cleared).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = StaffRefreshRequest,
    responses(
        (status = 204, description = "Session ended."),
        (status = 401, description = "`invalid_refresh_token`.", body = ProblemBody),
        (status = 403, description = "`csrf_failed`: a browser session's request from another site or without its CSRF token; nothing was done.", body = ProblemBody),
    ))]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    extract::Json(req): extract::Json<StaffRefreshRequest>,
) -> Result<Response, Problem> {
    if let Some(token) = req.refresh_token {
        state.auth.logout(&token, Side::Admin).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let token = browser::cookie_refresh_token(&state, &headers).await?;
    let mut res = match state.auth.logout(&token, Side::Admin).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        // A session already over: its cookies are cleared all the same.
        Err(keel_identity::services::auth::AuthError::InvalidRefreshToken) => {
            Problem::from(keel_identity::services::auth::AuthError::InvalidRefreshToken)
                .into_response()
        }
        Err(e) => return Err(e.into()),
    };
    for c in state.browser.cookies(None) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
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
