//! `/v1/admin/products*`: products and their variants (`catalog:read` to read,
//! `catalog:write` to change), the batch upsert, and `/v1/store/products*` for storefronts.
//! Single-resource reads carry a strong `ETag`; `If-None-Match` answers 304 and `If-Match` on
//! PATCH/DELETE answers 412 when stale.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use keel_catalog::{
    ProductId, VariantId,
    domain::{
        Product, ProductInput, ProductOption, ProductPatchInput, Variant, VariantInput,
        VariantPatchInput,
    },
    ports::{ProductCursor, ProductFilter, ProductSort},
    service::{StoreProduct, parse_sort},
};
use keel_kernel::{
    money::{Currency, Money},
    page::Limit,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::{Id, path_id};
use crate::{
    AppState,
    auth::{
        RequirePermission, Storefront,
        perm::{CatalogRead, CatalogWrite},
    },
    caching::{IfMatch, IfNoneMatch, body_etag, conditional_json, version_etag},
    extract::PageParams,
    extract::{self, form_pairs},
    problem::{Problem, ProblemBody, ProblemKind},
    routes::rfc3339,
};

/// An exact amount: integer minor units of an ISO 4217 currency.
#[derive(Serialize, ToSchema, Debug, Clone, Copy)]
pub(crate) struct MoneyResponse {
    /// Minor units (cents for USD, yen for JPY, fils for KWD).
    amount: i64,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    currency: &'static str,
}

impl From<Money> for MoneyResponse {
    fn from(m: Money) -> Self {
        Self {
            amount: m.minor(),
            currency: m.currency().code(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct VariantResponse {
    id: String,
    product_id: String,
    sku: String,
    title: Option<String>,
    option_values: Vec<String>,
    weight_grams: Option<u32>,
    /// One per currency, in currency-code order.
    prices: Vec<MoneyResponse>,
    created_at: String,
    updated_at: String,
    /// Moves on every change of this variant; its `ETag` is `"v<version>"`.
    version: i64,
}

impl From<&Variant> for VariantResponse {
    fn from(v: &Variant) -> Self {
        Self {
            id: v.id.to_string(),
            product_id: v.product_id.to_string(),
            sku: v.sku.as_str().to_owned(),
            title: v.title.clone(),
            option_values: v.option_values.clone(),
            weight_grams: v.weight_grams,
            prices: v.prices.iter().copied().map(MoneyResponse::from).collect(),
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
            version: v.version,
        }
    }
}

/// A product with its variants, as staff see it.
#[derive(Serialize, ToSchema)]
struct ProductResponse {
    id: String,
    title: String,
    handle: String,
    description: String,
    /// `draft`, `active` or `archived`; only `active` products reach storefronts.
    status: &'static str,
    options: Vec<ProductOption>,
    metadata: BTreeMap<String, String>,
    variants: Vec<VariantResponse>,
    created_at: String,
    updated_at: String,
    /// Moves on every change of the product or any variant; its `ETag` is `"v<version>"`.
    version: i64,
}

impl From<&Product> for ProductResponse {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id.to_string(),
            title: p.title.clone(),
            handle: p.handle.as_str().to_owned(),
            description: p.description.clone(),
            status: p.status.as_str(),
            options: p.options.clone(),
            metadata: p.metadata.clone(),
            variants: p.variants.iter().map(VariantResponse::from).collect(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            version: p.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ProductList {
    data: Vec<ProductResponse>,
    next_cursor: Option<String>,
}

fn bad_query(message: &'static str) -> Problem {
    Problem::new(ProblemKind::BAD_REQUEST, message)
}

/// `?status=&updated_since=&q=&sort=&limit=&cursor=` of the product list.
struct ProductQuery {
    filter: ProductFilter,
    limit: Limit,
    after: Option<ProductCursor>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ProductQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = form_pairs(parts.uri.query().unwrap_or_default());
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let sort = match get("sort") {
            None => ProductSort::Created,
            Some(s) => {
                parse_sort(s).ok_or_else(|| bad_query("`sort` must be `created` or `title`."))?
            }
        };
        let status = get("status")
            .map(|s| {
                keel_catalog::domain::ProductStatus::parse(s)
                    .ok_or_else(|| bad_query("`status` must be `draft`, `active` or `archived`."))
            })
            .transpose()?;
        let updated_since = get("updated_since")
            .map(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| bad_query("`updated_since` must be an RFC 3339 time such as 2026-11-21T10:00:00Z."))
            })
            .transpose()?;
        let q = get("q")
            .map(|q| {
                let q = q.trim();
                // No control characters: nothing stored has them (text fields refuse them), and
                // PostgreSQL cannot take a NUL in a text parameter at all.
                if q.is_empty() || q.chars().count() > 255 || q.chars().any(char::is_control) {
                    Err(bad_query(
                        "`q` must be 1 to 255 characters, without control characters.",
                    ))
                } else {
                    Ok(q.to_owned())
                }
            })
            .transpose()?;
        let limit = get("limit")
            .map(|l| {
                l.parse::<u32>()
                    .ok()
                    .and_then(|n| Limit::new(n).ok())
                    .ok_or_else(|| bad_query("`limit` must be a whole number from 1 to 100."))
            })
            .transpose()?
            .unwrap_or_default();
        let after = get("cursor")
            .map(|c| {
                ProductCursor::decode(c, sort).map_err(|_| {
                    bad_query("`cursor` is not one this list issued; use `next_cursor` from a previous page with the same `sort`.")
                })
            })
            .transpose()?;
        Ok(Self {
            filter: ProductFilter {
                status,
                updated_since,
                q,
                sort,
            },
            limit,
            after,
        })
    }
}

fn product_reply(status: StatusCode, p: &Product) -> Response {
    let mut res = (status, Json(ProductResponse::from(p))).into_response();
    res.headers_mut()
        .insert(header::ETAG, version_etag(p.version));
    if status == StatusCode::CREATED
        && let Ok(loc) = HeaderValue::from_str(&format!("/v1/admin/products/{}", p.id))
    {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

/// Products of the shop, filtered and sorted, a page at a time.
#[utoipa::path(get, path = "/v1/admin/products", tag = "catalog", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, description = "`draft`, `active` or `archived`"),
        ("updated_since" = Option<String>, Query, description = "RFC 3339; products updated at or after it"),
        ("q" = Option<String>, Query, description = "Case-insensitive text in the title or any variant's SKU"),
        ("sort" = Option<String>, Query, description = "`created` (default) or `title`, ascending"),
        PageParams,
    ),
    responses((status = 200, body = ProductList), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)))]
async fn list_products(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    query: ProductQuery,
) -> Result<Json<ProductList>, Problem> {
    let page = state
        .catalog
        .list_products(
            auth.principal.tenant_id,
            &query.filter,
            query.limit,
            query.after.as_ref(),
        )
        .await?;
    Ok(Json(ProductList {
        data: page.items.iter().map(ProductResponse::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// Creates a product with its variants and prices.
#[utoipa::path(post, path = "/v1/admin/products", tag = "catalog", security(("bearer" = [])), request_body = ProductInput,
    responses(
        (status = 201, description = "Created; `ETag` and `Location` set.", body = ProductResponse),
        (status = 422, description = "`validation_failed`, with a pointer per problem (taken handle or SKU included).", body = ProblemBody),
    ))]
async fn create_product(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    extract::Json(input): extract::Json<ProductInput>,
) -> Result<Response, Problem> {
    let p = state
        .catalog
        .create_product(auth.principal.tenant_id, &input)
        .await?;
    Ok(product_reply(StatusCode::CREATED, &p))
}

/// One product with its variants; `If-None-Match` with the current `ETag` answers 304.
#[utoipa::path(get, path = "/v1/admin/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "`prod_…`")),
    responses((status = 200, body = ProductResponse), (status = 304, description = "Not modified."), (status = 404, body = ProblemBody)))]
async fn get_product(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    Id(id): Id<ProductId>,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let p = state
        .catalog
        .get_product(auth.principal.tenant_id, id)
        .await?;
    Ok(conditional_json(
        &ProductResponse::from(&p),
        version_etag(p.version),
        &if_none_match,
        None,
        None,
    ))
}

/// Changes the product's own fields; with `If-Match`, only if unchanged since that `ETag`.
#[utoipa::path(patch, path = "/v1/admin/products/{id}", tag = "catalog", security(("bearer" = [])), request_body = ProductPatchInput,
    params(("id" = String, Path)),
    responses((status = 200, body = ProductResponse), (status = 412, description = "`precondition_failed`.", body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn update_product(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Id(id): Id<ProductId>,
    IfMatch(if_match): IfMatch,
    extract::Json(patch): extract::Json<ProductPatchInput>,
) -> Result<Response, Problem> {
    let p = state
        .catalog
        .update_product(auth.principal.tenant_id, id, &patch, if_match)
        .await?;
    Ok(product_reply(StatusCode::OK, &p))
}

/// Deletes the product and its variants (refused while stock is reserved).
#[utoipa::path(delete, path = "/v1/admin/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 409, description = "`stock_reserved`.", body = ProblemBody), (status = 412, body = ProblemBody)))]
async fn delete_product(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Id(id): Id<ProductId>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, Problem> {
    state
        .catalog
        .delete_product(auth.principal.tenant_id, id, if_match)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    /// Up to 1000 products, matched to existing ones by `handle`.
    products: Vec<ProductInput>,
}

#[derive(Serialize, ToSchema)]
struct BatchResponse {
    data: Vec<ProductResponse>,
}

/// Creates or updates up to 1000 products in one transaction: all or nothing. Existing
/// products are matched by handle and their variants by SKU (new SKUs are added, variants not
/// listed stay). On any problem nothing is written and every problem is listed, with pointers
/// such as `/products/17/variants/0/sku`.
#[utoipa::path(post, path = "/v1/admin/products/batch", tag = "catalog", security(("bearer" = [])), request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 422, body = ProblemBody)))]
async fn batch_products(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    extract::Json(req): extract::Json<BatchRequest>,
) -> Result<Json<BatchResponse>, Problem> {
    let products = state
        .catalog
        .batch_upsert(auth.principal.tenant_id, &req.products)
        .await?;
    Ok(Json(BatchResponse {
        data: products.iter().map(ProductResponse::from).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
struct VariantList {
    data: Vec<VariantResponse>,
    next_cursor: Option<String>,
}

fn variant_reply(status: StatusCode, p: &Product, id: VariantId) -> Result<Response, Problem> {
    let v = p
        .variants
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(|| Problem::new(ProblemKind::NOT_FOUND, "No such variant."))?;
    let mut res = (status, Json(VariantResponse::from(v))).into_response();
    res.headers_mut()
        .insert(header::ETAG, version_etag(v.version));
    Ok(res)
}

/// The product's variants (at most 100, so one page).
#[utoipa::path(get, path = "/v1/admin/products/{id}/variants", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = VariantList), (status = 404, body = ProblemBody)))]
async fn list_variants(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    Id(id): Id<ProductId>,
) -> Result<Json<VariantList>, Problem> {
    let p = state
        .catalog
        .get_product(auth.principal.tenant_id, id)
        .await?;
    Ok(Json(VariantList {
        data: p.variants.iter().map(VariantResponse::from).collect(),
        next_cursor: None,
    }))
}

/// Adds a variant.
#[utoipa::path(post, path = "/v1/admin/products/{id}/variants", tag = "catalog", security(("bearer" = [])), request_body = VariantInput,
    params(("id" = String, Path)),
    responses((status = 201, body = VariantResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn create_variant(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Id(id): Id<ProductId>,
    extract::Json(input): extract::Json<VariantInput>,
) -> Result<Response, Problem> {
    let (p, vid) = state
        .catalog
        .add_variant(auth.principal.tenant_id, id, &input)
        .await?;
    variant_reply(StatusCode::CREATED, &p, vid)
}

/// One variant; `If-None-Match` with the current `ETag` answers 304.
#[utoipa::path(get, path = "/v1/admin/products/{id}/variants/{variant_id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path), ("variant_id" = String, Path)),
    responses((status = 200, body = VariantResponse), (status = 304, description = "Not modified."), (status = 404, body = ProblemBody)))]
async fn get_variant(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    Path((id, vid)): Path<(String, String)>,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let p = state
        .catalog
        .get_product(auth.principal.tenant_id, path_id::<ProductId>(&id)?)
        .await?;
    let vid = path_id::<VariantId>(&vid)?;
    let v = p
        .variants
        .iter()
        .find(|v| v.id == vid)
        .ok_or_else(|| Problem::new(ProblemKind::NOT_FOUND, "No such variant."))?;
    Ok(conditional_json(
        &VariantResponse::from(v),
        version_etag(v.version),
        &if_none_match,
        None,
        None,
    ))
}

/// Changes a variant (`prices` replaces the whole set); with `If-Match`, only if unchanged.
#[utoipa::path(patch, path = "/v1/admin/products/{id}/variants/{variant_id}", tag = "catalog", security(("bearer" = [])), request_body = VariantPatchInput,
    params(("id" = String, Path), ("variant_id" = String, Path)),
    responses((status = 200, body = VariantResponse), (status = 412, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn update_variant(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Path((id, vid)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    extract::Json(patch): extract::Json<VariantPatchInput>,
) -> Result<Response, Problem> {
    let vid = path_id::<VariantId>(&vid)?;
    let p = state
        .catalog
        .update_variant(
            auth.principal.tenant_id,
            path_id::<ProductId>(&id)?,
            vid,
            &patch,
            if_match,
        )
        .await?;
    variant_reply(StatusCode::OK, &p, vid)
}

/// Deletes a variant (refused while its stock is reserved).
#[utoipa::path(delete, path = "/v1/admin/products/{id}/variants/{variant_id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path), ("variant_id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 409, body = ProblemBody), (status = 412, body = ProblemBody)))]
async fn delete_variant(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Path((id, vid)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, Problem> {
    state
        .catalog
        .delete_variant(
            auth.principal.tenant_id,
            path_id::<ProductId>(&id)?,
            path_id::<VariantId>(&vid)?,
            if_match,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- storefront ----

#[derive(Serialize, ToSchema)]
struct StoreVariant {
    id: String,
    sku: String,
    title: Option<String>,
    option_values: Vec<String>,
    weight_grams: Option<u32>,
    /// The price in the requested currency; `null` when the variant is not sold in it.
    price: Option<MoneyResponse>,
    in_stock: bool,
    /// Exact available units, only when the shop chose to show them.
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<i64>,
}

/// An active product as shoppers see it.
#[derive(Serialize, ToSchema)]
struct StoreProductResponse {
    id: String,
    title: String,
    handle: String,
    description: String,
    options: Vec<ProductOption>,
    variants: Vec<StoreVariant>,
}

impl From<&StoreProduct> for StoreProductResponse {
    fn from(s: &StoreProduct) -> Self {
        let p = &s.product;
        Self {
            id: p.id.to_string(),
            title: p.title.clone(),
            handle: p.handle.as_str().to_owned(),
            description: p.description.clone(),
            options: p.options.clone(),
            variants: p
                .variants
                .iter()
                .zip(&s.available)
                .map(|(v, &available)| StoreVariant {
                    id: v.id.to_string(),
                    sku: v.sku.as_str().to_owned(),
                    title: v.title.clone(),
                    option_values: v.option_values.clone(),
                    weight_grams: v.weight_grams,
                    price: v.price_in(s.currency).map(MoneyResponse::from),
                    in_stock: available > 0,
                    available: s.show_counts.then_some(available.max(0)),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct StoreProductList {
    data: Vec<StoreProductResponse>,
    next_cursor: Option<String>,
}

/// `?currency=` (required) of storefront reads.
fn store_currency(parts_query: Option<&str>) -> Result<Currency, Problem> {
    let pairs = form_pairs(parts_query.unwrap_or_default());
    let code = pairs
        .iter()
        .find(|(k, _)| k == "currency")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| bad_query("`currency` is required, e.g. `?currency=USD`."))?;
    Currency::parse(code)
        .map_err(|_| bad_query("`currency` must be an ISO 4217 code such as `USD`."))
}

fn store_cache(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={}", state.store_cache_max_age_s))
        .expect("digits are a valid header value")
}

/// Active products priced in `?currency=`, with availability. Cacheable by shared caches for
/// exactly the configured time, per publishable key.
#[utoipa::path(get, path = "/v1/store/products", tag = "store",
    params(
        ("Keel-Publishable-Key" = String, Header),
        ("currency" = crate::openapi::CurrencyCode, Query, description = "ISO 4217, e.g. `USD`"),
        PageParams,
    ),
    responses((status = 200, body = StoreProductList), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody)))]
async fn store_products(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    uri: axum::http::Uri,
    query: ProductQuery,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let currency = store_currency(uri.query())?;
    if query.filter != ProductFilter::default() {
        return Err(bad_query(
            "The storefront list takes `currency`, `limit` and `cursor` only.",
        ));
    }
    let page = state
        .catalog
        .store_products(tenant, currency, query.limit, query.after.as_ref())
        .await?;
    let body = StoreProductList {
        data: page.items.iter().map(StoreProductResponse::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| Problem::internal(&e))?;
    Ok(conditional_json(
        &body,
        body_etag(&bytes),
        &if_none_match,
        Some(store_cache(&state)),
        Some("Keel-Publishable-Key"),
    ))
}

/// One active product by id (`prod_…`) or handle, priced in `?currency=`.
#[utoipa::path(get, path = "/v1/store/products/{id_or_handle}", tag = "store",
    params(
        ("Keel-Publishable-Key" = String, Header),
        ("id_or_handle" = String, Path),
        ("currency" = crate::openapi::CurrencyCode, Query, description = "ISO 4217, e.g. `USD`"),
    ),
    responses((status = 200, body = StoreProductResponse), (status = 304, description = "Not modified."), (status = 404, description = "No such active product.", body = ProblemBody)))]
async fn store_product(
    State(state): State<AppState>,
    Storefront(tenant): Storefront,
    Path(key): Path<String>,
    uri: axum::http::Uri,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let currency = store_currency(uri.query())?;
    let p = state
        .catalog
        .store_product_by_key(tenant, &key, currency)
        .await?;
    let body = StoreProductResponse::from(&p);
    let bytes = serde_json::to_vec(&body).map_err(|e| Problem::internal(&e))?;
    Ok(conditional_json(
        &body,
        body_etag(&bytes),
        &if_none_match,
        Some(store_cache(&state)),
        Some("Keel-Publishable-Key"),
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(batch_products))
        .routes(routes!(list_variants, create_variant))
        .routes(routes!(get_variant, update_variant, delete_variant))
        .routes(routes!(store_products))
        .routes(routes!(store_product))
}
