//! TOTP enrolments, backup codes and the MFA step of login on SQLite (the statements:
//! `keel_store_common::store::mfa`).

use async_trait::async_trait;
use keel_identity::{
    domain::secret::SecretHash,
    domain::staff::{Account, OneTimeToken, RefreshToken, Session, StoredMfa, UserId},
    ports::{MfaStatus, MfaStore},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_store_common::store::mfa as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl MfaStore for SqliteStore {
    async fn get_mfa(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<Option<StoredMfa>, StoreError> {
        self.read(|e| now(shared::get_mfa(e, tenant, account)))
    }

    async fn begin_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::begin_mfa(e, tenant, account, mfa)))
            .await
    }

    async fn confirm_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
        backup_code_hashes: &[[u8; 32]],
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::confirm_mfa(
                e,
                tenant,
                account,
                step,
                backup_code_hashes,
                at_time,
                events,
            ))
        })
        .await
    }

    async fn use_totp_step(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
    ) -> Result<bool, StoreError> {
        self.tx(|e| now(shared::use_totp_step(e, tenant, account, step)))
            .await
    }

    async fn use_backup_code(
        &self,
        tenant: TenantId,
        account: Account,
        hash: &[u8; 32],
        at_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.tx(|e| now(shared::use_backup_code(e, tenant, account, hash, at_time)))
            .await
    }

    async fn replace_backup_codes(
        &self,
        tenant: TenantId,
        account: Account,
        backup_code_hashes: &[[u8; 32]],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::replace_backup_codes(
                e,
                tenant,
                account,
                backup_code_hashes,
                events,
            ))
        })
        .await
    }

    async fn staff_mfa_status(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<MfaStatus, StoreError> {
        self.read(|e| now(shared::staff_mfa_status(e, tenant, user)))
    }

    async fn set_require_staff_mfa(
        &self,
        tenant: TenantId,
        required: bool,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::set_require_staff_mfa(e, tenant, required, events)))
            .await
    }

    async fn disable_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::disable_mfa(e, tenant, account, events)))
            .await
    }

    async fn create_mfa_token(&self, token: &OneTimeToken) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create_mfa_token(e, token))).await
    }

    async fn fail_mfa_token(
        &self,
        hash: &SecretHash,
        max: u32,
        at_time: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        self.tx(|e| now(shared::fail_mfa_token(e, hash, max, at_time)))
            .await
    }

    async fn complete_mfa_login(
        &self,
        token: &OneTimeToken,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::complete_mfa_login(
                e, token, session, refresh, events,
            ))
        })
        .await
    }
}
