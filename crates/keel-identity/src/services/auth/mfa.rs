//! The MFA half of authentication, for staff users and customers alike: TOTP enrolment,
//! confirmation with backup codes, disabling, and the second step of a login. The rules are the
//! same for both kinds of account; only where the account lives, which tokens a completed login
//! gets, and the shop's staff requirement differ.

use keel_kernel::event::NewEvent;

use super::{
    Account, AuthError, AuthService, MFA_ALREADY_ENABLED, OffsetDateTime, Secret, Side, StoreError,
    StoredHash, StoredMfa, TOKEN_ALREADY_USED, TenantId, TokenPair, TokenPurpose, TotpEnrolment,
    TotpSecret, event, instrument, totp,
};
use crate::{
    domain::staff::{Email, OneTimeToken, SessionId},
    domain::throttle::{Limit, ThrottleKey},
    ports::{Attempt, AttemptId},
    services::auth::{CustomerPrincipal, LoginOutcome, StaffPrincipal, ceil_seconds},
};

/// How a claimed check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Factor {
    /// A correct TOTP or backup code (with the password, where one was asked).
    CodeAccepted,
    /// A correct password alone.
    PasswordAccepted,
    Refused,
}

impl Factor {
    fn code(ok: bool) -> Self {
        if ok {
            Self::CodeAccepted
        } else {
            Self::Refused
        }
    }
}

/// A second-factor or re-authentication attempt, claimed (counted) before anything is checked.
#[derive(Debug)]
pub(super) struct FactorClaim {
    id: AttemptId,
    key: ThrottleKey,
    /// This attempt used the last one the window allows: failing it locks the factor.
    last: bool,
}

/// A signed-in caller who manages their own MFA: a staff member or a customer.
pub trait AccountHolder {
    fn tenant_id(&self) -> TenantId;
    fn account(&self) -> Account;
    /// The session the caller's token belongs to.
    fn session_id(&self) -> SessionId;
}

impl AccountHolder for StaffPrincipal {
    fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    fn account(&self) -> Account {
        Account::Staff(self.user_id)
    }
    fn session_id(&self) -> SessionId {
        self.session_id
    }
}

impl AccountHolder for CustomerPrincipal {
    fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    fn account(&self) -> Account {
        Account::Customer(self.customer_id)
    }
    fn session_id(&self) -> SessionId {
        self.session_id
    }
}

/// The `account_id` payload entry of an MFA event: `{"user_id": …}` or `{"customer_id": …}`.
pub(super) fn subject(account: Account) -> serde_json::Value {
    serde_json::json!({ account.payload_key(): account.to_string() })
}

impl AuthService {
    /// Claims one second-factor or re-authentication attempt for the account, before any code
    /// or password is checked, so N parallel guesses count N. A locked factor answers
    /// `FactorLocked` without checking anything. Only a correct factor clears the count; a
    /// correct password at login never does (it is another throttle).
    pub(super) async fn claim_factor(
        &self,
        tenant: TenantId,
        account: Account,
        now: OffsetDateTime,
    ) -> Result<FactorClaim, AuthError> {
        let key = ThrottleKey::factor(tenant, account);
        let limit = Limit {
            key,
            max: self.settings.second_factor_max,
            window: self.settings.second_factor_window,
        };
        match self.throttle.reserve(&[limit], now).await? {
            Attempt::Reserved { id, remaining } => Ok(FactorClaim {
                id,
                key,
                last: remaining == 0,
            }),
            Attempt::Locked { until } => {
                tracing::info!(security = true, tenant_id = %tenant, %account, "second factor locked: attempt refused unchecked");
                Err(AuthError::FactorLocked {
                    retry_after_seconds: ceil_seconds(until - now),
                })
            }
        }
    }

