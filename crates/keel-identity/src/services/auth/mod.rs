//! Staff authentication: owner setup, login, refresh-token rotation with reuse detection,
//! logout, access-token checks and sessions. Security-relevant outcomes are recorded as
//! `security.*` events in the outbox, in the same transaction as the change they describe,
//! and logged with `security = true` (never with a secret).

use std::{net::IpAddr, sync::Arc};

use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::{EventLog, NewEvent},
};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use tracing::instrument;

use crate::{
    domain::access::Role,
    domain::jwt::{Claims, PrincipalKind},
    domain::password::{NewPassword, PasswordHasher, PasswordPolicyError, StoredHash},
    domain::secret::{Secret, SecretHash, random_bytes},
    domain::staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser, StoredMfa,
        TokenPurpose, UserId, UserStatus,
    },
    domain::throttle::{Limit, ThrottleKey},
    domain::totp::{self, TotpSecret},
    domain::{NewTenant, Tenant, TenantError},
    ports::{
        Attempt, CustomerStore, LoginThrottle, MFA_ALREADY_ENABLED, MfaStore, SessionStore,
        StaffStore, TENANT_SLUG_CONSTRAINT, TOKEN_ALREADY_USED, TenantStore,
    },
};

mod customers;
mod mfa;
mod passwords;

pub use self::{
    customers::{CUSTOMER_AUDIENCE, CustomerPrincipal},
    mfa::AccountHolder,
};
pub use crate::services::signing_keys::KeyRing;

/// The `aud` of staff access tokens.
pub const STAFF_AUDIENCE: &str = "keel-admin";
/// Prefix of refresh tokens.
const REFRESH_PREFIX: &str = "rt";

/// Exact lifetimes and limits, from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `iss` of every token this installation issues.
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub setup_ttl: Duration,
    /// How long a replaced signing key's public half stays published.
    pub key_overlap: Duration,
    /// How long a node uses its cached key set before reading it again.
    pub key_cache: Duration,
    /// Tolerance for other nodes' clocks being ahead when checking `iat`.
    pub leeway: Duration,
    /// Failed password logins allowed per account within `login_window`.
    pub login_account_max: u32,
    /// Failed password logins allowed per client address within `login_window`.
    pub login_ip_max: u32,
    pub login_window: Duration,
    /// Lifetime of the token that carries a login from the password step to the MFA step.
    pub mfa_token_ttl: Duration,
    /// Wrong codes an MFA token survives; at this count it dies.
    pub mfa_max_failures: u32,
    /// How long a rotated API key keeps working.
    pub api_key_overlap: Duration,
    /// How long a node trusts its read of a publishable key (zero: every request reads it).
    pub publishable_key_cache: Duration,
    /// Lifetime of a password reset token.
    pub reset_token_ttl: Duration,
    /// Failed second-factor and re-authentication checks allowed per account within
    /// `second_factor_window`; at this count the account's second factor locks.
    pub second_factor_max: u32,
    pub second_factor_window: Duration,
    /// Password-reset requests per account within `reset_window` (more are answered alike
    /// and do nothing).
    pub reset_account_max: u32,
    /// Password-reset requests per client address and shop within `reset_window`.
    pub reset_ip_max: u32,
    pub reset_window: Duration,
    /// Password hashes and verifications running at once, node-wide.
    pub hash_concurrency: usize,
    /// Password jobs one client address may have running or waiting at once.
    pub hash_per_address: usize,
    /// How long password work may wait for a place; then 503 `overloaded`.
    pub hash_queue_wait: std::time::Duration,
}

impl AuthSettings {
    /// The longest window any throttle counts over: attempts older than this can go.
    pub fn throttle_horizon(&self) -> Duration {
        self.login_window
            .max(self.second_factor_window)
            .max(self.reset_window)
    }
}

/// Whole seconds, rounded up (a `Retry-After` must not invite a retry that is still refused).
fn ceil_seconds(d: Duration) -> i64 {
    let whole = d.whole_seconds();
    if d > Duration::seconds(whole) {
        whole + 1
    } else {
        whole.max(0)
    }
}

