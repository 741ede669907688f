//! `/v1/admin/stock-locations*` and `/v1/admin/inventory*`: where stock is kept, how much,
//! and the adjustments that move it (`catalog:read` to read, `catalog:write` to change).

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use keel_catalog::{
    LocationId, VariantId,
    domain::{InventoryLevel, Location},
    service::AdjustRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{
        AdminActor, AdminPrincipal, RequirePermission,
        perm::{CatalogRead, CatalogWrite},
    },
    caching::{IfMatch, IfNoneMatch, conditional_json, version_etag},
    extract::PageParams,
    extract::{self, ListQuery, form_pairs},
    problem::{Problem, ProblemBody, ProblemKind},
    routes::rfc3339,
};

#[derive(Serialize, ToSchema)]
struct LocationResponse {
    id: String,
    name: String,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl From<&Location> for LocationResponse {
    fn from(l: &Location) -> Self {
        Self {
            id: l.id.to_string(),
            name: l.name.clone(),
            created_at: rfc3339(l.created_at),
            updated_at: rfc3339(l.updated_at),
            version: l.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct LocationList {
    data: Vec<LocationResponse>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LocationRequest {
    /// 1 to 100 characters, unique in the shop.
    name: String,
}

fn location_reply(status: StatusCode, l: &Location) -> Response {
    let mut res = (status, Json(LocationResponse::from(l))).into_response();
    res.headers_mut()
        .insert(header::ETAG, version_etag(l.version));
    res
}

/// The shop's stock locations.
#[utoipa::path(get, path = "/v1/admin/stock-locations", tag = "inventory", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = LocationList)))]
async fn list_locations(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    ListQuery(page): ListQuery,
) -> Result<Json<LocationList>, Problem> {
    let page = state
        .catalog
        .list_locations(auth.principal.tenant_id, page)
        .await?;
    Ok(Json(LocationList {
        data: page.items.iter().map(LocationResponse::from).collect(),
        next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
    }))
}

/// Adds a stock location.
#[utoipa::path(post, path = "/v1/admin/stock-locations", tag = "inventory", security(("bearer" = [])), request_body = LocationRequest,
    responses((status = 201, body = LocationResponse), (status = 422, body = ProblemBody)))]
async fn create_location(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    extract::Json(req): extract::Json<LocationRequest>,
) -> Result<Response, Problem> {
    let l = state
        .catalog
        .create_location(auth.principal.tenant_id, &req.name)
        .await?;
    Ok(location_reply(StatusCode::CREATED, &l))
}

/// One stock location.
#[utoipa::path(get, path = "/v1/admin/stock-locations/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = String, Path, description = "`loc_…`")),
    responses((status = 200, body = LocationResponse), (status = 304, description = "Not modified."), (status = 404, body = ProblemBody)))]
async fn get_location(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    Id(id): Id<LocationId>,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    let l = state
        .catalog
        .get_location(auth.principal.tenant_id, id)
        .await?;
    Ok(conditional_json(
        &LocationResponse::from(&l),
        version_etag(l.version),
        &if_none_match,
        None,
        None,
    ))
}

/// Renames a stock location; with `If-Match`, only if unchanged.
#[utoipa::path(patch, path = "/v1/admin/stock-locations/{id}", tag = "inventory", security(("bearer" = [])), request_body = LocationRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = LocationResponse), (status = 412, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn update_location(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Id(id): Id<LocationId>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<LocationRequest>,
) -> Result<Response, Problem> {
    let l = state
        .catalog
        .rename_location(auth.principal.tenant_id, id, &req.name, if_match)
        .await?;
    Ok(location_reply(StatusCode::OK, &l))
}

