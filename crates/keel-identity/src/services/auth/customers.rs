//! Customer (shopper) accounts of a tenant's storefront: sign-up, password login (throttled
//! like staff logins, with its own account keys), and authentication of customer tokens.
//! Customer tokens carry `aud = keel-store` and `kind = customer`, so they are refused on every
//! admin route; they are also bound to their tenant, checked against the storefront's
//! publishable key on every request.

use std::net::IpAddr;

use keel_kernel::{StoreError, TenantId};
use time::OffsetDateTime;
use tracing::instrument;

use super::{
    Account, AuthError, AuthService, Claims, LoginOutcome, NewPassword, PrincipalKind, SessionId,
    StoredHash, TokenPair, base64_id, event, mfa::login_succeeded,
};
use crate::{
    domain::customer::{Customer, CustomerId},
    domain::staff::Email,
    domain::throttle::{Limit, ThrottleKey},
    ports::{Attempt, CUSTOMER_EMAIL_CONSTRAINT},
};

/// The `aud` of customer access tokens.
pub const CUSTOMER_AUDIENCE: &str = "keel-store";

/// An authenticated customer, as storefront handlers see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPrincipal {
    pub tenant_id: TenantId,
    pub customer_id: CustomerId,
    pub session_id: SessionId,
}

/// Throttle key of a customer account: its tenant and email, hashed (unknown emails lock too).
fn customer_account(tenant: TenantId, email: &str) -> ThrottleKey {
    ThrottleKey::account(&format!("customer:{tenant}"), email)
}

impl AuthService {
    pub(super) fn customer_claims(
        &self,
        c: &Customer,
        session: SessionId,
        now: OffsetDateTime,
    ) -> Claims {
        Claims {
            iss: self.settings.issuer.clone(),
            aud: CUSTOMER_AUDIENCE.to_owned(),
            sub: c.id.to_string(),
            tid: c.tenant_id,
            kind: PrincipalKind::Customer,
            scope: String::new(),
            sid: session.to_string(),
            jti: base64_id(),
            iat: now.unix_timestamp(),
            exp: (now + self.settings.access_ttl).unix_timestamp(),
        }
    }

    fn customer_session(
        &self,
        c: &Customer,
        now: OffsetDateTime,
    ) -> (
        crate::domain::staff::Session,
        super::Secret,
        crate::domain::staff::RefreshToken,
    ) {
        self.new_session(c.tenant_id, Account::Customer(c.id), now)
    }