    /// Settles a claimed attempt. A correct second factor (TOTP or backup code) clears the
    /// account's failures; a correct password only takes its own attempt back, since knowing
    /// the password must never buy more guesses at the factor. A failure adds `failure` (if
    /// any) to the events, and `security.mfa_locked` when it used the window's last attempt.
    pub(super) async fn settle_factor(
        &self,
        claim: FactorClaim,
        outcome: Factor,
        tenant: TenantId,
        account: Account,
        failure: Option<NewEvent>,
        now: OffsetDateTime,
    ) -> Result<(), AuthError> {
        match outcome {
            Factor::CodeAccepted => {
                self.throttle.succeed(claim.id, &claim.key).await?;
                return Ok(());
            }
            Factor::PasswordAccepted => {
                self.throttle.forget(claim.id).await?;
                return Ok(());
            }
            Factor::Refused => {}
        }
        let mut events: Vec<NewEvent> = failure.into_iter().collect();
        if claim.last {
            let mut payload = subject(account);
            payload["window_s"] = self.settings.second_factor_window.whole_seconds().into();
            events.push(event(tenant, "security.mfa_locked", &payload, now)?);
            tracing::warn!(security = true, tenant_id = %tenant, %account, "second factor locked");
        }
        if !events.is_empty() {
            self.events.append(&events).await?;
        }
        Ok(())
    }

    /// Checks the account's current password as re-authentication, counted as a factor
    /// attempt (claimed first, settled after).
    pub(super) async fn reauthenticate(
        &self,
        tenant: TenantId,
        account: Account,
        password: String,
        now: OffsetDateTime,
    ) -> Result<bool, AuthError> {
        let claim = self.claim_factor(tenant, account, now).await?;
        let (_, stored) = self.account_credentials(tenant, account).await?;
        let ok = self
            .hasher
            .run(move |h| stored.is_some_and(|s| h.verify(&password, &s)))
            .await?;
        let outcome = if ok {
            Factor::PasswordAccepted
        } else {
            Factor::Refused
        };
        self.settle_factor(claim, outcome, tenant, account, None, now)
            .await?;
        Ok(ok)
    }

    /// The AEAD context of a TOTP secret: sealed secrets cannot be moved between accounts. The
    /// prefixed id keeps staff (`usr_…`) and customer (`cus_…`) contexts apart.
    fn totp_context(tenant: TenantId, account: Account) -> String {
        format!("totp:{tenant}:{account}")
    }

    fn open_totp(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
    ) -> Result<TotpSecret, AuthError> {
        let bytes = self
            .keys
            .master()
            .open(&Self::totp_context(tenant, account), &mfa.sealed_secret)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let bytes: [u8; 20] = bytes
            .try_into()
            .map_err(|_| AuthError::Internal("TOTP secret is not 20 bytes".into()))?;
        Ok(TotpSecret::from_bytes(bytes))
    }