/// Deletes a stock location that holds no stock.
#[utoipa::path(delete, path = "/v1/admin/stock-locations/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 409, description = "`location_in_use`.", body = ProblemBody), (status = 412, body = ProblemBody)))]
async fn delete_location(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    Id(id): Id<LocationId>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, Problem> {
    state
        .catalog
        .delete_location(auth.principal.tenant_id, id, if_match)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stock of one variant at one location.
#[derive(Serialize, ToSchema)]
struct LevelResponse {
    variant_id: String,
    location_id: String,
    on_hand: i64,
    /// Held by checkouts; never more than `on_hand`.
    reserved: i64,
    /// `on_hand - reserved`.
    available: i64,
    updated_at: String,
}

impl From<&InventoryLevel> for LevelResponse {
    fn from(l: &InventoryLevel) -> Self {
        Self {
            variant_id: l.variant_id.to_string(),
            location_id: l.location_id.to_string(),
            on_hand: l.on_hand,
            reserved: l.reserved,
            available: l.available(),
            updated_at: rfc3339(l.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct LevelList {
    data: Vec<LevelResponse>,
    next_cursor: Option<String>,
}

/// `?variant=&location=` filters of the inventory list.
struct LevelFilter {
    variant: Option<VariantId>,
    location: Option<LocationId>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for LevelFilter {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = form_pairs(parts.uri.query().unwrap_or_default());
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let bad = |m: &'static str| Problem::new(ProblemKind::BAD_REQUEST, m);
        Ok(Self {
            variant: get("variant")
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad("`variant` must be a variant id (`var_…`)."))
                })
                .transpose()?,
            location: get("location")
                .map(|l| {
                    l.parse()
                        .map_err(|_| bad("`location` must be a location id (`loc_…`)."))
                })
                .transpose()?,
        })
    }
}

/// Inventory levels, optionally of one variant and/or one location.
#[utoipa::path(get, path = "/v1/admin/inventory", tag = "inventory", security(("bearer" = [])),
    params(
        ("variant" = Option<String>, Query, description = "`var_…`"),
        ("location" = Option<String>, Query, description = "`loc_…`"),
        PageParams,
    ),
    responses((status = 200, body = LevelList), (status = 400, body = ProblemBody)))]
async fn list_levels(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogRead>,
    filter: LevelFilter,
    ListQuery(page): ListQuery,
) -> Result<Json<LevelList>, Problem> {
    let page = state
        .catalog
        .list_levels(
            auth.principal.tenant_id,
            filter.variant,
            filter.location,
            page,
        )
        .await?;
    Ok(Json(LevelList {
        data: page.items.iter().map(LevelResponse::from).collect(),
        next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdjustmentRequest {
    /// `var_…`
    variant: String,
    /// `loc_…`
    location: String,
    /// Units added (positive) or removed (negative); never zero.
    delta: i64,
    #[schema(schema_with = manual_reason)]
    reason: String,
    /// Up to 500 characters.
    note: Option<String>,
}

/// The reasons staff may give, from the domain's own list.
fn manual_reason() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(
            keel_catalog::domain::AdjustmentReason::MANUAL
                .map(keel_catalog::domain::AdjustmentReason::as_str),
        ))
        .description(Some(
            "Why the stock changed (`fulfilled` is written by orders only).",
        ))
        .build()
}

/// Who made a change, for the ledger: the staff user or the API key.
fn actor(p: &AdminPrincipal) -> String {
    match &p.actor {
        AdminActor::Staff(s) => s.user_id.to_string(),
        AdminActor::Key(k) => k.key_id.to_string(),
    }
}

/// Adjusts `on_hand` of a variant at a location and records the adjustment in the ledger; the
/// level never drops below what is reserved.
#[utoipa::path(post, path = "/v1/admin/inventory/adjustments", tag = "inventory", security(("bearer" = [])), request_body = AdjustmentRequest,
    responses(
        (status = 201, description = "Applied; the level after it.", body = LevelResponse),
        (status = 404, description = "Unknown variant or location.", body = ProblemBody),
        (status = 409, description = "`insufficient_stock`.", body = ProblemBody),
        (status = 422, body = ProblemBody),
    ))]
async fn adjust(
    State(state): State<AppState>,
    auth: RequirePermission<CatalogWrite>,
    extract::Json(req): extract::Json<AdjustmentRequest>,
) -> Result<(StatusCode, Json<LevelResponse>), Problem> {
    let variant: VariantId = req
        .variant
        .parse()
        .map_err(|_| Problem::invalid_field("/variant", "must be a variant id (`var_…`)"))?;
    let location: LocationId = req
        .location
        .parse()
        .map_err(|_| Problem::invalid_field("/location", "must be a location id (`loc_…`)"))?;
    let level = state
        .catalog
        .adjust(
            auth.principal.tenant_id,
            &AdjustRequest {
                variant,
                location,
                delta: req.delta,
                reason: req.reason,
                note: req.note,
            },
            actor(&auth.principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(LevelResponse::from(&level))))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_locations, create_location))
        .routes(routes!(get_location, update_location, delete_location))
        .routes(routes!(list_levels))
        .routes(routes!(adjust))
}
