//! `/v1/admin/api-keys`: create (the key is shown once), list, revoke, rotate
//! (`api_keys:manage`, staff only).

use axum::{Json, extract::State, http::StatusCode};
use keel_identity::domain::api_key::{
    ApiKey, ApiKeyId, KeyKind, MAX_ORIGINS, Origin, parse_scopes,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{RequireStaff, perm::ApiKeysManage},
    extract::PageParams,
    extract::{self, ListQuery, page_parts},
    problem::{Problem, ProblemBody},
    routes::rfc3339,
};

/// An API key as listed (never the key itself).
#[derive(Serialize, ToSchema)]
struct ApiKeyResponse {
    id: String,
    /// `secret` or `publishable`.
    kind: &'static str,
    name: String,
    /// The public start of the key (`sk_<lookup>_…`), to tell keys apart.
    lookup: String,
    scopes: Vec<&'static str>,
    /// Publishable keys: the exact browser origins whose pages may read the storefront's
    /// answers (CORS).
    allowed_origins: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            kind: k.kind.as_str(),
            name: k.name,
            lookup: k.lookup,
            scopes: k.scopes.iter().map(|p| p.as_str()).collect(),
            allowed_origins: k.allowed_origins.iter().map(ToString::to_string).collect(),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    /// 1 to 100 characters, to recognise the key later.
    name: String,
    /// `secret` (default) or `publishable`.
    kind: Option<String>,
    /// For secret keys: e.g. `["orders:read"]`. Identity management scopes are never granted.
    #[serde(default)]
    scopes: Vec<String>,
    /// For publishable keys: the exact browser origins (`https://shop.example.com`, at most
    /// 20; no wildcard, no path) whose pages may call the storefront with this key and read
    /// its answers (CORS). None: no browser origin is granted (servers need none).
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Seconds until the key expires; none means it lasts until revoked.
    expires_in: Option<u32>,
}

/// A new key: shown once, store it now.
#[derive(Serialize, ToSchema)]
struct IssuedKeyResponse {
    key: ApiKeyResponse,
    /// The full key (`sk_…` or `pk_…`). Keel keeps only its hash.
    secret: String,
    /// On rotation: until when the previous key keeps working.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_key_expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ApiKeyList {
    data: Vec<ApiKeyResponse>,
    next_cursor: Option<String>,
}

/// Creates an API key.
#[utoipa::path(post, path = "/v1/admin/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = CreateKeyRequest,
    responses((status = 201, body = IssuedKeyResponse), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn create_api_key(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<ApiKeysManage>,
    extract::Json(req): extract::Json<CreateKeyRequest>,
) -> Result<(StatusCode, Json<IssuedKeyResponse>), Problem> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "/name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    let kind = match req.kind.as_deref() {
        None | Some("secret") => KeyKind::Secret,
        Some("publishable") => KeyKind::Publishable,
        Some(_) => {
            return Err(Problem::invalid_field(
                "/kind",
                "must be `secret` or `publishable`",
            ));
        }
    };
    let scopes = parse_scopes(&req.scopes).map_err(|m| Problem::invalid_field("/scopes", m))?;
    if kind == KeyKind::Publishable && !scopes.is_empty() {
        return Err(Problem::invalid_field(
            "/scopes",
            "publishable keys carry no scopes",
        ));
    }
    if kind == KeyKind::Secret && scopes.is_empty() {
        return Err(Problem::invalid_field(
            "/scopes",
            "a secret key needs at least one scope",
        ));
    }
    let mut allowed_origins = Vec::with_capacity(req.allowed_origins.len());
    for (i, raw) in req.allowed_origins.iter().enumerate() {
        let origin = Origin::parse(raw)
            .map_err(|m| Problem::invalid_field(&format!("/allowed_origins/{i}"), m))?;
        if !allowed_origins.contains(&origin) {
            allowed_origins.push(origin);
        }
    }
    if kind == KeyKind::Secret && !allowed_origins.is_empty() {
        return Err(Problem::invalid_field(
            "/allowed_origins",
            "only publishable keys are used from browsers; a secret key must never be",
        ));
    }
    if allowed_origins.len() > MAX_ORIGINS {
        return Err(Problem::invalid_field(
            "/allowed_origins",
            format!("at most {MAX_ORIGINS} origins"),
        ));
    }
    if req.expires_in == Some(0) {
        return Err(Problem::invalid_field(
            "/expires_in",
            "must be at least 1 second",
        ));
    }
    let expires_in = req
        .expires_in
        .map(|s| time::Duration::seconds(i64::from(s)));
    let issued = state
        .keys
        .create(&actor, kind, name, scopes, allowed_origins, expires_in)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyResponse {
            secret: issued.plaintext,
            key: issued.key.into(),
            previous_key_expires_at: None,
        }),
    ))
}

/// The shop's API keys, oldest first.
#[utoipa::path(get, path = "/v1/admin/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = ApiKeyList), (status = 403, body = ProblemBody)))]
async fn list_api_keys(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<ApiKeysManage>,
    ListQuery(page): ListQuery,
) -> Result<Json<ApiKeyList>, Problem> {
    let (data, next_cursor) = page_parts(state.keys.list(&actor, page).await?);
    Ok(Json(ApiKeyList { data, next_cursor }))
}

/// Revokes a key. A secret key is refused at once everywhere; a publishable key at once by the
/// node that revoked it and within `KEEL_AUTH__PUBLISHABLE_KEY_CACHE_MS` (default 1 s) by
/// the others, which trust their last read of it that long.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Revoked."), (status = 404, body = ProblemBody)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<ApiKeysManage>,
    Id(id): Id<ApiKeyId>,
) -> Result<StatusCode, Problem> {
    state.keys.revoke(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a key; the previous one keeps working for the configured overlap.
#[utoipa::path(post, path = "/v1/admin/api-keys/{id}/rotate", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 201, body = IssuedKeyResponse), (status = 404, body = ProblemBody)))]
async fn rotate_api_key(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<ApiKeysManage>,
    Id(id): Id<ApiKeyId>,
) -> Result<(StatusCode, Json<IssuedKeyResponse>), Problem> {
    let (issued, old_until) = state.keys.rotate(&actor, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyResponse {
            secret: issued.plaintext,
            key: issued.key.into(),
            previous_key_expires_at: Some(rfc3339(old_until)),
        }),
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(rotate_api_key))
}
