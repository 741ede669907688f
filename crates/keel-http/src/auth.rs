//! Authentication extractors: nouns of authority that handlers take as arguments.

use std::marker::PhantomData;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use keel_identity::{access::Permission, auth::StaffPrincipal};

use crate::{
    AppState,
    problem::{BEARER_CHALLENGE, Problem, ProblemKind},
};

/// A staff member authenticated by a Bearer access token whose session and account are
/// still active. Missing or bad credentials answer 401 with `WWW-Authenticate`.
#[derive(Debug, Clone)]
pub struct Staff(pub StaffPrincipal);

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(Problem::new(
                ProblemKind::UNAUTHORIZED,
                "Send `Authorization: Bearer <access token>`.",
            )
            .with_header(header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
        };
        let principal = state.auth.authenticate_staff(token).await?;
        // The request span was opened with an empty tenant_id; now it is known.
        tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant_id));
        Ok(Self(principal))
    }
}

/// A permission a route requires, as a type (so each route declares it in its signature).
pub trait Needs: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// Permission markers for [`RequirePermission`].
pub mod perm {
    use keel_identity::access::Permission;

    macro_rules! markers {
        ($($name:ident => $perm:ident),* $(,)?) => {
            $(
                #[doc = concat!("Requires `", stringify!($perm), "`.")]
                #[derive(Debug, Clone, Copy)]
                pub struct $name;
                impl super::Needs for $name {
                    const PERMISSION: Permission = Permission::$perm;
                }
            )*
        };
    }

    markers! {
        UsersManage => UsersManage,
        AuditRead => AuditRead,
    }
}

/// A staff member whose role holds `P::PERMISSION`; otherwise 403 `forbidden` (and 401 when
/// not authenticated at all).
#[derive(Debug, Clone)]
pub struct RequirePermission<P> {
    pub principal: StaffPrincipal,
    need: PhantomData<P>,
}

impl<P: Needs> FromRequestParts<AppState> for RequirePermission<P> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Staff(principal) = Staff::from_request_parts(parts, state).await?;
        if principal.role.can(P::PERMISSION) {
            Ok(Self {
                principal,
                need: PhantomData,
            })
        } else {
            Err(Problem::new(
                ProblemKind::FORBIDDEN,
                format!(
                    "Your role ({}) does not allow `{}`.",
                    principal.role,
                    P::PERMISSION
                ),
            ))
        }
    }
}
