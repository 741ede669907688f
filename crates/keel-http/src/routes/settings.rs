//! `/v1/admin/settings`: shop-wide policies (`settings:manage`, owners).

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use keel_kernel::{
    event::NewEvent,
    ratelimit::{Limit, LimitScope, Policy},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{RequireStaff, perm::SettingsManage},
    extract,
    problem::{FieldError, Problem, ProblemBody},
    ratelimit::{LimitRefusal, SetLimitsError},
};

/// A GCRA limit: `burst` requests at once, then one more every `interval_ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    /// Exact milliseconds between requests once the burst is spent (at least 1).
    #[schema(minimum = 1)]
    interval_ms: u64,
    /// Requests admitted at once from a full bucket (at least 1).
    #[schema(minimum = 1)]
    burst: u32,
}

impl From<Limit> for LimitBody {
    fn from(l: Limit) -> Self {
        Self {
            interval_ms: l.interval_ms(),
            burst: l.burst(),
        }
    }
}

/// One of the shop's rate limits.
#[derive(Serialize, ToSchema)]
struct ShopLimit {
    /// The limit that holds now: `burst` at once, then one every `interval_ms`.
    interval_ms: u64,
    burst: u32,
    /// The most the operator allows this shop (its override must stay within: no larger
    /// burst, no shorter interval).
    ceiling: LimitBody,
    /// Whether the shop set this limit itself (`false`: the ceiling holds).
    overridden: bool,
}

/// The shop's policies.
#[derive(Serialize, ToSchema)]
struct SettingsResponse {
    /// Staff without confirmed MFA may only read their account and enrol.
    require_staff_mfa: bool,
    /// Storefronts show exact available counts, not only whether a variant is in stock.
    show_stock_counts: bool,
    /// Catalog prices include tax (the tax shown is the part inside them).
    prices_include_tax: bool,
    /// The shop's rate limits by policy (`store_read`, `store_write`, `cart_create`,
    /// `checkout`, `promotion_address`, `promotion_cart`, `admin_read`, `admin_write`,
    /// `shop`).
    rate_limits: BTreeMap<&'static str, ShopLimit>,
}

/// The policies to change; absent ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSettingsRequest {
    require_staff_mfa: Option<bool>,
    show_stock_counts: Option<bool>,
    prices_include_tax: Option<bool>,
    /// The shop's own limits, each within its ceiling; `null` gives a policy back to its
    /// ceiling. Applied on every node within one second.
    rate_limits: Option<RateLimitChanges>,
}

/// Absent: unchanged; `null`: back to the ceiling; a limit: the shop's own.
#[expect(
    clippy::option_option,
    reason = "absent, null and a limit mean three things in a PATCH"
)]
fn set_or_clear<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<LimitBody>>, D::Error> {
    Option::<LimitBody>::deserialize(d).map(Some)
}

macro_rules! limit_changes {
    ($($field:ident => $policy:ident),* $(,)?) => {
        /// The shop's own limits to change, by policy (staff limits are the operator's: an
        /// owner's change to them is refused).
        #[derive(Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        struct RateLimitChanges {
            $(
                #[serde(default, deserialize_with = "set_or_clear")]
                #[schema(value_type = Option<LimitBody>, nullable)]
                $field: Option<Option<LimitBody>>,
            )*
        }

        impl RateLimitChanges {
            fn entries(&self) -> Vec<(Policy, Option<LimitBody>)> {
                let mut out = Vec::new();
                $(
                    if let Some(change) = self.$field {
                        out.push((Policy::$policy, change));
                    }
                )*
                out
            }
        }
    };
}

limit_changes! {
    store_read => StoreRead,
    store_write => StoreWrite,
    cart_create => CartCreate,
    checkout => Checkout,
    promotion_address => PromotionAddress,
    promotion_cart => PromotionCart,
    admin_read => AdminRead,
    admin_write => AdminWrite,
    shop => Shop,
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
        rate_limits: {
            let shop = state.limits.tenant(principal.tenant_id).await;
            let defaults = state.limits.settings();
            Policy::ALL
                .into_iter()
                .map(|p| {
                    let default = defaults.default_for(p);
                    let limit = shop.effective(p, default);
                    let ceiling = shop.ceiling(p, default);
                    (
                        p.name(),
                        ShopLimit {
                            interval_ms: limit.interval_ms(),
                            burst: limit.burst(),
                            ceiling: ceiling.into(),
                            overridden: shop.overrides.get(&p) == Some(&limit),
                        },
                    )
                })
                .collect()
        },
    })
}

/// `/rate_limits/<policy>` as a JSON pointer (policy names are `[a-z_]`: nothing to escape).
fn limit_pointer(name: &str) -> String {
    format!("/rate_limits/{name}")
}

fn limits_problem(e: SetLimitsError) -> Problem {
    match e {
        SetLimitsError::Refused(refused) => Problem::validation(
            refused
                .into_iter()
                .map(|(p, why)| FieldError {
                    pointer: limit_pointer(p.name()),
                    message: match why {
                        LimitRefusal::AboveCeiling(ceiling) => format!(
                            "above this shop's ceiling: burst at most {}, interval_ms at least {}",
                            ceiling.burst(),
                            ceiling.interval_ms()
                        ),
                        LimitRefusal::OperatorOnly => {
                            "staff limits are set by the operator only".to_owned()
                        }
                    },
                })
                .collect(),
        ),
        SetLimitsError::Store(e) => e.into(),
    }
}

/// The requested limit changes as domain values; every bad one named (nothing changes).
fn parse_limits(raw: &RateLimitChanges) -> Result<Vec<(Policy, Option<Limit>)>, Problem> {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for (policy, limit) in raw.entries() {
        match limit {
            None => changes.push((policy, None)),
            Some(l) => match Limit::bounded(l.interval_ms, l.burst) {
                Some(limit) => changes.push((policy, Some(limit))),
                None => errors.push(FieldError {
                    pointer: limit_pointer(policy.name()),
                    message:
                        "interval_ms and burst must both be at least 1, their product below 2^52"
                            .into(),
                }),
            },
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(Problem::validation(errors))
    }
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
    // Parsed and checked against the ceilings before anything changes: a bad limit changes
    // no other setting either.
    let limits = req.rate_limits.as_ref().map(parse_limits).transpose()?;
    if let Some(changes) = &limits {
        state
            .limits
            .check_tenant_limits(principal.tenant_id, LimitScope::Override, changes)
            .await
            .map_err(limits_problem)?;
    }
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
    if let Some(changes) = limits.filter(|c| !c.is_empty()) {
        let payload = serde_json::json!({
            "actor": {"kind": "staff", "id": principal.user_id.to_string()},
            "rate_limits": changes.iter().map(|(p, l)| (p.name(), l.map(LimitBody::from))).collect::<BTreeMap<_, _>>(),
        });
        let event = NewEvent::new(
            principal.tenant_id,
            "settings.rate_limits_changed",
            &payload,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| Problem::internal(&e))?;
        state
            .limits
            .set_tenant_limits(
                principal.tenant_id,
                LimitScope::Override,
                &changes,
                &[event],
            )
            .await
            .map_err(limits_problem)?;
    }
    Ok(Json(current(&state, &principal).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, update_settings))
}
