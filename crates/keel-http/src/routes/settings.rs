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
    /// Storefronts show exact available counts, not only whether a variant is in stock.
    show_stock_counts: bool,
    /// Catalog prices include tax (the tax shown is the part inside them).
    prices_include_tax: bool,
}

/// The policies to change; absent ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSettingsRequest {
    require_staff_mfa: Option<bool>,
    show_stock_counts: Option<bool>,
    prices_include_tax: Option<bool>,
}

async fn current(
    state: &AppState,
    principal: &keel_identity::services::auth::StaffPrincipal,
) -> Result<SettingsResponse, Problem> {
    Ok(SettingsResponse {
        require_staff_mfa: state.auth.staff_mfa_required(principal).await?,
        show_stock_counts: state
            .catalog
            .storefront_settings(principal.tenant_id)
            .await?
            .show_stock_counts,
        prices_include_tax: state
            .orders
            .pricing_settings(principal.tenant_id)
            .await?
            .prices_include_tax,
    })
}

/// The shop's policies.
#[utoipa::path(get, path = "/v1/admin/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SettingsResponse), (status = 403, body = ProblemBody)))]
async fn get_settings(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
) -> Result<Json<SettingsResponse>, Problem> {
    Ok(Json(current(&state, &principal).await?))
}

/// Changes the shop's policies.
#[utoipa::path(patch, path = "/v1/admin/settings", tag = "settings", security(("bearer" = [])), request_body = UpdateSettingsRequest,
    responses((status = 200, body = SettingsResponse), (status = 403, body = ProblemBody)))]
async fn update_settings(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
    extract::Json(req): extract::Json<UpdateSettingsRequest>,
) -> Result<Json<SettingsResponse>, Problem> {
    if let Some(required) = req.require_staff_mfa {
        state
            .auth
            .set_staff_mfa_requirement(&principal, required)
            .await?;
    }
    if let Some(show) = req.show_stock_counts {
        state
            .catalog
            .set_storefront_settings(
                principal.tenant_id,
                keel_catalog::ports::StorefrontSettings {
                    show_stock_counts: show,
                },
            )
            .await?;
    }
    if let Some(inclusive) = req.prices_include_tax {
        state
            .orders
            .set_pricing_settings(
                principal.tenant_id,
                keel_orders::ports::PricingSettings {
                    prices_include_tax: inclusive,
                },
            )
            .await?;
    }
    Ok(Json(current(&state, &principal).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, update_settings))
}
