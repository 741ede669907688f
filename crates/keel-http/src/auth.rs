//! Authentication extractors: nouns of authority that handlers take as arguments.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use keel_identity::auth::StaffPrincipal;

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
