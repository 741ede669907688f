//! Password change and reset.

use super::{
    AuthError, AuthService, NewPassword, OneTimeToken, Secret, StaffPrincipal, StoreError,
    TOKEN_ALREADY_USED, TokenPurpose, UserStatus, blocking, event, instrument,
};

impl AuthService {
    /// Changes the caller's password: needs the current one; every other session ends.
    #[instrument(skip_all, fields(tenant_id = %p.tenant_id))]
    pub async fn change_password(
        &self,
        p: &StaffPrincipal,
        current: String,
        new: String,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let user = self.staff.get_user(p.tenant_id, p.user_id).await?;
        let tenant = self.tenants.get(p.tenant_id).await?;
        let hasher = self.hasher.clone();
        let stored = user.password_hash.clone();
        if !blocking(move || stored.is_some_and(|h| hasher.verify(&current, &h))).await? {
            return Err(AuthError::ReauthenticationFailed);
        }
        let new = NewPassword::parse(&new, user.email.as_str(), tenant.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        let hasher = self.hasher.clone();
        let hash = blocking(move || hasher.hash(&new))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let e = event(
            p.tenant_id,
            "security.password_changed",
            &serde_json::json!({"user_id": p.user_id}),
            now,
        )?;
        self.staff
            .set_password(p.tenant_id, p.user_id, &hash, Some(p.session_id), now, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %p.tenant_id, user_id = %p.user_id, "password changed");
        Ok(())
    }

    /// Starts a password reset. Keel sends no email: for an active account it records
    /// `staff_user.password_reset_requested` carrying a single-use token, for the tenant's own
    /// systems to deliver. The answer is the same whether or not the account exists.
    #[instrument(skip_all)]
    pub async fn request_password_reset(
        &self,
        tenant_slug: &str,
        email: &str,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let Some(user) = self.find_login_user(tenant_slug, email).await? else {
            return Ok(());
        };
        if user.status != UserStatus::Active {
            return Ok(());
        }
        let secret = Secret::generate(TokenPurpose::Reset.prefix());
        let token = OneTimeToken {
            hash: secret.hash,
            tenant_id: user.tenant_id,
            owner: crate::staff::Account::Staff(user.id),
            purpose: TokenPurpose::Reset,
            expires_at: now + self.settings.reset_token_ttl,
        };
        let e = event(
            user.tenant_id,
            "staff_user.password_reset_requested",
            &serde_json::json!({
                "user_id": user.id,
                "email": user.email,
                "reset_token": secret.expose(),
                "expires_in": self.settings.reset_token_ttl.whole_seconds(),
            }),
            now,
        )?;
        self.staff.issue_token(&token, &[e]).await?;
        tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, "password reset requested");
        Ok(())
    }

    /// Completes a reset: a new password, and every session of the user ends.
    #[instrument(skip_all)]
    pub async fn confirm_password_reset(
        &self,
        reset_token: &str,
        new: String,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let hash = Secret::hash_presented(TokenPurpose::Reset.prefix(), reset_token)
            .ok_or(AuthError::InvalidToken)?;
        let token = match self
            .staff
            .find_one_time_token(&hash, TokenPurpose::Reset, now)
            .await
        {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        };
        let user_id = token.staff_user().ok_or(AuthError::InvalidToken)?;
        let user = self.staff.get_user(token.tenant_id, user_id).await?;
        let tenant = self.tenants.get(token.tenant_id).await?;
        let new = NewPassword::parse(&new, user.email.as_str(), tenant.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        let hasher = self.hasher.clone();
        let stored = blocking(move || hasher.hash(&new))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let e = event(
            user.tenant_id,
            "security.password_reset",
            &serde_json::json!({"user_id": user.id}),
            now,
        )?;
        match self.staff.reset_password(&token, &stored, now, &[e]).await {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %user.tenant_id, user_id = %user.id, "password reset");
        Ok(())
    }
}
