//! `/v1/me*`: the authenticated staff member, their sessions.

use axum::{Json, extract::State, http::StatusCode};
use keel_identity::domain::staff::{Session, SessionId};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{Staff, StaffEnrolling},
    problem::{Problem, ProblemBody},
    routes::rfc3339,
};

/// The caller's account.
#[derive(Serialize, ToSchema)]
struct MeResponse {
    id: String,
    tenant_id: String,
    email: String,
    /// `owner`, `admin`, `staff` or `viewer`.
    role: &'static str,
    /// What the role allows, e.g. `orders:read`.
    permissions: Vec<&'static str>,
    status: &'static str,
    created_at: String,
}

/// One login session.
#[derive(Serialize, ToSchema)]
struct SessionResponse {
    id: String,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    /// True for the session of the token making this request.
    current: bool,
}

/// A list page (sessions are few, so always one page).
#[derive(Serialize, ToSchema)]
struct SessionList {
    data: Vec<SessionResponse>,
    next_cursor: Option<String>,
}

/// The authenticated staff member.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, body = MeResponse),
        (status = 401, description = "`unauthorized`.", body = ProblemBody),
    ))]
async fn get_me(
    State(state): State<AppState>,
    StaffEnrolling(p): StaffEnrolling,
) -> Result<Json<MeResponse>, Problem> {
    let user = state.auth.me(&p).await?;
    Ok(Json(MeResponse {
        id: user.id.to_string(),
        tenant_id: user.tenant_id.to_string(),
        email: user.email.as_str().to_owned(),
        role: user.role.as_str(),
        permissions: user.role.permissions().iter().map(|p| p.as_str()).collect(),
        status: user.status.as_str(),
        created_at: rfc3339(user.created_at),
    }))
}

fn session_response(s: &Session, current: SessionId) -> SessionResponse {
    SessionResponse {
        id: s.id.to_string(),
        created_at: rfc3339(s.created_at),
        last_used_at: rfc3339(s.last_used_at),
        expires_at: rfc3339(s.expires_at),
        current: s.id == current,
    }
}

/// The caller's active sessions, newest first.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ProblemBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    Staff(p): Staff,
) -> Result<Json<SessionList>, Problem> {
    let sessions = state.auth.sessions(&p).await?;
    Ok(Json(SessionList {
        data: sessions
            .iter()
            .map(|s| session_response(s, p.session_id))
            .collect(),
        next_cursor: None,
    }))
}

/// Revokes one of the caller's sessions (its refresh token stops working; access tokens of
/// that session are refused from now on).
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id, `ses_…`")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, body = ProblemBody),
        (status = 404, description = "No such session of yours.", body = ProblemBody),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    Staff(p): Staff,
    Id(id): Id<SessionId>,
) -> Result<StatusCode, Problem> {
    state.auth.revoke_own_session(&p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A started TOTP enrolment.
#[derive(Serialize, ToSchema)]
pub(crate) struct TotpEnrolmentResponse {
    /// Base32 secret for manual entry.
    secret: String,
    /// `otpauth://totp/…` for a QR code.
    otpauth_uri: String,
}

impl From<keel_identity::services::auth::TotpEnrolment> for TotpEnrolmentResponse {
    fn from(e: keel_identity::services::auth::TotpEnrolment) -> Self {
        Self {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
        }
    }
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmTotpRequest {
    pub(crate) code: String,
}

/// Ten single-use backup codes, shown once.
#[derive(Serialize, ToSchema)]
pub(crate) struct BackupCodes {
    pub(crate) backup_codes: Vec<String>,
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisableTotpRequest {
    pub(crate) password: String,
    pub(crate) code: Option<String>,
    pub(crate) backup_code: Option<String>,
}

/// Starting an enrolment needs the current password: a stolen access token alone must not
/// bind an attacker's authenticator to the account.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeginTotpRequest {
    pub(crate) password: String,
}

/// Starts TOTP enrolment (replacing an unconfirmed one); needs the current password, which
/// counts against the account's second-factor limit.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "me", security(("bearer" = [])), request_body = BeginTotpRequest,
    responses(
        (status = 200, body = TotpEnrolmentResponse),
        (status = 403, description = "`reauthentication_failed`: the password is wrong.", body = ProblemBody),
        (status = 409, description = "`mfa_already_enabled`.", body = ProblemBody),
        (status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody),
    ))]
async fn begin_totp(
    State(state): State<AppState>,
    StaffEnrolling(p): StaffEnrolling,
    crate::extract::Json(req): crate::extract::Json<BeginTotpRequest>,
) -> Result<Json<TotpEnrolmentResponse>, Problem> {
    Ok(Json(state.auth.begin_totp(&p, req.password).await?.into()))
}

/// Confirms the enrolment with a current code; MFA is on from now and the backup codes are
/// returned once.
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "me", security(("bearer" = [])), request_body = ConfirmTotpRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 200, body = BackupCodes), (status = 401, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn confirm_totp(
    State(state): State<AppState>,
    StaffEnrolling(p): StaffEnrolling,
    crate::extract::Json(req): crate::extract::Json<ConfirmTotpRequest>,
) -> Result<Json<BackupCodes>, Problem> {
    Ok(Json(BackupCodes {
        backup_codes: state.auth.confirm_totp(&p, &req.code).await?,
    }))
}

/// Turns MFA off; needs the password and a current TOTP or backup code.
#[utoipa::path(delete, path = "/v1/me/mfa/totp", tag = "me", security(("bearer" = [])), request_body = DisableTotpRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 204, description = "MFA is off."), (status = 403, description = "`reauthentication_failed`.", body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn disable_totp(
    State(state): State<AppState>,
    Staff(p): Staff,
    crate::extract::Json(req): crate::extract::Json<DisableTotpRequest>,
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

/// Replaces the backup codes; needs a current TOTP code.
#[utoipa::path(post, path = "/v1/me/mfa/backup-codes", tag = "me", security(("bearer" = [])), request_body = ConfirmTotpRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), (status = 200, body = BackupCodes), (status = 401, description = "`invalid_mfa_code`.", body = ProblemBody), (status = 409, description = "`mfa_not_enabled`.", body = ProblemBody)))]
async fn regenerate_backup_codes(
    State(state): State<AppState>,
    Staff(p): Staff,
    crate::extract::Json(req): crate::extract::Json<ConfirmTotpRequest>,
) -> Result<Json<BackupCodes>, Problem> {
    Ok(Json(BackupCodes {
        backup_codes: state.auth.regenerate_backup_codes(&p, &req.code).await?,
    }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePasswordRequest {
    pub(crate) current_password: String,
    pub(crate) new_password: String,
}

/// Changes the caller's password; every other session ends, this one stays.
#[utoipa::path(post, path = "/v1/me/password", tag = "me", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 429, description = "`too_many_attempts`: the account's second factor is locked; see `Retry-After`.", body = ProblemBody), 
        (status = 204, description = "Changed."),
        (status = 403, description = "`reauthentication_failed`: the current password is wrong.", body = ProblemBody),
        (status = 422, body = ProblemBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    Staff(p): Staff,
    crate::extract::Json(req): crate::extract::Json<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .change_password(&p, req.current_password, req.new_password)
        .await
        .map_err(|e| crate::problem::auth_problem_for_field(e, "/new_password"))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(list_sessions))
        .routes(routes!(delete_session))
        .routes(routes!(begin_totp, disable_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(change_password))
        .routes(routes!(regenerate_backup_codes))
}
