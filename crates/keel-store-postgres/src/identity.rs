//! Staff users, one-time tokens, sessions, refresh tokens and signing keys on PostgreSQL (the
//! statements: `keel_store_common::store::identity`).

use async_trait::async_trait;
use keel_identity::{
    Tenant,
    domain::access::{Role, RoleChangeError},
    domain::notice::AccountNotice,
    domain::password::StoredHash,
    domain::secret::SecretHash,
    domain::staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser,
        StoredSigningKey, TokenPurpose, UserId,
    },
    ports::{SessionStore, SigningKeyStore, StaffStore},
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use keel_store_common::store::identity as shared;
use time::OffsetDateTime;

use crate::{PgStore, error::map_err};

#[async_trait]
impl StaffStore for PgStore {
    async fn create_tenant_with_owner(
        &self,
        tenant: &Tenant,
        owner: &StaffUser,
        setup: &OneTimeToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_tenant_with_owner(
            &mut tx, tenant, owner, setup, events
        ))
    }

    async fn invite_user(
        &self,
        user: &StaffUser,
        invite: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        // The notice is queued in the same transaction as the token it carries.
        in_tx!(self, |tx| async {
            shared::invite_user(&mut tx, user, invite, events).await?;
            if let Some(n) = notice {
                crate::webhooks::queue_notice(&mut tx, invite.tenant_id, n).await?;
            }
            Ok(())
        })
    }

    async fn set_password(
        &self,
        tenant: TenantId,
        account: Account,
        password: &StoredHash,
        keep: Option<SessionId>,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::set_password(
            &mut tx, tenant, account, password, keep, at_time, events
        ))
    }

    async fn issue_token(
        &self,
        token: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        // The notice is queued in the same transaction as the token it carries.
        in_tx!(self, |tx| async {
            shared::issue_token(&mut tx, token, events).await?;
            if let Some(n) = notice {
                crate::webhooks::queue_notice(&mut tx, token.tenant_id, n).await?;
            }
            Ok(())
        })
    }

    async fn reset_password(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::reset_password(
            &mut tx, token, password, at_time, events
        ))
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, StoreError> {
        shared::list_users(&mut self.pg(), tenant, page).await
    }

    async fn change_role(
        &self,
        tenant: TenantId,
        user: UserId,
        actor: Role,
        new: Option<Role>,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<Result<StaffUser, RoleChangeError>, StoreError> {
        let mut tx = self.begin().await?;
        let out = shared::change_role(&mut tx, tenant, user, actor, new, at_time, events).await;
        match out {
            Ok(Ok(_)) => tx.commit().await.map_err(map_err)?,
            // A refusal (or a missing user) wrote nothing: roll back now, releasing the row
            // locks at once rather than when the dropped transaction is cleaned up.
            Ok(Err(_)) | Err(_) => tx.rollback().await.map_err(map_err)?,
        }
        out
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<StaffUser, StoreError> {
        shared::get_user(&mut self.pg(), tenant, id).await
    }

    async fn find_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<StaffUser, StoreError> {
        shared::find_user_by_email(&mut self.pg(), tenant, email).await
    }

    async fn find_one_time_token(
        &self,
        hash: &SecretHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<OneTimeToken, StoreError> {
        shared::find_one_time_token(&mut self.pg(), hash, purpose, now).await
    }

    async fn activate_with_token(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::activate_with_token(
            &mut tx, token, password, session, refresh, events
        ))
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn start_session(
        &self,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::start_session(
            &mut tx, session, refresh, events
        ))
    }

    async fn find_refresh_token(&self, hash: &SecretHash) -> Result<RefreshToken, StoreError> {
        shared::find_refresh_token(&mut self.pg(), hash).await
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &SecretHash,
        new: &RefreshToken,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::rotate_refresh_token(
            &mut tx, tenant, old, new
        ))
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::revoke_session(
            &mut tx, tenant, id, at_time, events
        ))
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session, StoreError> {
        shared::get_session(&mut self.pg(), tenant, id).await
    }

    async fn staff_access(
        &self,
        tenant: TenantId,
        session: SessionId,
        user: UserId,
    ) -> Result<keel_identity::ports::StaffAccess, StoreError> {
        shared::staff_access(&mut self.pg(), tenant, session, user).await
    }

    async fn list_active_sessions(
        &self,
        tenant: TenantId,
        owner: Account,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        shared::list_active_sessions(&mut self.pg(), tenant, owner, now).await
    }
}

#[async_trait]
impl SigningKeyStore for PgStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        shared::list_signing_keys(&mut self.pg()).await
    }

    async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::rotate_signing_key(&mut tx, key))
    }
}
