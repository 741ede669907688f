//! `/v1/admin/settings`: shop-wide policies (`settings:manage`, owners).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{RequireStaff, perm::SettingsManage},
    extract,
    problem::{Problem, ProblemBody},
};

/// The shop's policies.
#[derive(Serialize, ToSchema)]
struct SettingsResponse {
    /// Staff without confirmed MFA may only read their account and enrol.
    require_staff_mfa: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSettingsRequest {
    require_staff_mfa: bool,
}

/// The shop's policies.
#[utoipa::path(get, path = "/v1/admin/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SettingsResponse), (status = 403, body = ProblemBody)))]
async fn get_settings(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
) -> Result<Json<SettingsResponse>, Problem> {
    Ok(Json(SettingsResponse {
        require_staff_mfa: state.auth.staff_mfa_required(&principal).await?,
    }))
}

/// Changes the shop's policies.
#[utoipa::path(patch, path = "/v1/admin/settings", tag = "settings", security(("bearer" = [])), request_body = UpdateSettingsRequest,
    responses((status = 200, body = SettingsResponse), (status = 403, body = ProblemBody)))]
async fn update_settings(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
    extract::Json(req): extract::Json<UpdateSettingsRequest>,
) -> Result<Json<SettingsResponse>, Problem> {
    state
        .auth
        .set_staff_mfa_requirement(&principal, req.require_staff_mfa)
        .await?;
    Ok(Json(SettingsResponse {
        require_staff_mfa: req.require_staff_mfa,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, update_settings))
}
