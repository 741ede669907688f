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
        let principal = match identified(parts).and_then(|i| i.admin.clone()) {
            Some(Ok(AdminPrincipal {
                actor: AdminActor::Staff(principal),
                ..
            })) => principal,
            // A secret key is no staff member.
            Some(Ok(_)) => {
                return Err(keel_identity::services::auth::AuthError::Unauthenticated.into());
            }
            Some(Err(refused)) => return Err(refused),
            None => {
                let Some(token) = bearer(parts) else {
                    return Err(Problem::new(
                        ProblemKind::UNAUTHORIZED,
                        "Send `Authorization: Bearer <access token>`.",
                    )
                    .with_header(header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
                };
                state.auth.authenticate_staff(token).await?
            }
        };
        // The request span was opened with an empty tenant_id; now it is known.
        note_tenant(parts, principal.tenant_id, true);
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
    let principal = match identified(parts).and_then(|i| i.admin.clone()) {
        Some(known) => known?,
        None => authenticate_admin(state, &parts.headers).await?,
    };
    if let AdminActor::Staff(staff) = &principal.actor
        && staff.mfa_pending
    {
        return Err(keel_identity::services::auth::AuthError::MfaEnrollmentRequired.into());
    }
    note_tenant(parts, principal.tenant_id, true);
    Ok(principal)
}

/// A staff member (MFA settled) or secret key, for a gateway route that requires Keel's
/// authentication before the legacy API is asked.
pub async fn admin_for_gateway(
    state: &AppState,
    headers: &header::HeaderMap,
) -> Result<AdminPrincipal, Problem> {
    let principal = authenticate_admin(state, headers).await?;
    if let AdminActor::Staff(staff) = &principal.actor
        && staff.mfa_pending
    {
        return Err(keel_identity::services::auth::AuthError::MfaEnrollmentRequired.into());
    }
    Ok(principal)
}

/// The admin credential of `headers` authenticated (before the MFA rule, which the extractors
/// apply).
async fn authenticate_admin(
    state: &AppState,
    headers: &header::HeaderMap,
) -> Result<AdminPrincipal, Problem> {
    let Some(token) = bearer_token(headers) else {
        return Err(Problem::new(
            ProblemKind::UNAUTHORIZED,
            "Send `Authorization: Bearer <access token or secret key>`.",
        )
        .with_header(header::WWW_AUTHENTICATE, BEARER_CHALLENGE));
    };
    Ok(if token.starts_with("sk_") {
        let key = state.keys.authenticate_secret(token).await?;
        AdminPrincipal {
            tenant_id: key.tenant_id,
            actor: AdminActor::Key(key),
        }
    } else {
        let staff = state.auth.authenticate_staff(token).await?;
        AdminPrincipal {
            tenant_id: staff.tenant_id,
            actor: AdminActor::Staff(staff),
        }
    })
}

/// Who a request's credential names, learned once at the edge (its limits and its shop's
/// place in flight depend on it) and reused by the extractors, so no request is
/// authenticated twice. Only the edge puts it in a request; a client cannot.
#[derive(Debug, Clone, Default)]
pub struct Identified {
    /// A storefront route: the shop of its publishable key, or refused.
    storefront: Option<Result<TenantId, ()>>,
    /// The publishable key (its browser origins, for CORS).
    key: Option<std::sync::Arc<keel_identity::domain::api_key::ApiKey>>,
    /// A staff route with a Bearer credential: the staff member or secret key, or the
    /// problem authentication answered.
    admin: Option<Result<AdminPrincipal, Problem>>,
}

impl Identified {
    /// The shop the request acts for, when its credential is good.
    pub fn tenant(&self) -> Option<TenantId> {
        match (&self.storefront, &self.admin) {
            (Some(Ok(t)), _) => Some(*t),
            (_, Some(Ok(p))) => Some(p.tenant_id),
            _ => None,
        }
    }

    /// Whether the storefront's publishable key allows this browser origin (exactly).
    pub fn allows_origin(&self, origin: &str) -> bool {
        matches!(self.storefront, Some(Ok(_)))
            && self
                .key
                .as_ref()
                .is_some_and(|k| k.allowed_origins.iter().any(|o| o.as_str() == origin))
    }

    /// The staff member or secret key calling, as a limit's key part.
    pub fn principal(&self) -> Option<uuid::Uuid> {
        match &self.admin {
            Some(Ok(AdminPrincipal {
                actor: AdminActor::Staff(s),
                ..
            })) => Some(s.user_id.as_uuid()),
            Some(Ok(AdminPrincipal {
                actor: AdminActor::Key(k),
                ..
            })) => Some(k.key_id.as_uuid()),
            _ => None,
        }
    }
}

fn identified(parts: &Parts) -> Option<&Identified> {
    parts.extensions.get::<Identified>()
}

/// Whether a route is a staff route (`/v1/admin/…`, `/v1/me…`).
pub fn is_staff_route(route: &str) -> bool {
    route.starts_with("/v1/admin/") || route == "/v1/me" || route.starts_with("/v1/me/")
}

/// Authenticates what a request presents, once: the publishable key of a storefront route,
/// the Bearer credential of a staff route.
pub async fn identify(state: &AppState, route: &str, headers: &header::HeaderMap) -> Identified {
    if route.starts_with("/v1/store/") {
        let key = match headers.get(PUBLISHABLE_KEY).and_then(|v| v.to_str().ok()) {
            Some(key) => state
                .keys
                .authenticate_publishable_key(key)
                .await
                .map_err(|_| ()),
            None => Err(()),
        };
        match key {
            Ok(key) => Identified {
                storefront: Some(Ok(key.tenant_id)),
                key: Some(key),
                admin: None,
            },
            Err(()) => Identified {
                storefront: Some(Err(())),
                ..Identified::default()
            },
        }
    } else if is_staff_route(route)
        && bearer_token(headers)
            // `/v1/me…` is staff only: a secret key sent there is refused by its extractor,
            // never authenticated (and never marked used).
            .is_some_and(|t| route.starts_with("/v1/admin/") || !t.starts_with("sk_"))
    {
        Identified {
            admin: Some(authenticate_admin(state, headers).await),
            ..Identified::default()
        }
    } else {
        Identified::default()
    }
}

/// Any admin caller (staff with MFA settled, or a secret key), whatever its permissions: for
/// transports that check permissions per field (GraphQL).
#[derive(Debug, Clone)]
pub struct Admin(pub AdminPrincipal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        admin_principal(parts, state).await.map(Self)
    }
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
        let tenant = if let Some(known) = identified(parts).and_then(|i| i.storefront) {
            known.map_err(|()| refused())?
        } else {
            let key = parts
                .headers
                .get(PUBLISHABLE_KEY)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(refused)?;
            state
                .keys
                .authenticate_publishable(key)
                .await
                .map_err(|_| refused())?
        };
        note_tenant(parts, tenant, false);
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
