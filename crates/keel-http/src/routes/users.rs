//! `/v1/admin/users`: invite, list, read, change role, disable (`users:manage`).

use axum::{Json, extract::State, http::StatusCode};
use keel_identity::{
    domain::access::{Role, RoleChangeError},
    domain::staff::{Email, StaffUser, UserId},
    services::staff_admin::UserAdminError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Id;
use crate::{
    AppState,
    auth::{RequireStaff, perm::UsersManage},
    extract::PageParams,
    extract::{self, ListQuery},
    problem::{Problem, ProblemBody, ProblemKind},
};

impl From<UserAdminError> for Problem {
    fn from(e: UserAdminError) -> Self {
        match e {
            UserAdminError::Refused(RoleChangeError::LastOwner) => Self::new(
                ProblemKind::LAST_OWNER,
                "A shop must keep at least one active owner.",
            ),
            UserAdminError::Refused(r) => Self::new(ProblemKind::FORBIDDEN, r.to_string()),
            UserAdminError::EmailTaken => Self::new(
                ProblemKind::EMAIL_TAKEN,
                "A user with this email already exists in this shop.",
            ),
            UserAdminError::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such user."),
            UserAdminError::Store(e) => e.into(),
            UserAdminError::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

/// A staff user as administrators see them.
#[derive(Serialize, ToSchema)]
struct UserResponse {
    id: String,
    email: String,
    /// `owner`, `admin`, `staff` or `viewer`.
    role: &'static str,
    /// `invited`, `active` or `disabled`.
    status: &'static str,
    created_at: String,
}

impl From<StaffUser> for UserResponse {
    fn from(u: StaffUser) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.as_str().to_owned(),
            role: u.role.as_str(),
            status: u.status.as_str(),
            created_at: u
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .expect("a UTC timestamp always formats as RFC 3339"),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    email: String,
    /// `owner` (owners only), `admin`, `staff` or `viewer`.
    role: String,
}

/// The invited user and their one-time invite token (shown once; redeem at `/v1/auth/setup`).
#[derive(Serialize, ToSchema)]
struct InvitationResponse {
    user: UserResponse,
    invite_token: String,
    /// Seconds until the invite token expires.
    invite_expires_in: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeRoleRequest {
    role: String,
}

#[derive(Serialize, ToSchema)]
struct UserList {
    data: Vec<UserResponse>,
    next_cursor: Option<String>,
}

fn parse_role(s: &str) -> Result<Role, Problem> {
    Role::parse(s).ok_or_else(|| {
        Problem::invalid_field("/role", "must be one of owner, admin, staff, viewer")
    })
}

/// Invites a staff member. Keel sends no email: hand the token to the person.
#[utoipa::path(post, path = "/v1/admin/users", tag = "users", security(("bearer" = [])), request_body = InviteRequest,
    responses(
        (status = 201, body = InvitationResponse),
        (status = 403, description = "`forbidden`: missing `users:manage`, or inviting an owner without being one.", body = ProblemBody),
        (status = 409, description = "`email_taken`.", body = ProblemBody),
        (status = 422, body = ProblemBody),
    ))]
async fn invite_user(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<UsersManage>,
    extract::Json(req): extract::Json<InviteRequest>,
) -> Result<(StatusCode, Json<InvitationResponse>), Problem> {
    let email =
        Email::parse(&req.email).map_err(|e| Problem::invalid_field("/email", e.to_string()))?;
    let role = parse_role(&req.role)?;
    let inv = state.users.invite(&actor, email, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationResponse {
            invite_token: inv.token.expose().to_owned(),
            invite_expires_in: inv.expires_in.whole_seconds(),
            user: inv.user.into(),
        }),
    ))
}

/// The shop's staff, oldest first.
#[utoipa::path(get, path = "/v1/admin/users", tag = "users", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = UserList), (status = 403, body = ProblemBody)))]
async fn list_users(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<UsersManage>,
    ListQuery(page): ListQuery,
) -> Result<Json<UserList>, Problem> {
    let page = state.users.list(&actor, page).await?;
    let (data, next_cursor) = crate::extract::page_parts(page);
    Ok(Json(UserList { data, next_cursor }))
}

/// One staff user of the shop.
#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "`usr_…`")),
    responses((status = 200, body = UserResponse), (status = 404, body = ProblemBody)))]
async fn get_user(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<UsersManage>,
    Id(id): Id<UserId>,
) -> Result<Json<UserResponse>, Problem> {
    Ok(Json(state.users.get(&actor, id).await?.into()))
}

/// Changes a user's role. Only owners change owners; the last owner stays an owner.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "users", security(("bearer" = [])), request_body = ChangeRoleRequest,
    params(("id" = String, Path)),
    responses(
        (status = 200, body = UserResponse),
        (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody),
        (status = 409, description = "`last_owner`.", body = ProblemBody),
    ))]
async fn change_role(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<UsersManage>,
    Id(id): Id<UserId>,
    extract::Json(req): extract::Json<ChangeRoleRequest>,
) -> Result<Json<UserResponse>, Problem> {
    let role = parse_role(&req.role)?;
    Ok(Json(
        state.users.change(&actor, id, Some(role)).await?.into(),
    ))
}

/// Disables a user: their sessions end at once and they can no longer log in.
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = UserResponse), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
async fn disable_user(
    State(state): State<AppState>,
    RequireStaff {
        principal: actor, ..
    }: RequireStaff<UsersManage>,
    Id(id): Id<UserId>,
) -> Result<Json<UserResponse>, Problem> {
    Ok(Json(state.users.change(&actor, id, None).await?.into()))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite_user, list_users))
        .routes(routes!(get_user, change_role))
        .routes(routes!(disable_user))
}
