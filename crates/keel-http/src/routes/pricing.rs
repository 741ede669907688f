//! `/v1/admin/tax-rates`, `/v1/admin/shipping-options`, `/v1/admin/promotions`: pricing setup
//! (`catalog:read` to read, `catalog:write` to change). Rates are exact decimal strings,
//! amounts integer minor units per currency.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use keel_orders::setup::{
    Promotion, PromotionId, PromotionInput, PromotionPatch, PromotionValue, ShippingOption,
    ShippingOptionId, ShippingOptionInput, ShippingOptionPatch, TaxRate, TaxRateId, TaxRateInput,
    TaxRatePatch,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{
        RequirePermission,
        perm::{CatalogRead, CatalogWrite},
    },
    caching::{IfMatch, IfNoneMatch, conditional_json, version_etag},
    extract::PageParams,
    extract::{self, ListQuery},
    problem::{Problem, ProblemBody},
    routes::{catalog::MoneyResponse, rfc3339},
};

fn reply<T: Serialize>(status: StatusCode, body: &T, version: i64) -> Response {
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::ETAG, version_etag(version));
    res
}

#[derive(Serialize, ToSchema)]
struct TaxRateResponse {
    id: String,
    country: String,
    region: Option<String>,
    /// Exact decimal percent, e.g. `"8.875"`.
    rate: String,
    shipping_taxable: bool,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl From<&TaxRate> for TaxRateResponse {
    fn from(t: &TaxRate) -> Self {
        Self {
            id: t.id.to_string(),
            country: t.country.to_string(),
            region: t.region.clone(),
            rate: t.rate.to_string(),
            shipping_taxable: t.shipping_taxable,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            version: t.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ShippingOptionResponse {
    id: String,
    name: String,
    country: String,
    amounts: Vec<MoneyResponse>,
    free_over: Vec<MoneyResponse>,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl From<&ShippingOption> for ShippingOptionResponse {
    fn from(o: &ShippingOption) -> Self {
        Self {
            id: o.id.to_string(),
            name: o.name.clone(),
            country: o.country.to_string(),
            amounts: o.amounts.iter().copied().map(MoneyResponse::from).collect(),
            free_over: o
                .free_over
                .iter()
                .copied()
                .map(MoneyResponse::from)
                .collect(),
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
            version: o.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct PromotionResponse {
    id: String,
    code: String,
    /// Exact decimal percent off, for a percent promotion.
    percent: Option<String>,
    /// Amounts off per currency, for a fixed-amount promotion.
    amounts: Option<Vec<MoneyResponse>>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    usage_limit: Option<i64>,
    per_customer_limit: Option<i64>,
    /// Orders that used it so far.
    times_used: i64,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl From<&Promotion> for PromotionResponse {
    fn from(p: &Promotion) -> Self {
        let (percent, amounts) = match &p.value {
            PromotionValue::Percent { percent } => (Some(percent.to_string()), None),
            PromotionValue::FixedAmount { amounts } => (
                None,
                Some(amounts.iter().copied().map(MoneyResponse::from).collect()),
            ),
        };
        Self {
            id: p.id.to_string(),
            code: p.code.clone(),
            percent,
            amounts,
            starts_at: p.starts_at.map(rfc3339),
            ends_at: p.ends_at.map(rfc3339),
            usage_limit: p.usage_limit,
            per_customer_limit: p.per_customer_limit,
            times_used: p.times_used,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            version: p.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct TaxRateList {
    data: Vec<TaxRateResponse>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ShippingOptionList {
    data: Vec<ShippingOptionResponse>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct PromotionList {
    data: Vec<PromotionResponse>,
    next_cursor: Option<String>,
}

/// Defines list, create, get, update and delete handlers for one kind of setup record.
macro_rules! setup_routes {
    (
        $tag:literal, $path:literal, $item:literal,
        $id:ty, $value:ty, $input:ty, $patch:ty, $resp:ty, $list:ty,
        $list_fn:ident, $create_fn:ident, $get_fn:ident, $update_fn:ident, $delete_fn:ident,
        $svc_list:ident, $svc_create:ident, $svc_get:ident, $svc_update:ident, $svc_delete:ident
    ) => {
        #[doc = concat!("The shop's ", $tag, ".")]
        #[utoipa::path(get, path = $path, tag = "pricing", security(("bearer" = [])),
            params(PageParams),
            responses((status = 200, body = $list)))]
        async fn $list_fn(
            State(state): State<AppState>,
            auth: RequirePermission<CatalogRead>,
            ListQuery(page): ListQuery,
        ) -> Result<Json<$list>, Problem> {
            let page = state.orders.$svc_list(auth.principal.tenant_id, page).await?;
            Ok(Json(<$list>::from_page(page)))
        }

        #[doc = concat!("Creates one of the shop's ", $tag, ".")]
        #[utoipa::path(post, path = $path, tag = "pricing", security(("bearer" = [])), request_body = $input,
            responses((status = 201, body = $resp), (status = 422, body = ProblemBody)))]
        async fn $create_fn(
            State(state): State<AppState>,
            auth: RequirePermission<CatalogWrite>,
            extract::Json(input): extract::Json<$input>,
        ) -> Result<Response, Problem> {
            let v = state.orders.$svc_create(auth.principal.tenant_id, &input).await?;
            Ok(reply(StatusCode::CREATED, &<$resp>::from(&v), v.version))
        }

        #[doc = concat!("One of the shop's ", $tag, ".")]
        #[utoipa::path(get, path = $item, tag = "pricing", security(("bearer" = [])),
            params(("id" = String, Path)),
            responses((status = 200, body = $resp), (status = 304, description = "Not modified."), (status = 404, body = ProblemBody)))]
        async fn $get_fn(
            State(state): State<AppState>,
            auth: RequirePermission<CatalogRead>,
            Id(id): Id<$id>,
            if_none_match: IfNoneMatch,
        ) -> Result<Response, Problem> {
            let v = state.orders.$svc_get(auth.principal.tenant_id, id).await?;
            Ok(conditional_json(&<$resp>::from(&v), version_etag(v.version), &if_none_match, None, None))
        }

        #[doc = concat!("Changes one of the shop's ", $tag, "; with `If-Match`, only if unchanged.")]
        #[utoipa::path(patch, path = $item, tag = "pricing", security(("bearer" = [])), request_body = $patch,
            params(("id" = String, Path)),
            responses((status = 200, body = $resp), (status = 412, body = ProblemBody), (status = 422, body = ProblemBody)))]
        async fn $update_fn(
            State(state): State<AppState>,
            auth: RequirePermission<CatalogWrite>,
            Id(id): Id<$id>,
            IfMatch(if_match): IfMatch,
            extract::Json(patch): extract::Json<$patch>,
        ) -> Result<Response, Problem> {
            let v = state.orders.$svc_update(auth.principal.tenant_id, id, &patch, if_match).await?;
            Ok(reply(StatusCode::OK, &<$resp>::from(&v), v.version))
        }

        #[doc = concat!("Deletes one of the shop's ", $tag, ".")]
        #[utoipa::path(delete, path = $item, tag = "pricing", security(("bearer" = [])),
            params(("id" = String, Path)),
            responses((status = 204, description = "Deleted."), (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
        async fn $delete_fn(
            State(state): State<AppState>,
            auth: RequirePermission<CatalogWrite>,
            Id(id): Id<$id>,
            IfMatch(if_match): IfMatch,
        ) -> Result<StatusCode, Problem> {
            state.orders.$svc_delete(auth.principal.tenant_id, id, if_match).await?;
            Ok(StatusCode::NO_CONTENT)
        }

        impl $list {
            fn from_page(page: keel_kernel::page::Page<$value>) -> Self {
                Self {
                    data: page.items.iter().map(<$resp>::from).collect(),
                    next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
                }
            }
        }
    };
}

setup_routes!(
    "tax rates",
    "/v1/admin/tax-rates",
    "/v1/admin/tax-rates/{id}",
    TaxRateId,
    TaxRate,
    TaxRateInput,
    TaxRatePatch,
    TaxRateResponse,
    TaxRateList,
    list_tax_rates,
    create_tax_rate,
    get_tax_rate,
    update_tax_rate,
    delete_tax_rate,
    tax_rates,
    create_tax_rate,
    tax_rate,
    update_tax_rate,
    delete_tax_rate
);
setup_routes!(
    "shipping options",
    "/v1/admin/shipping-options",
    "/v1/admin/shipping-options/{id}",
    ShippingOptionId,
    ShippingOption,
    ShippingOptionInput,
    ShippingOptionPatch,
    ShippingOptionResponse,
    ShippingOptionList,
    list_shipping_options,
    create_shipping_option,
    get_shipping_option,
    update_shipping_option,
    delete_shipping_option,
    shipping_options,
    create_shipping_option,
    shipping_option,
    update_shipping_option,
    delete_shipping_option
);
setup_routes!(
    "promotions",
    "/v1/admin/promotions",
    "/v1/admin/promotions/{id}",
    PromotionId,
    Promotion,
    PromotionInput,
    PromotionPatch,
    PromotionResponse,
    PromotionList,
    list_promotions,
    create_promotion,
    get_promotion,
    update_promotion,
    delete_promotion,
    promotions,
    create_promotion,
    promotion,
    update_promotion,
    delete_promotion
);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tax_rates, create_tax_rate))
        .routes(routes!(get_tax_rate, update_tax_rate, delete_tax_rate))
        .routes(routes!(list_shipping_options, create_shipping_option))
        .routes(routes!(
            get_shipping_option,
            update_shipping_option,
            delete_shipping_option
        ))
        .routes(routes!(list_promotions, create_promotion))
        .routes(routes!(get_promotion, update_promotion, delete_promotion))
}
