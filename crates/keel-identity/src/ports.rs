//! Storage ports of the identity context. Each method is one atomic use-case step:
//! the adapter opens and commits its own transaction, writing the given events with it.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};

use time::OffsetDateTime;

use crate::{
    domain::access::{Role, RoleChangeError},
    domain::api_key::{ApiKey, ApiKeyId},
    domain::customer::{Customer, CustomerId},
    domain::notice::AccountNotice,
    domain::password::StoredHash,
    domain::secret::SecretHash,
    domain::staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser, StoredMfa,
        StoredSigningKey, TokenPurpose, UserId, UserStatus,
    },
    domain::throttle::{Limit, ThrottleKey},
    domain::{Tenant, TenantSlug},
};

/// The canonical name of the unique constraint on tenant slugs, on every backend.
pub const TENANT_SLUG_CONSTRAINT: &str = "tenants_slug_key";

/// Tenants: the one table not scoped by a tenant, because it *is* the tenant list. Only the
/// operator's tooling writes it.
#[async_trait]
pub trait TenantStore: Send + Sync + std::fmt::Debug {
    /// Inserts the tenant and its events in one transaction. A taken slug is
    /// `Conflict { constraint: "tenants_slug_key" }` and writes nothing.
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError>;
    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError>;
    /// Tenants in creation order.
    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError>;
}

/// The canonical name of the unique constraint on staff emails within a tenant.
pub const STAFF_EMAIL_CONSTRAINT: &str = "staff_users_email_key";
/// Reported when a single-use token or refresh token was consumed by a concurrent request.
pub const TOKEN_ALREADY_USED: &str = "token_already_used";