    /// Creates a customer account in the storefront's tenant and logs it in.
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn sign_up_customer(
        &self,
        tenant: TenantId,
        email: &str,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<(CustomerId, TokenPair), AuthError> {
        let now = self.clock.now();
        let email = Email::parse(email).map_err(|_| AuthError::InvalidEmail)?;
        let shop = self.tenants.get(tenant).await?;
        // Cheap checks before the expensive hash: a taken email or a weak password costs no
        // hashing (the insert below still settles a race on the email).
        let new = NewPassword::parse(&password, email.as_str(), shop.name.as_str())
            .map_err(AuthError::WeakPassword)?;
        match self.customers.find_customer_by_email(tenant, &email).await {
            Ok(_) => return Err(AuthError::EmailTaken),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let hash: StoredHash = self
            .hasher
            .run_for(client, move |h| h.hash(&new))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let customer = Customer {
            id: CustomerId::new(),
            tenant_id: tenant,
            email,
            password_hash: hash,
            created_at: now,
        };
        let (session, secret, refresh) = self.customer_session(&customer, now);
        let e = event(
            tenant,
            "customer.signed_up",
            &serde_json::json!({"customer_id": customer.id}),
            now,
        )?;
        match self
            .customers
            .sign_up_customer(&customer, &session, &refresh, &[e])
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(CUSTOMER_EMAIL_CONSTRAINT) => {
                return Err(AuthError::EmailTaken);
            }
            Err(e) => return Err(e.into()),
        }
        let pair = self
            .sign_pair(&self.customer_claims(&customer, session.id, now), &secret)
            .await?;
        Ok((customer.id, pair))
    }

    /// Customer password login at the storefront of `tenant`, throttled per account and address
    /// with the same exact limits as staff logins.
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn login_customer(
        &self,
        tenant: TenantId,
        email: &str,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<LoginOutcome, AuthError> {
        let now = self.clock.now();
        let account = customer_account(tenant, email);
        let mut limits = vec![Limit {
            key: account,
            max: self.settings.login_account_max,
            window: self.settings.login_window,
        }];
        if let Some(ip) = client {
            limits.push(Limit {
                key: ThrottleKey::address(&format!("login:store:{tenant}"), ip),
                max: self.settings.login_ip_max,
                window: self.settings.login_window,
            });
        }
        let attempt = match self.throttle.reserve(&limits, now).await? {
            Attempt::Reserved { id, .. } => id,
            Attempt::Locked { until } => {
                return Err(AuthError::TooManyAttempts {
                    retry_after_seconds: super::ceil_seconds(until - now),
                });
            }
        };
        let customer = match Email::parse(email) {
            Ok(e) => match self.customers.find_customer_by_email(tenant, &e).await {
                Ok(c) => Some(c),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            Err(_) => None,
        };
        let stored = customer.as_ref().map(|c| c.password_hash.clone());
        let ok = self.verify_or_dummy(stored, password, client).await?;
        let customer = match customer {
            Some(c) if ok => c,
            other => {
                if let Some(c) = other {
                    let e = event(
                        tenant,
                        "security.customer_login_failed",
                        &serde_json::json!({"customer_id": c.id}),
                        now,
                    )?;
                    self.events.append(&[e]).await?;
                }
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.throttle.succeed(attempt, &account).await?;
        if let Some(challenge) = self
            .mfa_challenge(tenant, Account::Customer(customer.id), now)
            .await?
        {
            return Ok(challenge);
        }
        let (session, secret, refresh) = self.customer_session(&customer, now);
        let e = event(
            tenant,
            login_succeeded(Account::Customer(customer.id)),
            &serde_json::json!({"customer_id": customer.id, "session_id": session.id}),
            now,
        )?;
        self.sessions
            .start_session(&session, &refresh, &[e])
            .await?;
        tracing::info!(security = true, tenant_id = %tenant, customer_id = %customer.id, "customer login succeeded");
        Ok(LoginOutcome::Tokens(
            self.sign_pair(&self.customer_claims(&customer, session.id, now), &secret)
                .await?,
        ))
    }

    /// Checks a customer access token presented at the storefront of `tenant`.
    pub async fn authenticate_customer(
        &self,
        bearer: &str,
        tenant: TenantId,
    ) -> Result<CustomerPrincipal, AuthError> {
        let now = self.clock.now();
        let claims = self
            .keys
            .verify(
                bearer,
                &self.settings.issuer,
                CUSTOMER_AUDIENCE,
                self.settings.leeway,
            )
            .await?
            .map_err(|_| AuthError::Unauthenticated)?;
        if claims.kind != PrincipalKind::Customer || claims.tid != tenant {
            return Err(AuthError::Unauthenticated);
        }
        let customer_id: CustomerId = claims.sub.parse().map_err(|_| AuthError::Unauthenticated)?;
        let session_id: SessionId = claims.sid.parse().map_err(|_| AuthError::Unauthenticated)?;
        let session = match self.sessions.get_session(tenant, session_id).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Err(AuthError::Unauthenticated),
            Err(e) => return Err(e.into()),
        };
        if !session.is_active(now) || session.owner != Account::Customer(customer_id) {
            return Err(AuthError::Unauthenticated);
        }
        Ok(CustomerPrincipal {
            tenant_id: tenant,
            customer_id,
            session_id,
        })
    }

    /// The authenticated customer's account.
    pub async fn customer(&self, p: &CustomerPrincipal) -> Result<Customer, AuthError> {
        Ok(self
            .customers
            .get_customer(p.tenant_id, p.customer_id)
            .await?)
    }

    /// The shop's customers among `ids` (staff reads: a list's customers in one statement).
    pub async fn customers_by_ids(
        &self,
        tenant: TenantId,
        ids: &[CustomerId],
    ) -> Result<Vec<Customer>, AuthError> {
        Ok(self.customers.customers_by_ids(tenant, ids).await?)
    }
}
