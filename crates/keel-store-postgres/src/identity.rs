//! Staff users, one-time tokens, sessions, refresh tokens and signing keys on PostgreSQL.

use async_trait::async_trait;
use keel_identity::{
    Tenant,
    access::{Role, RoleChangeError, check_role_change},
    notice::AccountNotice,
    password::StoredHash,
    ports::{SessionStore, SigningKeyStore, StaffStore, TOKEN_ALREADY_USED},
    secret::SecretHash,
    staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser,
        StoredSigningKey, TokenPurpose, UserId,
    },
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{
    PgStore, at, at_opt,
    error::map_err,
    tenants::{insert_events, insert_tenant},
};
use keel_store_common::rows::identity::{
    hash_from, refresh_from_row, session_from_row, user_from_row,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt {what} in storage"))
}

/// Column lists as literal-producing macros, so every query stays a compile-time literal.
macro_rules! user_select {
    () => {
        "SELECT tenant_id, id, email, role, status, password_hash, created_at FROM staff_users"
    };
}
macro_rules! session_select {
    () => {
        "SELECT tenant_id, id, owner_kind, user_id, created_at, last_used_at, expires_at, revoked_at FROM sessions"
    };
}

async fn insert_user(tx: &mut sqlx::PgConnection, u: &StaffUser) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(u.tenant_id.as_uuid())
    .bind(u.id.as_uuid())
    .bind(u.email.as_str())
    .bind(u.role.as_str())
    .bind(u.status.as_str())
    .bind(u.password_hash.as_ref().map(StoredHash::as_str))
    .bind(u.created_at)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn insert_session(
    tx: &mut sqlx::PgConnection,
    s: &Session,
    r: &RefreshToken,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (tenant_id, id, owner_kind, user_id, created_at, last_used_at, expires_at, revoked_at) \
         VALUES ($1, $2, $7, $3, $4, $5, $6, NULL)",
    )
    .bind(s.tenant_id.as_uuid())
    .bind(s.id.as_uuid())
    .bind(s.owner.uuid())
    .bind(s.created_at)
    .bind(s.last_used_at)
    .bind(s.expires_at)
    .bind(s.owner.kind())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    insert_refresh(tx, r).await
}

async fn insert_refresh(tx: &mut sqlx::PgConnection, r: &RefreshToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_at, expires_at, used_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(&r.hash.0[..])
    .bind(r.tenant_id.as_uuid())
    .bind(r.session_id.as_uuid())
    .bind(r.issued_at)
    .bind(r.expires_at)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn insert_one_time_token(
    tx: &mut sqlx::PgConnection,
    t: &OneTimeToken,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO one_time_tokens (hash, tenant_id, user_id, purpose, expires_at, used_at, owner_kind) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
    )
    .bind(&t.hash.0[..])
    .bind(t.tenant_id.as_uuid())
    .bind(t.owner.uuid())
    .bind(t.purpose.as_str())
    .bind(t.expires_at)
    .bind(t.owner.kind())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Ends every session of an account except `keep`, inside the caller's transaction (the first
/// revocation time of an already revoked session is kept).
async fn revoke_user_sessions(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    account: Account,
    keep: Option<SessionId>,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $3) \
         WHERE tenant_id = $1 AND owner_kind = $5 AND user_id = $2 AND ($4::uuid IS NULL OR id <> $4)",
    )
    .bind(tenant.as_uuid())
    .bind(account.uuid())
    .bind(at_time)
    .bind(keep.map(|s| s.as_uuid()))
    .bind(account.kind())
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Marks a one-time token used, only if it still is unused; false when another request spent
/// it first. Callers roll back and answer `Conflict { TOKEN_ALREADY_USED }`.
pub(crate) async fn spend_one_time_token(
    tx: &mut sqlx::PgConnection,
    token: &OneTimeToken,
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let used =
        sqlx::query("UPDATE one_time_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL")
            .bind(&token.hash.0[..])
            .bind(at_time)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    Ok(used.rows_affected() == 1)
}