/// What can go wrong, in the identity context's words.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the token is invalid, expired or already used")]
    InvalidToken,
    #[error("the refresh token is invalid or expired")]
    InvalidRefreshToken,
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("missing or invalid access token")]
    Unauthenticated,
    #[error("password {0}")]
    WeakPassword(PasswordPolicyError),
    #[error("too many failed attempts; retry in {retry_after_seconds} s")]
    TooManyAttempts { retry_after_seconds: i64 },
    #[error(
        "the account's second factor is locked after too many failures; retry in {retry_after_seconds} s"
    )]
    FactorLocked { retry_after_seconds: i64 },
    #[error("the server is busy; retry in {retry_after_seconds} s")]
    Overloaded { retry_after_seconds: i64 },
    #[error("the MFA code is wrong or already used")]
    InvalidMfaCode,
    #[error("MFA is already enabled")]
    MfaAlreadyEnabled,
    #[error("there is no MFA enrolment waiting for confirmation")]
    MfaNotPending,
    #[error("MFA is not enabled")]
    MfaNotEnabled,
    #[error("the password or code is wrong")]
    ReauthenticationFailed,
    #[error("this shop requires MFA; enrol before doing anything else")]
    MfaEnrollmentRequired,
    #[error("this shop requires MFA, so it cannot be turned off")]
    MfaRequiredByShop,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("not an email address")]
    InvalidEmail,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// Tokens handed to a client after login, setup or refresh.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
}

/// An authenticated staff member, as handlers see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffPrincipal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The role *now* (read from storage, not from the token).
    pub role: Role,
    pub session_id: SessionId,
    /// The shop requires staff MFA and this user has not enrolled yet: the principal may only
    /// read its account and enrol.
    pub mfa_pending: bool,
}

/// Staff authentication use cases.
#[derive(Debug, Clone)]
pub struct AuthService {
    tenants: Arc<dyn TenantStore>,
    staff: Arc<dyn StaffStore>,
    sessions: Arc<dyn SessionStore>,
    events: Arc<dyn EventLog>,
    throttle: Arc<dyn LoginThrottle>,
    mfa: Arc<dyn MfaStore>,
    customers: Arc<dyn CustomerStore>,
    keys: Arc<KeyRing>,
    hasher: PasswordHasher,
    clock: Arc<dyn Clock>,
    settings: AuthSettings,
}

impl From<crate::domain::password::HashRunError> for AuthError {
    fn from(e: crate::domain::password::HashRunError) -> Self {
        match e {
            crate::domain::password::HashRunError::Busy {
                retry_after_seconds,
            } => Self::Overloaded {
                retry_after_seconds,
            },
            crate::domain::password::HashRunError::Failed(msg) => Self::Internal(msg),
        }
    }
}

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, AuthError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| AuthError::Internal(e.to_string()))
}

/// The storage ports authentication works with.
#[derive(Debug, Clone)]
pub struct AuthPorts {
    pub tenants: Arc<dyn TenantStore>,
    pub staff: Arc<dyn StaffStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventLog>,
    pub throttle: Arc<dyn LoginThrottle>,
    pub mfa: Arc<dyn MfaStore>,
    pub customers: Arc<dyn CustomerStore>,
}

/// Which API a session-bound request came through: a session answers only on its own side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `/v1/auth/*`: staff sessions.
    Admin,
    /// `/v1/store/*` of one tenant's storefront: that tenant's customer sessions.
    Store { tenant: TenantId },
}

impl Side {
    fn admits(self, session: &Session) -> bool {
        self.admits_account(session.tenant_id, session.owner)
    }

    /// Whether an account of `tenant` belongs on this side.
    fn admits_account(self, tenant: TenantId, account: Account) -> bool {
        match (self, account) {
            (Self::Admin, Account::Staff(_)) => true,
            (Self::Store { tenant: shop }, Account::Customer(_)) => tenant == shop,
            _ => false,
        }
    }
}

/// What a correct password leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Logged in.
    Tokens(TokenPair),
    /// The password was right; a TOTP or backup code is needed at `/v1/auth/mfa` (staff) or
    /// `/v1/store/auth/mfa` (customers) with this token.
    MfaRequired { mfa_token: String, expires_in: i64 },
}

/// A started TOTP enrolment: what the authenticator app needs.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// RFC 4648 base32, for manual entry.
    pub secret: String,
    pub otpauth_uri: String,
}

