//! TOTP enrolments, backup codes and the MFA step of login on PostgreSQL (the statements:
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

use crate::PgStore;

#[async_trait]
impl MfaStore for PgStore {
    async fn get_mfa(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<Option<StoredMfa>, StoreError> {
        shared::get_mfa(&mut self.pg(), tenant, account).await
    }

    async fn begin_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::begin_mfa(&mut tx, tenant, account, mfa))
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
        in_tx!(self, |tx| shared::confirm_mfa(
            &mut tx,
            tenant,
            account,
            step,
            backup_code_hashes,
            at_time,
            events,
        ))
    }

    async fn use_totp_step(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, |tx| shared::use_totp_step(
            &mut tx, tenant, account, step
        ))
    }

    async fn use_backup_code(
        &self,
        tenant: TenantId,
        account: Account,
        hash: &[u8; 32],
        at_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        in_tx!(self, |tx| shared::use_backup_code(
            &mut tx, tenant, account, hash, at_time
        ))
    }

    async fn replace_backup_codes(
        &self,
        tenant: TenantId,
        account: Account,
        backup_code_hashes: &[[u8; 32]],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::replace_backup_codes(
            &mut tx,
            tenant,
            account,
            backup_code_hashes,
            events
        ))
    }

    async fn staff_mfa_status(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<MfaStatus, StoreError> {
        shared::staff_mfa_status(&mut self.pg(), tenant, user).await
    }

    async fn set_require_staff_mfa(
        &self,
        tenant: TenantId,
        required: bool,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::set_require_staff_mfa(
            &mut tx, tenant, required, events
        ))
    }

    async fn disable_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::disable_mfa(
            &mut tx, tenant, account, events
        ))
    }

    async fn create_mfa_token(&self, token: &OneTimeToken) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_mfa_token(&mut tx, token))
    }

    async fn fail_mfa_token(
        &self,
        hash: &SecretHash,
        max: u32,
        at_time: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        in_tx!(self, |tx| shared::fail_mfa_token(
            &mut tx, hash, max, at_time
        ))
    }

    async fn complete_mfa_login(
        &self,
        token: &OneTimeToken,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::complete_mfa_login(
            &mut tx, token, session, refresh, events
        ))
    }
}