/// Sets an account's password hash inside the caller's transaction; answers the rows changed
/// (0 when there is no such account).
async fn write_password(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    account: Account,
    password: &StoredHash,
) -> Result<u64, StoreError> {
    // One static statement per kind of account (no SQL is assembled at run time).
    let update = match account {
        Account::Staff(_) => {
            "UPDATE staff_users SET password_hash = $3 WHERE tenant_id = $1 AND id = $2"
        }
        Account::Customer(_) => {
            "UPDATE customers SET password_hash = $3 WHERE tenant_id = $1 AND id = $2"
        }
    };
    let done = sqlx::query(update)
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(password.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}

/// The staff user an activation or reset token acts on; a customer's token here is a bug in the
/// caller, never a request to serve.
fn staff_token_user(token: &OneTimeToken) -> Result<UserId, StoreError> {
    token
        .staff_user()
        .ok_or_else(|| StoreError::other("a customer's one-time token reached a staff operation"))
}

#[async_trait]
impl StaffStore for PgStore {
    async fn create_tenant_with_owner(
        &self,
        tenant: &Tenant,
        owner: &StaffUser,
        setup: &OneTimeToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_tenant(&mut tx, tenant).await?;
        insert_user(&mut tx, owner).await?;
        insert_one_time_token(&mut tx, setup).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn invite_user(
        &self,
        user: &StaffUser,
        invite: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_user(&mut tx, user).await?;
        insert_one_time_token(&mut tx, invite).await?;
        insert_events(&mut tx, events).await?;
        if let Some(n) = notice {
            crate::webhooks::queue_notice(&mut tx, invite.tenant_id, n).await?;
        }
        tx.commit().await.map_err(map_err)
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = write_password(&mut tx, tenant, account, password).await?;
        if done != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        revoke_user_sessions(&mut tx, tenant, account, keep, at_time).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn issue_token(
        &self,
        token: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_one_time_token(&mut tx, token).await?;
        insert_events(&mut tx, events).await?;
        if let Some(n) = notice {
            crate::webhooks::queue_notice(&mut tx, token.tenant_id, n).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn reset_password(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if !spend_one_time_token(&mut tx, token, at_time).await? {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        let account = token.owner;
        write_password(&mut tx, token.tenant_id, account, password).await?;
        revoke_user_sessions(&mut tx, token.tenant_id, account, None, at_time).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, StoreError> {
        let rows = sqlx::query(concat!(
            user_select!(),
            " WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_uuid())
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let users = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(users, page.limit, |u| u.id.as_uuid()))
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
        // Lock the tenant's active owners (in id order, so concurrent changes queue rather than
        // deadlock) and the target: two concurrent demotions cannot both see two owners.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let owner_ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM staff_users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active' ORDER BY id FOR UPDATE",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let current = match sqlx::query(concat!(
            user_select!(),
            " WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_one(&mut *tx)
        .await
        {
            Ok(r) => user_from_row(&r)?,
            Err(e) => {
                tx.rollback().await.map_err(map_err)?;
                return Err(map_err(e));
            }
        };
        let owners = u32::try_from(owner_ids.len()).unwrap_or(u32::MAX);
        if let Err(refused) = check_role_change(actor, current.role, new, owners) {
            tx.rollback().await.map_err(map_err)?;
            return Ok(Err(refused));
        }
        if let Some(role) = new {
            sqlx::query("UPDATE staff_users SET role = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        } else {
            sqlx::query(
                "UPDATE staff_users SET status = 'disabled' WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            revoke_user_sessions(&mut tx, tenant, Account::Staff(user), None, at_time).await?;
        }
        insert_events(&mut tx, events).await?;
        let row = sqlx::query(concat!(user_select!(), " WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let updated = user_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Ok(updated))
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<StaffUser, StoreError> {
        let row = sqlx::query(concat!(user_select!(), " WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        user_from_row(&row)
    }

    async fn find_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<StaffUser, StoreError> {
        let row = sqlx::query(concat!(
            user_select!(),
            " WHERE tenant_id = $1 AND email = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(email.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        user_from_row(&row)
    }

    async fn find_one_time_token(
        &self,
        hash: &SecretHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<OneTimeToken, StoreError> {
        let r = sqlx::query(
            "SELECT hash, tenant_id, owner_kind, user_id, purpose, expires_at FROM one_time_tokens \
             WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(&hash.0[..])
        .bind(purpose.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        let purpose: String = r.try_get("purpose").map_err(map_err)?;
        Ok(OneTimeToken {
            hash: hash_from(&r, "hash")?,
            tenant_id: TenantId::from_uuid(r.try_get("tenant_id").map_err(map_err)?),
            owner: {
                let kind: String = r.try_get("owner_kind").map_err(map_err)?;
                Account::from_parts(&kind, r.try_get("user_id").map_err(map_err)?)
                    .ok_or_else(|| corrupt("token owner kind"))?
            },
            purpose: TokenPurpose::parse(&purpose).ok_or_else(|| corrupt("token purpose"))?,
            expires_at: at(&r, "expires_at")?,
        })
    }

    async fn activate_with_token(
        &self,
        token: &OneTimeToken,
        password: &StoredHash,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let user = staff_token_user(token)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if !spend_one_time_token(&mut tx, token, session.created_at).await? {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        sqlx::query("UPDATE staff_users SET password_hash = $3, status = 'active' WHERE tenant_id = $1 AND id = $2")
            .bind(token.tenant_id.as_uuid())
            .bind(user.as_uuid())
            .bind(password.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_session(&mut tx, session, refresh).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_session(&mut tx, session, refresh).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_refresh_token(&self, hash: &SecretHash) -> Result<RefreshToken, StoreError> {
        let r = sqlx::query(
            "SELECT hash, tenant_id, session_id, issued_at, expires_at, used_at FROM refresh_tokens WHERE hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        refresh_from_row(&r)
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &SecretHash,
        new: &RefreshToken,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $3 WHERE hash = $1 AND tenant_id = $2 AND used_at IS NULL",
        )
        .bind(&old.0[..])
        .bind(tenant.as_uuid())
        .bind(new.issued_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if spent.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        insert_refresh(&mut tx, new).await?;
        sqlx::query("UPDATE sessions SET last_used_at = $3, expires_at = $4 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(new.session_id.as_uuid())
            .bind(new.issued_at)
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(at_time)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session, StoreError> {
        let r = sqlx::query(concat!(
            session_select!(),
            " WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        session_from_row(&r)
    }

    async fn list_active_sessions(
        &self,
        tenant: TenantId,
        owner: Account,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            session_select!(),
            " WHERE tenant_id = $1 AND owner_kind = $4 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY id DESC"
        ))
        .bind(tenant.as_uuid())
        .bind(owner.uuid())
        .bind(now)
        .bind(owner.kind())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(session_from_row).collect()
    }
}

#[async_trait]
impl SigningKeyStore for PgStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query("SELECT kid, sealed_seed, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredSigningKey {
                    kid: r.try_get("kid").map_err(map_err)?,
                    sealed_seed: r.try_get("sealed_seed").map_err(map_err)?,
                    created_at: at(r, "created_at")?,
                    retired_at: at_opt(r, "retired_at")?,
                })
            })
            .collect()
    }

    async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("INSERT INTO signing_keys (kid, sealed_seed, created_at, retired_at) VALUES ($1, $2, $3, NULL)")
            .bind(&key.kid)
            .bind(&key.sealed_seed)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}
