//! Authentication extractors: nouns of authority that handlers take as arguments.

use std::marker::PhantomData;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use keel_identity::{
    domain::access::Permission, services::api_keys::KeyPrincipal, services::auth::StaffPrincipal,
};
use keel_kernel::TenantId;

use crate::{
    AppState,
    problem::{BEARER_CHALLENGE, Problem, ProblemKind},
    store_cache::note_tenant,
};

/// A staff member authenticated by a Bearer access token whose session and account are
/// still active. Missing or bad credentials answer 401 with `WWW-Authenticate`.
#[derive(Debug, Clone)]
pub struct Staff(pub StaffPrincipal);

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(&parts.headers)
}

/// [`bearer`] over headers: the token exactly as authentication reads it (so the edge's
/// limits key on the same credential, whatever the scheme's case or the spaces around it).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
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
        let StaffEnrolling(principal) = StaffEnrolling::from_request_parts(parts, state).await?;
        if principal.mfa_pending {
            return Err(keel_identity::services::auth::AuthError::MfaEnrollmentRequired.into());
        }
        Ok(Self(principal))
    }
}

/// A staff member, including one whose shop requires MFA they have not enrolled yet. Only
/// the routes that let such a user see their account and enrol take this extractor.
#[derive(Debug, Clone)]
pub struct StaffEnrolling(pub StaffPrincipal);

impl FromRequestParts<AppState> for StaffEnrolling {
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
        note_tenant(parts, principal.tenant_id);
        Ok(Self(principal))
    }
}

/// A permission a route requires, as a type (so each route declares it in its signature).
pub trait Needs: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// Permission markers for [`RequirePermission`].
pub mod perm {
    use keel_identity::domain::access::Permission;

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
        ApiKeysManage => ApiKeysManage,
        SettingsManage => SettingsManage,
        AuditRead => AuditRead,
        CatalogRead => CatalogRead,
        CatalogWrite => CatalogWrite,
        OrdersRead => OrdersRead,
        OrdersWrite => OrdersWrite,
        WebhooksManage => WebhooksManage,
    }
}

/// Who is calling an admin route: a staff member (JWT) or a server (secret API key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminActor {
    Staff(StaffPrincipal),
    Key(KeyPrincipal),
}

/// An authenticated admin caller and its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPrincipal {
    pub tenant_id: TenantId,
    pub actor: AdminActor,
}

impl AdminPrincipal {
    /// A staff member by role; a key by its explicit scopes.
    pub fn can(&self, p: Permission) -> bool {
        match &self.actor {
            AdminActor::Staff(s) => s.role.can(p),
            AdminActor::Key(k) => k.scopes.contains(&p),
        }
    }
}

/// `Authorization: Bearer sk_…` (a secret key) or `Bearer <access token>` (staff). A
/// publishable key is not an admin credential: 401.
async fn admin_principal(parts: &Parts, state: &AppState) -> Result<AdminPrincipal, Problem> {
    let Some(token) = bearer(parts) else {
        return Err(Problem::new(
            ProblemKind::UNAUTHORIZED,
            "Send `Authorization: Bearer <access token or secret key>`.",
        )
        .with_header(header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
    };
    let principal = if token.starts_with("sk_") {
        let key = state.keys.authenticate_secret(token).await?;
        AdminPrincipal {
            tenant_id: key.tenant_id,
            actor: AdminActor::Key(key),
        }
    } else {
        let staff = state.auth.authenticate_staff(token).await?;
        if staff.mfa_pending {
            return Err(keel_identity::services::auth::AuthError::MfaEnrollmentRequired.into());
        }
        AdminPrincipal {
            tenant_id: staff.tenant_id,
            actor: AdminActor::Staff(staff),
        }
    };
    note_tenant(parts, principal.tenant_id);
    Ok(principal)
}

/// An admin caller (staff or secret key) allowed `P::PERMISSION`; otherwise 403 `forbidden`
/// (401 when not authenticated at all).
#[derive(Debug, Clone)]
pub struct RequirePermission<P> {
    pub principal: AdminPrincipal,
    need: PhantomData<P>,
}

impl<P: Needs> FromRequestParts<AppState> for RequirePermission<P> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = admin_principal(parts, state).await?;
        if principal.can(P::PERMISSION) {
            Ok(Self {
                principal,
                need: PhantomData,
            })
        } else {
            Err(Problem::new(
                ProblemKind::FORBIDDEN,
                format!("This credential does not allow `{}`.", P::PERMISSION),
            ))
        }
    }
}

/// A staff member (never a key) whose role allows `P::PERMISSION`: for identity management,
/// which API keys can never do.
#[derive(Debug, Clone)]
pub struct RequireStaff<P> {
    pub principal: StaffPrincipal,
    need: PhantomData<P>,
}