impl AuthService {
    pub fn new(
        ports: AuthPorts,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        settings: AuthSettings,
    ) -> Self {
        let AuthPorts {
            tenants,
            staff,
            sessions,
            events,
            throttle,
            mfa,
            customers,
        } = ports;
        Self {
            tenants,
            staff,
            sessions,
            events,
            throttle,
            mfa,
            customers,
            keys,
            hasher: PasswordHasher::bounded(
                settings.hash_concurrency,
                settings.hash_per_address,
                settings.hash_queue_wait,
            ),
            clock,
            settings,
        }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Creates a tenant with its owner and returns the owner's one-time setup token.
    #[instrument(skip_all, fields(slug = %new.slug))]
    pub async fn create_tenant_with_owner(
        &self,
        new: NewTenant,
        owner_email: Email,
    ) -> Result<(Tenant, UserId, Secret), AuthError> {
        let now = self.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: new.slug,
            name: new.name,
            created_at: now,
        };
        let owner = StaffUser {
            id: UserId::new(),
            tenant_id: tenant.id,
            email: owner_email,
            role: Role::Owner,
            status: UserStatus::Invited,
            password_hash: None,
            created_at: now,
        };
        let setup = Secret::generate(TokenPurpose::Setup.prefix());
        let token = OneTimeToken {
            hash: setup.hash,
            tenant_id: tenant.id,
            owner: Account::Staff(owner.id),
            purpose: TokenPurpose::Setup,
            expires_at: now + self.settings.setup_ttl,
        };
        let events = [
            event(
                tenant.id,
                "tenant.created",
                &serde_json::json!({"tenant_id": tenant.id, "slug": tenant.slug, "name": tenant.name}),
                now,
            )?,
            event(
                tenant.id,
                "staff_user.invited",
                &serde_json::json!({"user_id": owner.id, "role": owner.role}),
                now,
            )?,
        ];
        match self
            .staff
            .create_tenant_with_owner(&tenant, &owner, &token, &events)
            .await
        {
            Ok(()) => Ok((tenant, owner.id, setup)),
            Err(e) if e.is_conflict_on(TENANT_SLUG_CONSTRAINT) => {
                Err(TenantError::SlugTaken(tenant.slug).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn claims(&self, user: &StaffUser, session: SessionId, now: OffsetDateTime) -> Claims {
        Claims {
            iss: self.settings.issuer.clone(),
            aud: STAFF_AUDIENCE.to_owned(),
            sub: user.id.to_string(),
            tid: user.tenant_id,
            kind: PrincipalKind::Staff,
            scope: user
                .role
                .permissions()
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            sid: session.to_string(),
            jti: base64_id(),
            iat: now.unix_timestamp(),
            exp: (now + self.settings.access_ttl).unix_timestamp(),
        }
    }

    async fn pair(
        &self,
        user: &StaffUser,
        session: SessionId,
        refresh: &Secret,
        now: OffsetDateTime,
    ) -> Result<TokenPair, AuthError> {
        self.sign_pair(&self.claims(user, session, now), refresh)
            .await
    }

    /// Signs `claims` and pairs the access token with the refresh token.
    async fn sign_pair(&self, claims: &Claims, refresh: &Secret) -> Result<TokenPair, AuthError> {
        let access_token = self.keys.sign(claims).await?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.access_ttl.whole_seconds(),
            refresh_token: refresh.expose().to_owned(),
            refresh_expires_in: self.settings.refresh_ttl.whole_seconds(),
        })
    }

    fn new_session(
        &self,
        tenant: TenantId,
        owner: Account,
        now: OffsetDateTime,
    ) -> (Session, Secret, RefreshToken) {
        let session = Session {
            id: SessionId::new(),
            tenant_id: tenant,
            owner,
            created_at: now,
            last_used_at: now,
            expires_at: now + self.settings.refresh_ttl,
            revoked_at: None,
        };
        let secret = Secret::generate(REFRESH_PREFIX);
        let refresh = RefreshToken {
            hash: secret.hash,
            tenant_id: tenant,
            session_id: session.id,
            issued_at: now,
            expires_at: now + self.settings.refresh_ttl,
            used_at: None,
        };
        (session, secret, refresh)
    }

    /// Redeems an owner setup token or an invite token with a first password; logs the user in.
    #[instrument(skip_all)]
    pub async fn setup(&self, setup_token: &str, password: String) -> Result<TokenPair, AuthError> {
        let now = self.clock.now();
        // Owner setup tokens and invite tokens are redeemed the same way; the prefix says which.
        let purpose = TokenPurpose::of_presented(setup_token).ok_or(AuthError::InvalidToken)?;
        let hash =
            Secret::hash_presented(purpose.prefix(), setup_token).ok_or(AuthError::InvalidToken)?;
        let token = match self.staff.find_one_time_token(&hash, purpose, now).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        };
        let user_id = token.staff_user().ok_or(AuthError::InvalidToken)?;
        let mut user = self.staff.get_user(token.tenant_id, user_id).await?;
        let tenant = self.tenants.get(token.tenant_id).await?;
        let new_password = NewPassword::parse(&password, user.email.as_str(), tenant.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        let stored = self
            .hasher
            .run(move |h| h.hash(&new_password))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let (session, secret, refresh) =
            self.new_session(user.tenant_id, Account::Staff(user.id), now);
        let events = [event(
            user.tenant_id,
            "staff_user.activated",
            &serde_json::json!({"user_id": user.id}),
            now,
        )?];
        match self
            .staff
            .activate_with_token(&token, &stored, &session, &refresh, &events)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        }
        user.status = UserStatus::Active;
        tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, "owner setup completed");
        self.pair(&user, session.id, &secret, now).await
    }

