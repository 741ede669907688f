//! The MFA half of staff authentication: TOTP enrolment, confirmation with backup codes,
//! disabling, and the second step of a login.

use super::{
    AuthError, AuthService, MFA_ALREADY_ENABLED, OffsetDateTime, Secret, StaffPrincipal,
    StoreError, StoredMfa, TOKEN_ALREADY_USED, TenantId, TokenPair, TokenPurpose, TotpEnrolment,
    TotpSecret, UserId, UserStatus, blocking, event, instrument, totp,
};

impl AuthService {
    fn totp_context(tenant: TenantId, user: UserId) -> String {
        format!("totp:{tenant}:{user}")
    }

    fn open_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        mfa: &StoredMfa,
    ) -> Result<TotpSecret, AuthError> {
        let bytes = self
            .keys
            .master()
            .open(&Self::totp_context(tenant, user), &mfa.sealed_secret)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let bytes: [u8; 20] = bytes
            .try_into()
            .map_err(|_| AuthError::Internal("TOTP secret is not 20 bytes".into()))?;
        Ok(TotpSecret::from_bytes(bytes))
    }

    /// Checks a TOTP code (spending its step) or a backup code (spending it). Exactly one of
    /// the two is given.
    async fn check_second_factor(
        &self,
        tenant: TenantId,
        user: UserId,
        mfa: &StoredMfa,
        code: Option<&str>,
        backup_code: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, AuthError> {
        match (code, backup_code) {
            (Some(code), None) => {
                let secret = self.open_totp(tenant, user, mfa)?;
                match totp::verify(
                    &secret,
                    code.trim(),
                    now.unix_timestamp(),
                    mfa.last_used_step,
                ) {
                    Some(step) => Ok(self.mfa.use_totp_step(tenant, user, step).await?),
                    None => Ok(false),
                }
            }
            (None, Some(backup)) => Ok(self
                .mfa
                .use_backup_code(tenant, user, &totp::hash_backup_code(backup), now)
                .await?),
            _ => Ok(false),
        }
    }

    /// The second step of a login: the MFA token and a TOTP or backup code.
    #[instrument(skip_all)]
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        code: Option<&str>,
        backup_code: Option<&str>,
    ) -> Result<TokenPair, AuthError> {
        let now = self.clock.now();
        let hash = Secret::hash_presented(TokenPurpose::Mfa.prefix(), mfa_token)
            .ok_or(AuthError::InvalidToken)?;
        let token = match self
            .staff
            .find_one_time_token(&hash, TokenPurpose::Mfa, now)
            .await
        {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        };
        let user = self.staff.get_user(token.tenant_id, token.user_id).await?;
        let mfa = self
            .mfa
            .get_mfa(user.tenant_id, user.id)
            .await?
            .filter(|m| m.confirmed_at.is_some());
        let ok = match &mfa {
            Some(m) if user.status == UserStatus::Active => {
                self.check_second_factor(user.tenant_id, user.id, m, code, backup_code, now)
                    .await?
            }
            _ => false,
        };
        if !ok {
            let failures = self
                .mfa
                .fail_mfa_token(&hash, self.settings.mfa_max_failures, now)
                .await?;
            let e = event(
                user.tenant_id,
                "security.mfa_failed",
                &serde_json::json!({"user_id": user.id, "failures": failures}),
                now,
            )?;
            self.events.append(&[e]).await?;
            tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, failures, "MFA code refused");
            return Err(AuthError::InvalidMfaCode);
        }
        let (session, secret, refresh) = self.new_session(
            user.tenant_id,
            crate::staff::SessionOwner::Staff(user.id),
            now,
        );
        let events = [event(
            user.tenant_id,
            "security.login_succeeded",
            &serde_json::json!({"user_id": user.id, "session_id": session.id, "mfa": if backup_code.is_some() { "backup_code" } else { "totp" }}),
            now,
        )?];
        match self
            .mfa
            .complete_mfa_login(&token, &session, &refresh, &events)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, "login succeeded with MFA");
        self.pair(&user, session.id, &secret, now).await
    }

    /// Starts (or restarts) TOTP enrolment for the caller.
    pub async fn begin_totp(&self, p: &StaffPrincipal) -> Result<TotpEnrolment, AuthError> {
        let user = self.staff.get_user(p.tenant_id, p.user_id).await?;
        let tenant = self.tenants.get(p.tenant_id).await?;
        let secret = TotpSecret::generate();
        let stored = StoredMfa {
            sealed_secret: self.keys.master().seal(
                &Self::totp_context(p.tenant_id, p.user_id),
                secret.as_bytes(),
            ),
            created_at: self.clock.now(),
            confirmed_at: None,
            last_used_step: None,
        };
        match self.mfa.begin_mfa(p.tenant_id, p.user_id, &stored).await {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(MFA_ALREADY_ENABLED) => {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            Err(e) => return Err(e.into()),
        }
        let issuer = format!("{} ({})", self.settings.issuer, tenant.name);
        Ok(TotpEnrolment {
            otpauth_uri: secret.otpauth_uri(&issuer, user.email.as_str()),
            secret: secret.to_base32(),
        })
    }

    /// Confirms the enrolment with a current code; returns the 10 backup codes (shown once).
    pub async fn confirm_totp(
        &self,
        p: &StaffPrincipal,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let now = self.clock.now();
        let mfa = match self.mfa.get_mfa(p.tenant_id, p.user_id).await? {
            Some(m) if m.confirmed_at.is_none() => m,
            Some(_) => return Err(AuthError::MfaAlreadyEnabled),
            None => return Err(AuthError::MfaNotPending),
        };
        let secret = self.open_totp(p.tenant_id, p.user_id, &mfa)?;
        let step = totp::verify(&secret, code.trim(), now.unix_timestamp(), None)
            .ok_or(AuthError::InvalidMfaCode)?;
        let codes = totp::generate_backup_codes();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| totp::hash_backup_code(c)).collect();
        let e = event(
            p.tenant_id,
            "security.mfa_enabled",
            &serde_json::json!({"user_id": p.user_id}),
            now,
        )?;
        match self
            .mfa
            .confirm_mfa(p.tenant_id, p.user_id, step, &hashes, now, &[e])
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(MFA_ALREADY_ENABLED) => {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %p.tenant_id, user_id = %p.user_id, "MFA enabled");
        Ok(codes)
    }

    /// Turns MFA off; needs the password and a current TOTP or backup code.
    pub async fn disable_totp(
        &self,
        p: &StaffPrincipal,
        password: String,
        code: Option<&str>,
        backup_code: Option<&str>,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let user = self.staff.get_user(p.tenant_id, p.user_id).await?;
        let mfa = self
            .mfa
            .get_mfa(p.tenant_id, p.user_id)
            .await?
            .filter(|m| m.confirmed_at.is_some())
            .ok_or(AuthError::MfaNotEnabled)?;
        if self
            .mfa
            .staff_mfa_status(p.tenant_id, p.user_id)
            .await?
            .required
        {
            return Err(AuthError::MfaRequiredByShop);
        }
        let hasher = self.hasher.clone();
        let stored = user.password_hash.clone();
        let password_ok =
            blocking(move || stored.is_some_and(|h| hasher.verify(&password, &h))).await?;
        if !password_ok
            || !self
                .check_second_factor(p.tenant_id, p.user_id, &mfa, code, backup_code, now)
                .await?
        {
            return Err(AuthError::ReauthenticationFailed);
        }
        let e = event(
            p.tenant_id,
            "security.mfa_disabled",
            &serde_json::json!({"user_id": p.user_id}),
            now,
        )?;
        self.mfa.disable_mfa(p.tenant_id, p.user_id, &[e]).await?;
        tracing::info!(security = true, tenant_id = %p.tenant_id, user_id = %p.user_id, "MFA disabled");
        Ok(())
    }

    /// Issues 10 new backup codes (the old ones stop working); needs a current TOTP code.
    pub async fn regenerate_backup_codes(
        &self,
        p: &StaffPrincipal,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let now = self.clock.now();
        let mfa = self
            .mfa
            .get_mfa(p.tenant_id, p.user_id)
            .await?
            .filter(|m| m.confirmed_at.is_some())
            .ok_or(AuthError::MfaNotEnabled)?;
        if !self
            .check_second_factor(p.tenant_id, p.user_id, &mfa, Some(code), None, now)
            .await?
        {
            return Err(AuthError::InvalidMfaCode);
        }
        let codes = totp::generate_backup_codes();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|c| totp::hash_backup_code(c)).collect();
        let e = event(
            p.tenant_id,
            "security.backup_codes_regenerated",
            &serde_json::json!({"user_id": p.user_id}),
            now,
        )?;
        self.mfa
            .replace_backup_codes(p.tenant_id, p.user_id, &hashes, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %p.tenant_id, user_id = %p.user_id, "backup codes regenerated");
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