    /// The account's email (the authenticator app's label) and password hash.
    pub(super) async fn account_credentials(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<(Email, Option<StoredHash>), AuthError> {
        Ok(match account {
            Account::Staff(id) => {
                let u = self.staff.get_user(tenant, id).await?;
                (u.email, u.password_hash)
            }
            Account::Customer(id) => {
                let c = self.customers.get_customer(tenant, id).await?;
                (c.email, Some(c.password_hash))
            }
        })
    }

    /// The account's confirmed enrolment, if any.
    async fn confirmed_mfa(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<Option<StoredMfa>, AuthError> {
        Ok(self
            .mfa
            .get_mfa(tenant, account)
            .await?
            .filter(|m| m.confirmed_at.is_some()))
    }

    /// After a correct password: when the account has confirmed MFA, stores an MFA token and
    /// answers the challenge; otherwise `None` and the caller logs the account in.
    pub(super) async fn mfa_challenge(
        &self,
        tenant: TenantId,
        account: Account,
        now: OffsetDateTime,
    ) -> Result<Option<LoginOutcome>, AuthError> {
        if self.confirmed_mfa(tenant, account).await?.is_none() {
            return Ok(None);
        }
        let secret = Secret::generate(TokenPurpose::Mfa.prefix());
        let token = OneTimeToken {
            hash: secret.hash,
            tenant_id: tenant,
            owner: account,
            purpose: TokenPurpose::Mfa,
            expires_at: now + self.settings.mfa_token_ttl,
        };
        self.mfa.create_mfa_token(&token).await?;
        Ok(Some(LoginOutcome::MfaRequired {
            mfa_token: secret.expose().to_owned(),
            expires_in: self.settings.mfa_token_ttl.whole_seconds(),
        }))
    }

    /// Checks a TOTP code (spending its step) or a backup code (spending it). Exactly one of
    /// the two is given.
    async fn check_second_factor(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
        code: Option<&str>,
        backup_code: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, AuthError> {
        match (code, backup_code) {
            (Some(code), None) => {
                let secret = self.open_totp(tenant, account, mfa)?;
                match totp::verify(
                    &secret,
                    code.trim(),
                    now.unix_timestamp(),
                    mfa.last_used_step,
                ) {
                    Some(step) => Ok(self.mfa.use_totp_step(tenant, account, step).await?),
                    None => Ok(false),
                }
            }
            (None, Some(backup)) => Ok(self
                .mfa
                .use_backup_code(tenant, account, &totp::hash_backup_code(backup), now)
                .await?),
            _ => Ok(false),
        }
    }

    /// The second step of a login: the MFA token and a TOTP or backup code. A token answers only
    /// on its own side: a staff token at `/v1/auth/mfa`, a customer's at its shop's storefront.
    #[instrument(skip_all)]
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        code: Option<&str>,
        backup_code: Option<&str>,
        side: Side,
    ) -> Result<TokenPair, AuthError> {
        let now = self.clock.now();
        let hash = Secret::hash_presented(TokenPurpose::Mfa.prefix(), mfa_token)
            .ok_or(AuthError::InvalidToken)?;
        let token = match self
            .staff
            .find_one_time_token(&hash, TokenPurpose::Mfa, now)
            .await
        {
            Ok(t) if side.admits_account(t.tenant_id, t.owner) => t,
            // Another side's token is not this endpoint's, and is not spent by asking.
            Ok(_) | Err(StoreError::NotFound) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        };
        let (tenant, account) = (token.tenant_id, token.owner);
        // Counted per account before the code is looked at: fresh tokens from fresh password
        // logins share the count, and parallel guesses on one token each take a place.
        let claim = self.claim_factor(tenant, account, now).await?;
        let (session, secret, refresh) = self.new_session(tenant, account, now);
        // `None` when the account may no longer log in (a staff user disabled meanwhile).
        let claims = self.claims_for(tenant, account, session.id, now).await?;
        let ok = match (self.confirmed_mfa(tenant, account).await?, &claims) {
            (Some(m), Some(_)) => {
                self.check_second_factor(tenant, account, &m, code, backup_code, now)
                    .await?
            }
            _ => false,
        };
        let (true, Some(claims)) = (ok, claims) else {
            let failures = self
                .mfa
                .fail_mfa_token(&hash, self.settings.mfa_max_failures, now)
                .await?;
            let mut payload = subject(account);
            payload["failures"] = failures.into();
            let e = event(tenant, "security.mfa_failed", &payload, now)?;
            self.settle_factor(claim, Factor::Refused, tenant, account, Some(e), now)
                .await?;
            tracing::info!(security = true, tenant_id = %tenant, %account, failures, "MFA code refused");
            return Err(AuthError::InvalidMfaCode);
        };
        self.settle_factor(claim, Factor::CodeAccepted, tenant, account, None, now)
            .await?;
        let mut payload = subject(account);
        payload["session_id"] = session.id.to_string().into();
        payload["mfa"] = if backup_code.is_some() {
            "backup_code"
        } else {
            "totp"
        }
        .into();
        let events = [event(tenant, login_succeeded(account), &payload, now)?];
        match self
            .mfa
            .complete_mfa_login(&token, &session, &refresh, &events)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %tenant, %account, "login succeeded with MFA");
        self.sign_pair(&claims, &secret).await
    }

    /// Starts (or restarts) TOTP enrolment for the caller; needs the current password (a
    /// stolen access token alone must not bind a second factor to the account). The check
    /// counts against the account's second-factor limit.
    pub async fn begin_totp(
        &self,
        p: &impl AccountHolder,
        password: String,
    ) -> Result<TotpEnrolment, AuthError> {
        let (tenant_id, account) = (p.tenant_id(), p.account());
        if !self
            .reauthenticate(tenant_id, account, password, self.clock.now())
            .await?
        {
            return Err(AuthError::ReauthenticationFailed);
        }
        let (email, _) = self.account_credentials(tenant_id, account).await?;
        let tenant = self.tenants.get(tenant_id).await?;
        let secret = TotpSecret::generate();
        let stored = StoredMfa {
            sealed_secret: self
                .keys
                .master()
                .seal(&Self::totp_context(tenant_id, account), secret.as_bytes()),
            created_at: self.clock.now(),
            confirmed_at: None,
            last_used_step: None,
        };
        match self.mfa.begin_mfa(tenant_id, account, &stored).await {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(MFA_ALREADY_ENABLED) => {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            Err(e) => return Err(e.into()),
        }
        let issuer = format!("{} ({})", self.settings.issuer, tenant.name);
        Ok(TotpEnrolment {
            otpauth_uri: secret.otpauth_uri(&issuer, email.as_str()),
            secret: secret.to_base32(),
        })
    }

    /// Confirms the enrolment with a current code; returns the 10 backup codes (shown once).
    pub async fn confirm_totp(
        &self,
        p: &impl AccountHolder,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let (tenant, account) = (p.tenant_id(), p.account());
        let now = self.clock.now();
        let mfa = match self.mfa.get_mfa(tenant, account).await? {
            Some(m) if m.confirmed_at.is_none() => m,
            Some(_) => return Err(AuthError::MfaAlreadyEnabled),
            None => return Err(AuthError::MfaNotPending),
        };
        let secret = self.open_totp(tenant, account, &mfa)?;
        // Counted like every other code check: a stolen access token must not guess its way
        // into confirming an enrolment it did not start.
        let claim = self.claim_factor(tenant, account, now).await?;
        let step = totp::verify(&secret, code.trim(), now.unix_timestamp(), None);
        self.settle_factor(
            claim,
            Factor::code(step.is_some()),
            tenant,
            account,
            None,
            now,
        )
        .await?;
        let step = step.ok_or(AuthError::InvalidMfaCode)?;
        let codes = totp::generate_backup_codes();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| totp::hash_backup_code(c)).collect();
        let e = event(tenant, "security.mfa_enabled", &subject(account), now)?;
        match self
            .mfa
            .confirm_mfa(tenant, account, step, &hashes, now, &[e])
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(MFA_ALREADY_ENABLED) => {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %tenant, %account, "MFA enabled");
        Ok(codes)
    }

    /// Turns MFA off; needs the password and a current TOTP or backup code. Staff of a shop that
    /// requires MFA cannot.
    pub async fn disable_totp(
        &self,
        p: &impl AccountHolder,
        password: String,
        code: Option<&str>,
        backup_code: Option<&str>,
    ) -> Result<(), AuthError> {
        let (tenant, account) = (p.tenant_id(), p.account());
        let now = self.clock.now();
        let (_, stored) = self.account_credentials(tenant, account).await?;
        let mfa = self
            .confirmed_mfa(tenant, account)
            .await?
            .ok_or(AuthError::MfaNotEnabled)?;
        if let Account::Staff(user) = account
            && self.mfa.staff_mfa_status(tenant, user).await?.required
        {
            return Err(AuthError::MfaRequiredByShop);
        }
        // One attempt for the pair: claimed before either is checked.
        let claim = self.claim_factor(tenant, account, now).await?;
        let password_ok = self
            .hasher
            .run(move |h| stored.is_some_and(|s| h.verify(&password, &s)))
            .await?;
        let ok = password_ok
            && self
                .check_second_factor(tenant, account, &mfa, code, backup_code, now)
                .await?;
        self.settle_factor(claim, Factor::code(ok), tenant, account, None, now)
            .await?;
        if !ok {
            return Err(AuthError::ReauthenticationFailed);
        }
        let e = event(tenant, "security.mfa_disabled", &subject(account), now)?;
        self.mfa.disable_mfa(tenant, account, &[e]).await?;
        tracing::info!(security = true, tenant_id = %tenant, %account, "MFA disabled");
        Ok(())
    }

    /// Issues 10 new backup codes (the old ones stop working); needs a current TOTP code.
    pub async fn regenerate_backup_codes(
        &self,
        p: &impl AccountHolder,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let (tenant, account) = (p.tenant_id(), p.account());
        let now = self.clock.now();
        let mfa = self
            .confirmed_mfa(tenant, account)
            .await?
            .ok_or(AuthError::MfaNotEnabled)?;
        let claim = self.claim_factor(tenant, account, now).await?;
        let ok = self
            .check_second_factor(tenant, account, &mfa, Some(code), None, now)
            .await?;
        self.settle_factor(claim, Factor::code(ok), tenant, account, None, now)
            .await?;
        if !ok {
            return Err(AuthError::InvalidMfaCode);
        }
        let codes = totp::generate_backup_codes();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| totp::hash_backup_code(c)).collect();
        let e = event(
            tenant,
            "security.backup_codes_regenerated",
            &subject(account),
            now,
        )?;
        self.mfa
            .replace_backup_codes(tenant, account, &hashes, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %tenant, %account, "backup codes regenerated");
        Ok(codes)
    }