    /// Password login, throttled per account and per client address (exact limits from the
    /// settings). The reservation comes before any lookup or password work, so a locked account
    /// is refused without checking the password, and unknown accounts lock like known ones.
    /// Unknown tenant, unknown email, inactive account and wrong password all answer the same
    /// error after the same password work.
    #[instrument(skip_all)]
    pub async fn login(
        &self,
        tenant_slug: &str,
        email: &str,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<LoginOutcome, AuthError> {
        let now = self.clock.now();
        let account = ThrottleKey::account(tenant_slug, email);
        let mut limits = vec![Limit {
            key: account,
            max: self.settings.login_account_max,
            window: self.settings.login_window,
        }];
        if let Some(ip) = client {
            limits.push(Limit {
                key: ThrottleKey::staff_login_address(tenant_slug, ip),
                max: self.settings.login_ip_max,
                window: self.settings.login_window,
            });
        }
        let (attempt, remaining) = match self.throttle.reserve(&limits, now).await? {
            Attempt::Reserved { id, remaining } => (id, remaining),
            Attempt::Locked { until } => {
                tracing::info!(security = true, "login refused: attempt limit reached");
                return Err(AuthError::TooManyAttempts {
                    retry_after_seconds: ceil_seconds(until - now),
                });
            }
        };
        // No such shop: nothing to hide (shop handles are public), so no password work is
        // spent on it; an unknown account of a real shop costs a dummy verification.
        let Some(user) = self.find_login_user(tenant_slug, email).await? else {
            return Err(AuthError::InvalidCredentials);
        };
        let stored: Option<StoredHash> = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = self.verify_or_dummy(stored, password, client).await?;
        let user = match user {
            Some(u) if ok && u.status == UserStatus::Active => u,
            other => {
                if let Some(u) = other {
                    let mut events = vec![event(
                        u.tenant_id,
                        "security.login_failed",
                        &serde_json::json!({"user_id": u.id}),
                        now,
                    )?];
                    if remaining == 0 {
                        // This failure used the last attempt the window allowed.
                        events.push(event(
                            u.tenant_id,
                            "security.login_locked",
                            &serde_json::json!({"user_id": u.id, "window_s": self.settings.login_window.whole_seconds()}),
                            now,
                        )?);
                    }
                    self.events.append(&events).await?;
                    tracing::info!(security = true, tenant_id = %u.tenant_id, user_id = %u.id, locked = remaining == 0, "login failed");
                }
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.throttle.succeed(attempt, &account).await?;
        if let Some(challenge) = self
            .mfa_challenge(user.tenant_id, Account::Staff(user.id), now)
            .await?
        {
            return Ok(challenge);
        }
        let (session, secret, refresh) =
            self.new_session(user.tenant_id, Account::Staff(user.id), now);
        let events = [event(
            user.tenant_id,
            "security.login_succeeded",
            &serde_json::json!({"user_id": user.id, "session_id": session.id}),
            now,
        )?];
        self.sessions
            .start_session(&session, &refresh, &events)
            .await?;
        tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, "login succeeded");
        Ok(LoginOutcome::Tokens(
            self.pair(&user, session.id, &secret, now).await?,
        ))
    }

    /// Verifies `password` against `stored`, or spends the same work against a dummy hash
    /// when there is none (an unknown account answers after the same time), within the
    /// hashing bound.
    pub(super) async fn verify_or_dummy(
        &self,
        stored: Option<StoredHash>,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        Ok(self
            .hasher
            .run_for(client, move |hasher| {
                if let Some(h) = stored {
                    hasher.verify(&password, &h)
                } else {
                    hasher.verify_dummy(&password);
                    false
                }
            })
            .await?)
    }

    /// `None` when there is no such shop; `Some(None)` when the shop has no such account.
    async fn find_login_user(
        &self,
        tenant_slug: &str,
        email: &str,
    ) -> Result<Option<Option<StaffUser>>, AuthError> {
        let Ok(slug) = crate::domain::TenantSlug::parse(tenant_slug) else {
            return Ok(None);
        };
        let tenant = match self.tenants.get_by_slug(&slug).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(email) = Email::parse(email) else {
            return Ok(Some(None));
        };
        match self.staff.find_user_by_email(tenant.id, &email).await {
            Ok(u) => Ok(Some(Some(u))),
            Err(StoreError::NotFound) => Ok(Some(None)),
            Err(e) => Err(e.into()),
        }
    }

    async fn revoke_for_reuse(
        &self,
        tenant: TenantId,
        session: SessionId,
        now: OffsetDateTime,
    ) -> Result<AuthError, AuthError> {
        let e = event(
            tenant,
            "security.refresh_token_reused",
            &serde_json::json!({"session_id": session}),
            now,
        )?;
        self.sessions
            .revoke_session(tenant, session, now, &[e])
            .await?;
        tracing::warn!(security = true, tenant_id = %tenant, session_id = %session, "refresh token reused: session revoked");
        Ok(AuthError::RefreshTokenReused)
    }

    /// Exchanges a refresh token for a new pair. The presented token is spent; presenting a
    /// spent token again revokes the whole session (family).
    #[instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str, side: Side) -> Result<TokenPair, AuthError> {
        let now = self.clock.now();
        let (hash, old, session) = self.presented_refresh(refresh_token, side).await?;
        if old.used_at.is_some() {
            return Err(self
                .revoke_for_reuse(old.tenant_id, old.session_id, now)
                .await?);
        }
        if !session.is_active(now) || now >= old.expires_at {
            return Err(AuthError::InvalidRefreshToken);
        }
        let Some(claims) = self
            .claims_for(session.tenant_id, session.owner, session.id, now)
            .await?
        else {
            return Err(AuthError::InvalidRefreshToken);
        };
        let secret = Secret::generate(REFRESH_PREFIX);
        let new = RefreshToken {
            hash: secret.hash,
            tenant_id: old.tenant_id,
            session_id: old.session_id,
            issued_at: now,
            expires_at: now + self.settings.refresh_ttl,
            used_at: None,
        };
        match self
            .sessions
            .rotate_refresh_token(old.tenant_id, &hash, &new)
            .await
        {
            Ok(()) => self.sign_pair(&claims, &secret).await,
            // Spent between our read and our write: a concurrent presentation of the same token.
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => Err(self
                .revoke_for_reuse(old.tenant_id, old.session_id, now)
                .await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Fresh access-token claims for an account's session, read from its current record; `None`
    /// when the account may no longer log in (a disabled staff user).
    async fn claims_for(
        &self,
        tenant: TenantId,
        account: Account,
        session: SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<Claims>, AuthError> {
        Ok(match account {
            Account::Staff(user_id) => {
                let user = self.staff.get_user(tenant, user_id).await?;
                (user.status == UserStatus::Active).then(|| self.claims(&user, session, now))
            }
            Account::Customer(customer_id) => {
                let customer = self.customers.get_customer(tenant, customer_id).await?;
                Some(self.customer_claims(&customer, session, now))
            }
        })
    }

    async fn find_refresh(&self, hash: &SecretHash) -> Result<RefreshToken, AuthError> {
        match self.sessions.find_refresh_token(hash).await {
            Ok(t) => Ok(t),
            Err(StoreError::NotFound) => Err(AuthError::InvalidRefreshToken),
            Err(e) => Err(e.into()),
        }
    }

    /// The refresh token presented, its hash and its session, when the session is this
    /// side's (a staff token at the storefront, a customer token at the admin API, or another
    /// shop's customer: not this endpoint's session, and not spent by asking). Nothing is
    /// spent or changed.
    async fn presented_refresh(
        &self,
        refresh_token: &str,
        side: Side,
    ) -> Result<(SecretHash, RefreshToken, Session), AuthError> {
        let hash = Secret::hash_presented(REFRESH_PREFIX, refresh_token)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let token = self.find_refresh(&hash).await?;
        let session = self
            .sessions
            .get_session(token.tenant_id, token.session_id)
            .await?;
        if !side.admits(&session) {
            return Err(AuthError::InvalidRefreshToken);
        }
        Ok((hash, token, session))
    }

    /// The shop and session a refresh token belongs to, without spending it: for checking a
    /// browser session's CSRF token before the token is used. Unknown, or not this side's:
    /// `InvalidRefreshToken`.
    pub async fn refresh_session(
        &self,
        refresh_token: &str,
        side: Side,
    ) -> Result<(TenantId, SessionId), AuthError> {
        let (_, token, _) = self.presented_refresh(refresh_token, side).await?;
        Ok((token.tenant_id, token.session_id))
    }

    /// Ends the session the refresh token belongs to (the whole family).
    #[instrument(skip_all)]
    pub async fn logout(&self, refresh_token: &str, side: Side) -> Result<(), AuthError> {
        let now = self.clock.now();
        let (_, token, _) = self.presented_refresh(refresh_token, side).await?;
        let e = event(
            token.tenant_id,
            "security.logout",
            &serde_json::json!({"session_id": token.session_id}),
            now,
        )?;
        self.sessions
            .revoke_session(token.tenant_id, token.session_id, now, &[e])
            .await?;
        Ok(())
    }

    /// Checks a staff access token and that its session and user are still active.
    pub async fn authenticate_staff(&self, bearer: &str) -> Result<StaffPrincipal, AuthError> {
        let now = self.clock.now();
        let claims = self
            .keys
            .verify(
                bearer,
                &self.settings.issuer,
                STAFF_AUDIENCE,
                self.settings.leeway,
            )
            .await?
            .map_err(|e| {
                tracing::debug!(reason = %e, "access token refused");
                AuthError::Unauthenticated
            })?;
        if claims.kind != PrincipalKind::Staff {
            return Err(AuthError::Unauthenticated);
        }
        let user_id: UserId = claims.sub.parse().map_err(|_| AuthError::Unauthenticated)?;
        let session_id: SessionId = claims.sid.parse().map_err(|_| AuthError::Unauthenticated)?;
        // The session, the user and the MFA facts in one read (issue 25).
        let access = match self
            .sessions
            .staff_access(claims.tid, session_id, user_id)
            .await
        {
            Ok(a) => a,
            Err(StoreError::NotFound) => return Err(AuthError::Unauthenticated),
            Err(e) => return Err(e.into()),
        };
        if !access.session.is_active(now) || access.session.owner != Account::Staff(user_id) {
            return Err(AuthError::Unauthenticated);
        }
        let Some((role, UserStatus::Active)) = access.user else {
            return Err(AuthError::Unauthenticated);
        };
        Ok(StaffPrincipal {
            tenant_id: claims.tid,
            user_id,
            role,
            session_id,
            mfa_pending: access.mfa.required && !access.mfa.enrolled,
        })
    }

    pub async fn me(&self, p: &StaffPrincipal) -> Result<StaffUser, AuthError> {
        Ok(self.staff.get_user(p.tenant_id, p.user_id).await?)
    }

    pub async fn sessions(&self, p: &StaffPrincipal) -> Result<Vec<Session>, AuthError> {
        Ok(self
            .sessions
            .list_active_sessions(p.tenant_id, Account::Staff(p.user_id), self.clock.now())
            .await?)
    }

    /// Revokes one of the caller's own sessions; anyone else's is `NotFound`.
    pub async fn revoke_own_session(
        &self,
        p: &StaffPrincipal,
        id: SessionId,
    ) -> Result<(), AuthError> {
        let session = self.sessions.get_session(p.tenant_id, id).await?;
        if session.owner != Account::Staff(p.user_id) {
            return Err(AuthError::NotFound);
        }
        let now = self.clock.now();
        let e = event(
            p.tenant_id,
            "security.session_revoked",
            &serde_json::json!({"session_id": id}),
            now,
        )?;
        self.sessions
            .revoke_session(p.tenant_id, id, now, &[e])
            .await?;
        Ok(())
    }
}

/// A random token id (`jti`).
fn base64_id() -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}
