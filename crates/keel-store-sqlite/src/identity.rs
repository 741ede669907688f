//! Staff users, one-time tokens, sessions, refresh tokens and signing keys on SQLite (the
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

use crate::SqliteStore;
use crate::db::{Lite, now};

#[async_trait]
impl StaffStore for SqliteStore {
    async fn create_tenant_with_owner(
        &self,
        tenant: &Tenant,
        owner: &StaffUser,
        setup: &OneTimeToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::create_tenant_with_owner(
                e, tenant, owner, setup, events,
            ))
        })
        .await
    }

    async fn invite_user(
        &self,
        user: &StaffUser,
        invite: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::invite_user(e, user, invite, events))?;
            match notice {
                Some(n) => crate::webhooks::queue_notice(e.0, invite.tenant_id, n),
                None => Ok(()),
            }
        })
        .await
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
        self.tx(|e| {
            now(shared::set_password(
                e, tenant, account, password, keep, at_time, events,
            ))
        })
        .await
    }

    async fn issue_token(
        &self,
        token: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::issue_token(e, token, events))?;
            match notice {
                Some(n) => crate::webhooks::queue_notice(e.0, token.tenant_id, n),
                None => Ok(()),
            }
        })
        .await
    }

    async fn reset_password(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::reset_password(e, token, password, at_time, events)))
            .await
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, StoreError> {
        self.read(|e| now(shared::list_users(e, tenant, page)))
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
        // The single writer serialises this read-decide-write against every other write. A
        // refusal wrote nothing: it is rolled back now rather than waiting for a commit.
        let tx = self.write().await?;
        let out = now(shared::change_role(
            &mut Lite(&tx),
            tenant,
            user,
            actor,
            new,
            at_time,
            events,
        ));
        match out {
            Ok(Ok(_)) => tx.commit().await?,
            Ok(Err(_)) | Err(_) => tx.rollback()?,
        }
        out
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<StaffUser, StoreError> {
        self.read(|e| now(shared::get_user(e, tenant, id)))
    }

    async fn find_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<StaffUser, StoreError> {
        self.read(|e| now(shared::find_user_by_email(e, tenant, email)))
    }

    async fn find_one_time_token(
        &self,
        hash: &SecretHash,
        purpose: TokenPurpose,
        at_time: OffsetDateTime,
    ) -> Result<OneTimeToken, StoreError> {
        self.read(|e| now(shared::find_one_time_token(e, hash, purpose, at_time)))
    }

    async fn activate_with_token(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::activate_with_token(
                e, token, password, session, refresh, events,
            ))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn start_session(
        &self,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::start_session(e, session, refresh, events)))
            .await
    }

    async fn find_refresh_token(&self, hash: &SecretHash) -> Result<RefreshToken, StoreError> {
        self.read(|e| now(shared::find_refresh_token(e, hash)))
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &SecretHash,
        new: &RefreshToken,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::rotate_refresh_token(e, tenant, old, new)))
            .await
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::revoke_session(e, tenant, id, at_time, events)))
            .await
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session, StoreError> {
        self.read(|e| now(shared::get_session(e, tenant, id)))
    }

    async fn staff_access(
        &self,
        tenant: TenantId,
        session: SessionId,
        user: UserId,
    ) -> Result<keel_identity::ports::StaffAccess, StoreError> {
        self.read(|e| now(shared::staff_access(e, tenant, session, user)))
    }

    async fn list_active_sessions(
        &self,
        tenant: TenantId,
        owner: Account,
        at_time: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.read(|e| now(shared::list_active_sessions(e, tenant, owner, at_time)))
    }
}

#[async_trait]
impl SigningKeyStore for SqliteStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.read(|e| now(shared::list_signing_keys(e)))
    }

    async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.tx(|e| now(shared::rotate_signing_key(e, key))).await
    }
}