    /// Whether the caller's shop requires staff MFA.
    pub async fn staff_mfa_required(&self, p: &StaffPrincipal) -> Result<bool, AuthError> {
        Ok(self
            .mfa
            .staff_mfa_status(p.tenant_id, p.user_id)
            .await?
            .required)
    }

    /// Sets the shop's staff MFA requirement. Staff without MFA keep their sessions but may only
    /// enrol until they have, so nobody (the owner included) can be locked out by it.
    pub async fn set_staff_mfa_requirement(
        &self,
        p: &StaffPrincipal,
        required: bool,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let e = event(
            p.tenant_id,
            "security.staff_mfa_requirement_changed",
            &serde_json::json!({"required": required, "by": p.user_id}),
            now,
        )?;
        self.mfa
            .set_require_staff_mfa(p.tenant_id, required, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %p.tenant_id, required, "staff MFA requirement changed");
        Ok(())
    }
}

/// The event a successful login records: staff and customer logins are told apart by type, as
/// their failures are.
pub(super) const fn login_succeeded(account: Account) -> &'static str {
    match account {
        Account::Staff(_) => "security.login_succeeded",
        Account::Customer(_) => "security.customer_login_succeeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::customer::CustomerId, domain::staff::UserId};

    #[test]
    fn sealing_contexts_keep_staff_secrets_readable_and_apart_from_customers() {
        let (tenant, user) = (TenantId::new(), UserId::new());
        // The form every staff secret sealed before customer MFA existed was sealed under.
        assert_eq!(
            AuthService::totp_context(tenant, Account::Staff(user)),
            format!("totp:{tenant}:{user}")
        );
        let twin = CustomerId::from_uuid(user.as_uuid());
        assert_ne!(
            AuthService::totp_context(tenant, Account::Customer(twin)),
            AuthService::totp_context(tenant, Account::Staff(user)),
            "equal storage ids never share a context"
        );
    }
}