/// Staff accounts and their activation tokens.
#[async_trait]
pub trait StaffStore: Send + Sync + std::fmt::Debug {
    /// Creates a tenant, its owner (invited) and the owner's setup token, with the events, in
    /// one transaction.
    async fn create_tenant_with_owner(
        &self,
        tenant: &Tenant,
        owner: &StaffUser,
        setup: &OneTimeToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<StaffUser, StoreError>;
    async fn find_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<StaffUser, StoreError>;
    /// An unused token of this purpose that has not expired at `now`, found by its hash.
    async fn find_one_time_token(
        &self,
        hash: &SecretHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<OneTimeToken, StoreError>;
    /// Adds an invited user and their invite token, with the events and (when the shop has
    /// an enabled account-notification endpoint) the notice queued for it, in one
    /// transaction. A taken email is `Conflict { STAFF_EMAIL_CONSTRAINT }`.
    async fn invite_user(
        &self,
        user: &StaffUser,
        invite: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError>;
    /// Replaces an account's password (a staff user's or a customer's) and revokes every
    /// session of the account except `keep`, with the events, in one transaction. `NotFound`
    /// when there is no such account.
    async fn set_password(
        &self,
        tenant: TenantId,
        account: Account,
        password: &StoredHash,
        keep: Option<SessionId>,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Stores a one-time token (e.g. a reset token), with the events and (when the shop has
    /// an enabled account-notification endpoint) the notice that carries the token, in one
    /// transaction.
    async fn issue_token(
        &self,
        token: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError>;
    /// Spends `token` (only if unused: else `Conflict { TOKEN_ALREADY_USED }`), sets the password
    /// of the token's account (staff user or customer) and revokes every session of it, in one
    /// transaction.
    async fn reset_password(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Users of a tenant in creation order.
    async fn list_users(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, StoreError>;
    /// Changes a user's role (`Some`) or disables them (`None`), deciding with
    /// [`check_role_change`](crate::domain::access::check_role_change) on the current role and the
    /// number of active owners read *inside* the transaction (rows locked where the backend
    /// needs it), so two concurrent demotions cannot remove the last owner. Disabling also
    /// revokes every session of the user at `at`.
    async fn change_role(
        &self,
        tenant: TenantId,
        user: UserId,
        actor: Role,
        new: Option<Role>,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<Result<StaffUser, RoleChangeError>, StoreError>;
    /// Consumes `token` (only if still unused: else `Conflict { TOKEN_ALREADY_USED }`), sets
    /// the user's password, activates the user and starts the session, in one transaction.
    async fn activate_with_token(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}

/// Sessions and their refresh-token families.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    async fn start_session(
        &self,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// A refresh token by hash, used or not (reuse detection needs the used ones).
    async fn find_refresh_token(&self, hash: &SecretHash) -> Result<RefreshToken, StoreError>;
    /// Marks `old` used, stores `new` and moves the session's expiry and last use, in one
    /// transaction. If `old` was already used (a concurrent rotation), nothing changes and the
    /// answer is `Conflict { TOKEN_ALREADY_USED }`.
    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &SecretHash,
        new: &RefreshToken,
    ) -> Result<(), StoreError>;
    /// Revokes a session (idempotent), with the events.
    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session, StoreError>;
    /// The session, the staff user's role and status, and the shop's MFA facts in one read
    /// (every authenticated staff request); `NotFound` without the session.
    async fn staff_access(
        &self,
        tenant: TenantId,
        session: SessionId,
        user: UserId,
    ) -> Result<StaffAccess, StoreError>;
    /// An owner's sessions that are neither revoked nor expired at `now`, newest first.
    async fn list_active_sessions(
        &self,
        tenant: TenantId,
        owner: Account,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError>;
}

/// JWT signing keys, shared by every node (not tenant-scoped).
#[async_trait]
pub trait SigningKeyStore: Send + Sync + std::fmt::Debug {
    /// Every key, newest first.
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Retires every current key at `key.created_at` and adds `key`, in one transaction.
    async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
}

/// Outcome of asking to evaluate a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Reserved under every limit; settle it with [`LoginThrottle::succeed`] or leave it as a
    /// failure. `remaining` is how many more attempts the tightest limit allows after this one.
    Reserved { id: AttemptId, remaining: u32 },
    /// A limit is reached; no password may be checked before this time.
    Locked { until: OffsetDateTime },
}

/// One reserved login attempt (its rows, one per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptId(pub uuid::Uuid);

/// Exact login throttling, shared by every node through the database.
#[async_trait]
pub trait LoginThrottle: Send + Sync + std::fmt::Debug {
    /// In one serialised transaction per key set: if every limit has fewer than `max` attempts
    /// in `(now - window, now]`, records one attempt per key and answers `Reserved`; otherwise
    /// records nothing and answers `Locked` with the time the last reached limit opens.
    async fn reserve(&self, limits: &[Limit], now: OffsetDateTime) -> Result<Attempt, StoreError>;
    /// The attempt succeeded: removes its rows and every earlier row of `clear` (the account).
    async fn succeed(&self, attempt: AttemptId, clear: &ThrottleKey) -> Result<(), StoreError>;
    /// The attempt was not a failure, but clears nothing else: removes only its own rows.
    async fn forget(&self, attempt: AttemptId) -> Result<(), StoreError>;
    /// Removes rows older than `before` (a scheduled clean-up).
    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// What authorises a staff request, read at once: the session, the user's role and status
/// (`None` without the user) and the MFA facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffAccess {
    pub session: Session,
    pub user: Option<(Role, UserStatus)>,
    pub mfa: MfaStatus,
}

/// The MFA facts that authorise a staff request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaStatus {
    /// The shop requires MFA for all staff.
    pub required: bool,
    /// This user has confirmed MFA.
    pub enrolled: bool,
}

/// Reported when MFA is already confirmed and a new enrolment is attempted.
pub const MFA_ALREADY_ENABLED: &str = "mfa_already_enabled";

/// TOTP enrolment, backup codes and the MFA step of login, for staff users and customers alike.
#[async_trait]
pub trait MfaStore: Send + Sync + std::fmt::Debug {
    async fn get_mfa(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<Option<StoredMfa>, StoreError>;
    /// Stores a new, unconfirmed secret (replacing an unconfirmed one). A confirmed enrolment
    /// is left alone: `Conflict { MFA_ALREADY_ENABLED }`.
    async fn begin_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
    ) -> Result<(), StoreError>;
    /// Confirms the enrolment with the step of a valid code and replaces the backup codes, with
    /// the events, in one transaction. Only an unconfirmed enrolment can be confirmed.
    async fn confirm_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
        backup_code_hashes: &[[u8; 32]],
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Records `step` as used if it is later than the last used one; false when it is not
    /// (the code was already used, by a concurrent request too).
    async fn use_totp_step(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
    ) -> Result<bool, StoreError>;
    /// Spends an unused backup code; false when unknown or already used.
    async fn use_backup_code(
        &self,
        tenant: TenantId,
        account: Account,
        hash: &[u8; 32],
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Replaces a confirmed enrolment's backup codes, with the events (`NotFound` without one).
    async fn replace_backup_codes(
        &self,
        tenant: TenantId,
        account: Account,
        backup_code_hashes: &[[u8; 32]],
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Whether the user's shop requires staff MFA, and whether the user has confirmed MFA: one
    /// read, made on every authenticated staff request.
    async fn staff_mfa_status(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<MfaStatus, StoreError>;
    /// Sets the shop's staff MFA requirement, with the events.
    async fn set_require_staff_mfa(
        &self,
        tenant: TenantId,
        required: bool,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Removes the enrolment and its backup codes, with the events.
    async fn disable_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Stores an MFA login token.
    async fn create_mfa_token(&self, token: &OneTimeToken) -> Result<(), StoreError>;
    /// Counts a wrong code against an MFA token; at `max` failures the token is spent. Returns
    /// the failures so far.
    async fn fail_mfa_token(
        &self,
        hash: &SecretHash,
        max: u32,
        at: OffsetDateTime,
    ) -> Result<u32, StoreError>;
    /// Spends the MFA token (only if unused: else `Conflict { TOKEN_ALREADY_USED }`) and starts
    /// the session, with the events, in one transaction.
    async fn complete_mfa_login(
        &self,
        token: &OneTimeToken,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}

/// API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + std::fmt::Debug {
    async fn create_api_key(&self, key: &ApiKey, events: &[NewEvent]) -> Result<(), StoreError>;
    /// Finds a key by its public lookup part, whatever its tenant (the caller then checks the
    /// secret and the tenant).
    async fn find_api_key(&self, lookup: &str) -> Result<ApiKey, StoreError>;
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, StoreError>;
    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ApiKey>, StoreError>;
    /// Revokes a key (idempotent: the first revocation time is kept), with the events.
    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Stores `new` and moves the old key's expiry to `old_expires_at` (never later than it
    /// was), in one transaction. A revoked or missing old key is `NotFound`.
    async fn rotate_api_key(
        &self,
        tenant: TenantId,
        old: ApiKeyId,
        old_expires_at: OffsetDateTime,
        new: &ApiKey,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Whether an active (unrevoked, unexpired at `now`) publishable key of any tenant allows
    /// `origin`.
    async fn publishable_origin_allowed(
        &self,
        origin: &crate::domain::api_key::Origin,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Records a use (callers rate this to once per minute per key).
    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// The canonical name of the unique constraint on customer emails within a tenant.
pub const CUSTOMER_EMAIL_CONSTRAINT: &str = "customers_email_key";

/// Customer accounts.
#[async_trait]
pub trait CustomerStore: Send + Sync + std::fmt::Debug {
    /// Creates the customer and starts their first session, with the events, in one
    /// transaction. A taken email is `Conflict { CUSTOMER_EMAIL_CONSTRAINT }`.
    async fn sign_up_customer(
        &self,
        customer: &Customer,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn get_customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer, StoreError>;
    /// The tenant's customers among `ids`, in one statement whatever their number (another
    /// tenant's ids find nothing); in no particular order.
    async fn customers_by_ids(
        &self,
        tenant: TenantId,
        ids: &[CustomerId],
    ) -> Result<Vec<Customer>, StoreError>;
    async fn find_customer_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Customer, StoreError>;
}