impl<P: Needs> FromRequestParts<AppState> for RequireStaff<P> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match admin_principal(parts, state).await?.actor {
            AdminActor::Staff(principal) if principal.role.can(P::PERMISSION) => Ok(Self {
                principal,
                need: PhantomData,
            }),
            AdminActor::Staff(principal) => Err(Problem::new(
                ProblemKind::FORBIDDEN,
                format!(
                    "Your role ({}) does not allow `{}`.",
                    principal.role,
                    P::PERMISSION
                ),
            )),
            AdminActor::Key(_) => Err(Problem::new(
                ProblemKind::FORBIDDEN,
                "API keys cannot manage staff or keys; use a staff login.",
            )),
        }
    }
}

/// The storefront a request comes through: the tenant of its `Keel-Publishable-Key`.
/// Missing or unknown keys answer 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storefront(pub TenantId);

pub use crate::headers::PUBLISHABLE_KEY;

impl FromRequestParts<AppState> for Storefront {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let refused = || {
            Problem::new(
                ProblemKind::UNAUTHORIZED,
                "Send the storefront's publishable key in `Keel-Publishable-Key`.",
            )
        };
        let key = parts
            .headers
            .get(PUBLISHABLE_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(refused)?;
        let tenant = state
            .keys
            .authenticate_publishable(key)
            .await
            .map_err(|_| refused())?;
        note_tenant(parts, tenant);
        Ok(Self(tenant))
    }
}

/// A customer of the storefront's tenant, by their Bearer access token. A staff token, a token
/// of another shop's customer, or a revoked session: 401.
#[derive(Debug, Clone)]
pub struct Customer(pub keel_identity::services::auth::CustomerPrincipal);

impl FromRequestParts<AppState> for Customer {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Storefront(tenant) = Storefront::from_request_parts(parts, state).await?;
        let Some(token) = bearer(parts) else {
            return Err(Problem::new(
                ProblemKind::UNAUTHORIZED,
                "Send `Authorization: Bearer <customer access token>`.",
            )
            .with_header(header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
        };
        Ok(Self(state.auth.authenticate_customer(token, tenant).await?))
    }
}

/// The header that carries a guest cart's secret.
pub const CART_SECRET: header::HeaderName = header::HeaderName::from_static("keel-cart-secret");
/// The longest cart secret read; a longer header is ignored (no cart has one).
pub const CART_SECRET_MAX_LEN: usize = 100;

/// A shopper at the storefront: signed in (a customer Bearer token, checked as [`Customer`])
/// or a guest who may present a cart's secret (`Keel-Cart-Secret`).
#[derive(Debug, Clone)]
pub struct Shopper {
    pub tenant_id: TenantId,
    pub access: keel_orders::service::ShopperAccess,
}

impl Shopper {
    /// The shopper's `Idempotency-Key`, scoped to the tenant and to [`Self::scope`].
    pub fn idempotency_key(&self, key: String) -> keel_kernel::idempotency::IdempotencyKey {
        keel_kernel::idempotency::IdempotencyKey {
            tenant_id: self.tenant_id,
            scope: self.scope(),
            key,
        }
    }

    /// The credential an idempotency key belongs to: the customer, or the guest's cart secret
    /// (by digest), or the bare storefront.
    pub fn scope(&self) -> String {
        use sha2::{Digest, Sha256};
        match (&self.access.customer, &self.access.secret) {
            (Some(c), _) => format!("cus:{c}"),
            (None, Some(s)) => {
                let d = Sha256::digest(s.as_bytes());
                let hex: String = d[..16].iter().fold(String::new(), |mut acc, b| {
                    use std::fmt::Write as _;
                    let _ = write!(acc, "{b:02x}");
                    acc
                });
                format!("cart:{hex}")
            }
            (None, None) => "guest".to_owned(),
        }
    }
}

impl FromRequestParts<AppState> for Shopper {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Storefront(tenant) = Storefront::from_request_parts(parts, state).await?;
        let customer = match bearer(parts) {
            Some(token) => Some(
                state
                    .auth
                    .authenticate_customer(token, tenant)
                    .await?
                    .customer_id,
            ),
            None => None,
        };
        let secret = parts
            .headers
            .get(CART_SECRET)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= CART_SECRET_MAX_LEN)
            .map(str::to_owned);
        // Unpaid orders are capped per client address too (behind trusted proxies, the
        // forwarded one).
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| state.client_addr.client_addr(c.0.ip(), &parts.headers));
        Ok(Self {
            tenant_id: tenant,
            access: keel_orders::service::ShopperAccess {
                customer,
                secret,
                client,
            },
        })
    }
}
