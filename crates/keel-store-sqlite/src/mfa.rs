//! TOTP enrolments, backup codes and the MFA step of login on SQLite.

use async_trait::async_trait;
use keel_identity::{
    ports::{MFA_ALREADY_ENABLED, MfaStatus, MfaStore, TOKEN_ALREADY_USED},
    secret::SecretHash,
    staff::{Account, OneTimeToken, RefreshToken, Session, StoredMfa, UserId},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use time::OffsetDateTime;

use crate::db::{self, Get};
use crate::{
    SqliteStore, at, at_opt,
    error::map_err,
    identity::{insert_one_time_token, insert_session, spend_one_time_token},
    tenants::insert_events,
    to_micros,
};

/// Replaces a user's backup codes inside the caller's transaction.
fn write_backup_codes(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    account: Account,
    hashes: &[[u8; 32]],
) -> Result<(), StoreError> {
    db::query("DELETE FROM backup_codes WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3")
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .execute(tx)?;
    for hash in hashes {
        db::query(
            "INSERT INTO backup_codes (tenant_id, user_id, code_hash, used_at, owner_kind) VALUES (?1, ?2, ?3, NULL, ?4)",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(&hash[..])
        .bind(account.kind())
        .execute(tx)?;
    }
    Ok(())
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn get_mfa(
        &self,
        tenant: TenantId,
        account: Account,
    ) -> Result<Option<StoredMfa>, StoreError> {
        let row = self.read(|c| {
            db::query(
            "SELECT sealed_secret, created_at, confirmed_at, last_used_step FROM mfa_enrolments \
             WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .fetch_optional(c)
        })?;
        row.map(|r| {
            Ok(StoredMfa {
                sealed_secret: r.col("sealed_secret")?,
                created_at: at(&r, "created_at")?,
                confirmed_at: at_opt(&r, "confirmed_at")?,
                last_used_step: r.col("last_used_step")?,
            })
        })
        .transpose()
    }

    async fn begin_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        mfa: &StoredMfa,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let confirmed: Option<Option<i64>> = db::query(
            "SELECT confirmed_at FROM mfa_enrolments WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .scalar_optional(&tx)?;
        if matches!(confirmed, Some(Some(_))) {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: MFA_ALREADY_ENABLED.into(),
            });
        }
        db::query(
            "DELETE FROM mfa_enrolments WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .execute(&tx)?;
        db::query(
            "INSERT INTO mfa_enrolments (tenant_id, user_id, sealed_secret, created_at, confirmed_at, last_used_step, owner_kind) \
             VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5)",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(&mfa.sealed_secret)
        .bind(to_micros(mfa.created_at)?)
        .bind(account.kind())
        .execute(&tx)?;
        tx.commit().await.map_err(map_err)
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
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE mfa_enrolments SET confirmed_at = ?3, last_used_step = ?4 \
             WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?5 AND confirmed_at IS NULL",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(to_micros(at_time)?)
        .bind(step)
        .bind(account.kind())
        .execute(&tx)?;
        if done.rows_affected() != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: MFA_ALREADY_ENABLED.into(),
            });
        }
        write_backup_codes(&tx, tenant, account, backup_code_hashes)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn use_totp_step(
        &self,
        tenant: TenantId,
        account: Account,
        step: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE mfa_enrolments SET last_used_step = ?3 WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?4 \
             AND confirmed_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < ?3)",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(step)
        .bind(account.kind())
        .execute(&tx)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_backup_code(
        &self,
        tenant: TenantId,
        account: Account,
        hash: &[u8; 32],
        at_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE backup_codes SET used_at = ?4 WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?5 AND code_hash = ?3 AND used_at IS NULL",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(&hash[..])
        .bind(to_micros(at_time)?)
        .bind(account.kind())
        .execute(&tx)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_backup_codes(
        &self,
        tenant: TenantId,
        account: Account,
        backup_code_hashes: &[[u8; 32]],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let confirmed: Option<i64> = db::query(
            "SELECT count(*) FROM mfa_enrolments WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3 AND confirmed_at IS NOT NULL",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .scalar_optional(&tx)?;
        if confirmed.unwrap_or(0) != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        write_backup_codes(&tx, tenant, account, backup_code_hashes)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn staff_mfa_status(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<MfaStatus, StoreError> {
        let row = self.read(|c| db::query(
            "SELECT t.require_staff_mfa AS required, \
             EXISTS (SELECT 1 FROM mfa_enrolments m WHERE m.tenant_id = t.id AND m.owner_kind = 'staff' AND m.user_id = ?2 AND m.confirmed_at IS NOT NULL) AS enrolled \
             FROM tenants t WHERE t.id = ?1",
        )
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_one(c))?;
        Ok(MfaStatus {
            required: row.col("required")?,
            enrolled: row.col("enrolled")?,
        })
    }

    async fn set_require_staff_mfa(
        &self,
        tenant: TenantId,
        required: bool,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let done = db::query("UPDATE tenants SET require_staff_mfa = ?2 WHERE id = ?1")
            .bind(tenant.as_uuid())
            .bind(required)
            .execute(&tx)?;
        if done.rows_affected() != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn disable_mfa(
        &self,
        tenant: TenantId,
        account: Account,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query(
            "DELETE FROM backup_codes WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .execute(&tx)?;
        db::query(
            "DELETE FROM mfa_enrolments WHERE tenant_id = ?1 AND user_id = ?2 AND owner_kind = ?3",
        )
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(account.kind())
        .execute(&tx)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_mfa_token(&self, token: &OneTimeToken) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_one_time_token(&tx, token)?;
        tx.commit().await.map_err(map_err)
    }

    async fn fail_mfa_token(
        &self,
        hash: &SecretHash,
        max: u32,
        at_time: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        let tx = self.write().await?;
        let failures: Option<i64> = db::query(
            "UPDATE one_time_tokens SET failures = failures + 1, \
             used_at = CASE WHEN failures + 1 >= ?2 THEN ?3 ELSE used_at END \
             WHERE hash = ?1 AND used_at IS NULL RETURNING failures",
        )
        .bind(&hash.0[..])
        .bind(i64::from(max))
        .bind(to_micros(at_time)?)
        .scalar_optional(&tx)?;
        tx.commit().await.map_err(map_err)?;
        Ok(failures.map_or(max, |f| u32::try_from(f).unwrap_or(max)))
    }

    async fn complete_mfa_login(
        &self,
        token: &OneTimeToken,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        if !spend_one_time_token(&tx, token, session.created_at)? {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        insert_session(&tx, session, refresh)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }
}
