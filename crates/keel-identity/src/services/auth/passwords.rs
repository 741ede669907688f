//! Password change and reset, for staff users and customers alike.

use std::net::IpAddr;

use keel_kernel::TenantId;

use super::{
    Account, AuthError, AuthService, NewPassword, OneTimeToken, Secret, Side, StoreError,
    TOKEN_ALREADY_USED, TokenPurpose, UserStatus, event, instrument,
    mfa::{AccountHolder, subject},
};
use crate::{
    domain::staff::Email,
    domain::throttle::{Limit, ThrottleKey},
    ports::Attempt,
};

impl AuthService {
    /// Checks a new password against the policy for this account and hashes it.
    async fn hash_new_password(
        &self,
        tenant: TenantId,
        email: &Email,
        new: &str,
    ) -> Result<crate::domain::password::StoredHash, AuthError> {
        let shop = self.tenants.get(tenant).await?;
        let new = NewPassword::parse(new, email.as_str(), shop.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        self.hasher
            .run(move |h| h.hash(&new))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Changes the caller's password: needs the current one; every other session ends.
    #[instrument(skip_all, fields(tenant_id = %p.tenant_id()))]
    pub async fn change_password(
        &self,
        p: &impl AccountHolder,
        current: String,
        new: String,
    ) -> Result<(), AuthError> {
        let (tenant, account) = (p.tenant_id(), p.account());
        let now = self.clock.now();
        let (email, _) = self.account_credentials(tenant, account).await?;
        // The policy first: a weak new password costs no hashing and no attempt.
        let shop = self.tenants.get(tenant).await?;
        let new = NewPassword::parse(&new, email.as_str(), shop.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        if !self.reauthenticate(tenant, account, current, now).await? {
            return Err(AuthError::ReauthenticationFailed);
        }
        let hash = self
            .hasher
            .run(move |h| h.hash(&new))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let e = event(tenant, "security.password_changed", &subject(account), now)?;
        self.staff
            .set_password(tenant, account, &hash, Some(p.session_id()), now, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %tenant, %account, "password changed");
        Ok(())
    }

    /// Stores a reset token for the account. The event `kind` records the request without
    /// the token; the token goes to the shop's account-notification endpoint (its own mail
    /// system) in a sealed notice, never into the event log (Keel sends no email).
    async fn issue_reset_token(
        &self,
        tenant: TenantId,
        account: Account,
        email: &Email,
        kind: &'static str,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let secret = Secret::generate(TokenPurpose::Reset.prefix());
        let token = OneTimeToken {
            hash: secret.hash,
            tenant_id: tenant,
            owner: account,
            purpose: TokenPurpose::Reset,
            expires_at: now + self.settings.reset_token_ttl,
        };
        let ttl = self.settings.reset_token_ttl.whole_seconds();
        let mut payload = subject(account);
        payload["expires_in"] = ttl.into();
        let e = event(tenant, kind, &payload, now)?;
        let mut data = subject(account);
        data["email"] = email.as_str().into();
        data["reset_token"] = secret.expose().into();
        data["expires_in"] = ttl.into();
        let notice = crate::domain::notice::seal(self.keys.master(), &e, &data)
            .map_err(AuthError::Internal)?;
        self.staff.issue_token(&token, &[e], Some(&notice)).await?;
        tracing::info!(security = true, tenant_id = %tenant, %account, "password reset requested");
        Ok(())
    }

    /// Counts one reset request against the exact limits per account and per address (both
    /// within `scope`, a shop and side). False when a limit is reached: the caller then does
    /// nothing and answers exactly as it would have, so the limit reveals nothing either.
    async fn admit_reset(
        &self,
        scope: &str,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        let mut limits = vec![Limit {
            key: ThrottleKey::reset_account(scope, email),
            max: self.settings.reset_account_max,
            window: self.settings.reset_window,
        }];
        if let Some(ip) = client {
            limits.push(Limit {
                key: ThrottleKey::address(&format!("reset:{scope}"), ip),
                max: self.settings.reset_ip_max,
                window: self.settings.reset_window,
            });
        }
        Ok(
            match self.throttle.reserve(&limits, self.clock.now()).await? {
                Attempt::Reserved { .. } => true,
                Attempt::Locked { .. } => {
                    tracing::info!(
                        security = true,
                        "password reset request dropped: limit reached"
                    );
                    false
                }
            },
        )
    }

    /// Starts a staff password reset: for an active account it records
    /// `staff_user.password_reset_requested` carrying a single-use token. The answer is the same
    /// whether or not the account exists, and whether or not a limit dropped the request.
    #[instrument(skip_all)]
    pub async fn request_password_reset(
        &self,
        tenant_slug: &str,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let scope = format!("staff:{}", tenant_slug.trim().to_lowercase());
        if !self.admit_reset(&scope, email, client).await? {
            return Ok(());
        }
        let Some(user) = self.find_login_user(tenant_slug, email).await?.flatten() else {
            return Ok(());
        };
        if user.status != UserStatus::Active {
            return Ok(());
        }
        self.issue_reset_token(
            user.tenant_id,
            Account::Staff(user.id),
            &user.email,
            "staff_user.password_reset_requested",
        )
        .await
    }

    /// Starts a customer password reset at the storefront of `tenant`: records
    /// `customer.password_reset_requested` carrying a single-use token. The answer is the same
    /// whether or not the account exists.
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn request_customer_password_reset(
        &self,
        tenant: TenantId,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        if !self
            .admit_reset(&format!("store:{tenant}"), email, client)
            .await?
        {
            return Ok(());
        }
        let Ok(email) = Email::parse(email) else {
            return Ok(());
        };
        let customer = match self.customers.find_customer_by_email(tenant, &email).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.issue_reset_token(
            tenant,
            Account::Customer(customer.id),
            &customer.email,
            "customer.password_reset_requested",
        )
        .await
    }

    /// Completes a reset: a new password, and every session of the account ends. A token
    /// answers only on its own side (a staff token at `/v1/auth/…`, a customer's at its shop's
    /// storefront); elsewhere it is invalid and stays unspent.
    #[instrument(skip_all)]
    pub async fn confirm_password_reset(
        &self,
        reset_token: &str,
        new: String,
        side: Side,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let hash = Secret::hash_presented(TokenPurpose::Reset.prefix(), reset_token)
            .ok_or(AuthError::InvalidToken)?;
        let token = match self
            .staff
            .find_one_time_token(&hash, TokenPurpose::Reset, now)
            .await
        {
            Ok(t) if side.admits_account(t.tenant_id, t.owner) => t,
            Ok(_) | Err(StoreError::NotFound) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        };
        let (tenant, account) = (token.tenant_id, token.owner);
        let (email, _) = self.account_credentials(tenant, account).await?;
        let stored = self.hash_new_password(tenant, &email, &new).await?;
        let e = event(tenant, "security.password_reset", &subject(account), now)?;
        match self.staff.reset_password(&token, &stored, now, &[e]).await {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => return Err(AuthError::InvalidToken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(security = true, tenant_id = %tenant, %account, "password reset");
        Ok(())
    }
}
