//! Staff users, one-time tokens, sessions, refresh tokens and signing keys on SQLite.

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
use time::OffsetDateTime;

use crate::db::{self, Get};
use crate::{
    SqliteStore, at, at_opt,
    error::map_err,
    tenants::{insert_events, insert_tenant},
    to_micros,
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

fn insert_user(tx: &rusqlite::Connection, u: &StaffUser) -> Result<(), StoreError> {
    db::query(
        "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(u.tenant_id.as_uuid())
    .bind(u.id.as_uuid())
    .bind(u.email.as_str())
    .bind(u.role.as_str())
    .bind(u.status.as_str())
    .bind(u.password_hash.as_ref().map(StoredHash::as_str))
    .bind(to_micros(u.created_at)?)
    .execute(tx)?;
    Ok(())
}

pub(crate) fn insert_session(
    tx: &rusqlite::Connection,
    s: &Session,
    r: &RefreshToken,
) -> Result<(), StoreError> {
    db::query(
        "INSERT INTO sessions (tenant_id, id, owner_kind, user_id, created_at, last_used_at, expires_at, revoked_at) \
         VALUES (?1, ?2, ?7, ?3, ?4, ?5, ?6, NULL)",
    )
    .bind(s.tenant_id.as_uuid())
    .bind(s.id.as_uuid())
    .bind(s.owner.uuid())
    .bind(to_micros(s.created_at)?)
    .bind(to_micros(s.last_used_at)?)
    .bind(to_micros(s.expires_at)?)
    .bind(s.owner.kind())
    .execute(tx)?;
    insert_refresh(tx, r)
}

fn insert_refresh(tx: &rusqlite::Connection, r: &RefreshToken) -> Result<(), StoreError> {
    db::query(
        "INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_at, expires_at, used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
    )
    .bind(&r.hash.0[..])
    .bind(r.tenant_id.as_uuid())
    .bind(r.session_id.as_uuid())
    .bind(to_micros(r.issued_at)?)
    .bind(to_micros(r.expires_at)?)
    .execute(tx)?;
    Ok(())
}

pub(crate) fn insert_one_time_token(
    tx: &rusqlite::Connection,
    t: &OneTimeToken,
) -> Result<(), StoreError> {
    db::query(
        "INSERT INTO one_time_tokens (hash, tenant_id, user_id, purpose, expires_at, used_at, owner_kind) \
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
    )
    .bind(&t.hash.0[..])
    .bind(t.tenant_id.as_uuid())
    .bind(t.owner.uuid())
    .bind(t.purpose.as_str())
    .bind(to_micros(t.expires_at)?)
    .bind(t.owner.kind())
    .execute(tx)?;
    Ok(())
}

/// Ends every session of an account except `keep`, inside the caller's transaction (the first
/// revocation time of an already revoked session is kept).
fn revoke_user_sessions(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    account: Account,
    keep: Option<SessionId>,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    db::query(
        "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?3) \
         WHERE tenant_id = ?1 AND owner_kind = ?5 AND user_id = ?2 AND (?4 IS NULL OR id <> ?4)",
    )
    .bind(tenant.as_uuid())
    .bind(account.uuid())
    .bind(to_micros(at_time)?)
    .bind(keep.map(|s| s.as_uuid()))
    .bind(account.kind())
    .execute(tx)?;
    Ok(())
}

/// Marks a one-time token used, only if it still is unused; false when another request spent
/// it first. Callers roll back and answer `Conflict { TOKEN_ALREADY_USED }`.
pub(crate) fn spend_one_time_token(
    tx: &rusqlite::Connection,
    token: &OneTimeToken,
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let used =
        db::query("UPDATE one_time_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL")
            .bind(&token.hash.0[..])
            .bind(to_micros(at_time)?)
            .execute(tx)?;
    Ok(used.rows_affected() == 1)
}

/// Sets an account's password hash inside the caller's transaction; answers the rows changed
/// (0 when there is no such account).
fn write_password(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    account: Account,
    password: &StoredHash,
) -> Result<u64, StoreError> {
    // One static statement per kind of account (no SQL is assembled at run time).
    let update = match account {
        Account::Staff(_) => {
            "UPDATE staff_users SET password_hash = ?3 WHERE tenant_id = ?1 AND id = ?2"
        }
        Account::Customer(_) => {
            "UPDATE customers SET password_hash = ?3 WHERE tenant_id = ?1 AND id = ?2"
        }
    };
    let done = db::query(update)
        .bind(tenant.as_uuid())
        .bind(account.uuid())
        .bind(password.as_str())
        .execute(tx)?;
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
impl StaffStore for SqliteStore {
    async fn create_tenant_with_owner(
        &self,
        tenant: &Tenant,
        owner: &StaffUser,
        setup: &OneTimeToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_tenant(&tx, tenant)?;
        insert_user(&tx, owner)?;
        insert_one_time_token(&tx, setup)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn invite_user(
        &self,
        user: &StaffUser,
        invite: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_user(&tx, user)?;
        insert_one_time_token(&tx, invite)?;
        insert_events(&tx, events)?;
        if let Some(n) = notice {
            crate::webhooks::queue_notice(&tx, invite.tenant_id, n)?;
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
        let tx = self.write().await?;
        let done = write_password(&tx, tenant, account, password)?;
        if done != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        revoke_user_sessions(&tx, tenant, account, keep, at_time)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn issue_token(
        &self,
        token: &OneTimeToken,
        events: &[NewEvent],
        notice: Option<&AccountNotice>,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_one_time_token(&tx, token)?;
        insert_events(&tx, events)?;
        if let Some(n) = notice {
            crate::webhooks::queue_notice(&tx, token.tenant_id, n)?;
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
        let tx = self.write().await?;
        if !spend_one_time_token(&tx, token, at_time)? {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        let account = token.owner;
        write_password(&tx, token.tenant_id, account, password)?;
        revoke_user_sessions(&tx, token.tenant_id, account, None, at_time)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, StoreError> {
        let rows = self.read(|c| {
            db::query(concat!(
                user_select!(),
                " WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
            ))
            .bind(tenant.as_uuid())
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c)
        })?;
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
        // The single writer serialises this read-decide-write against every other write.
        let tx = self.write().await?;
        let current = match db::query(concat!(user_select!(), " WHERE tenant_id = ?1 AND id = ?2"))
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .fetch_one(&tx)
        {
            Ok(r) => user_from_row(&r)?,
            Err(e) => {
                tx.rollback().map_err(map_err)?;
                return Err(map_err(e));
            }
        };
        let owners: i64 = db::query(
            "SELECT count(*) FROM staff_users WHERE tenant_id = ?1 AND role = 'owner' AND status = 'active'",
        )
        .bind(tenant.as_uuid())
        .scalar(&tx)?;
        let owners = u32::try_from(owners).unwrap_or(u32::MAX);
        if let Err(refused) = check_role_change(actor, current.role, new, owners) {
            tx.rollback().map_err(map_err)?;
            return Ok(Err(refused));
        }
        if let Some(role) = new {
            db::query("UPDATE staff_users SET role = ?3 WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .bind(role.as_str())
                .execute(&tx)?;
        } else {
            db::query(
                "UPDATE staff_users SET status = 'disabled' WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .execute(&tx)?;
            revoke_user_sessions(&tx, tenant, Account::Staff(user), None, at_time)?;
        }
        insert_events(&tx, events)?;
        let row = db::query(concat!(user_select!(), " WHERE tenant_id = ?1 AND id = ?2"))
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .fetch_one(&tx)?;
        let updated = user_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Ok(updated))
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<StaffUser, StoreError> {
        let row = self.read(|c| {
            db::query(concat!(user_select!(), " WHERE tenant_id = ?1 AND id = ?2"))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(c)
        })?;
        user_from_row(&row)
    }

    async fn find_user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<StaffUser, StoreError> {
        let row = self.read(|c| {
            db::query(concat!(
                user_select!(),
                " WHERE tenant_id = ?1 AND email = ?2"
            ))
            .bind(tenant.as_uuid())
            .bind(email.as_str())
            .fetch_one(c)
        })?;
        user_from_row(&row)
    }

    async fn find_one_time_token(
        &self,
        hash: &SecretHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<OneTimeToken, StoreError> {
        let r = self.read(|c| {
            db::query(
            "SELECT hash, tenant_id, owner_kind, user_id, purpose, expires_at FROM one_time_tokens \
             WHERE hash = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3",
        )
        .bind(&hash.0[..])
        .bind(purpose.as_str())
        .bind(to_micros(now)?)
        .fetch_one(c)
        })?;
        let purpose: String = r.col("purpose")?;
        Ok(OneTimeToken {
            hash: hash_from(&r, "hash")?,
            tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
            owner: {
                let kind: String = r.col("owner_kind")?;
                Account::from_parts(&kind, r.col("user_id")?)
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
        let tx = self.write().await?;
        if !spend_one_time_token(&tx, token, session.created_at)? {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        db::query("UPDATE staff_users SET password_hash = ?3, status = 'active' WHERE tenant_id = ?1 AND id = ?2")
            .bind(token.tenant_id.as_uuid())
            .bind(user.as_uuid())
            .bind(password.as_str())
            .execute(&tx)?;
        insert_session(&tx, session, refresh)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
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
        let tx = self.write().await?;
        insert_session(&tx, session, refresh)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_refresh_token(&self, hash: &SecretHash) -> Result<RefreshToken, StoreError> {
        let r = self.read(|c| db::query(
            "SELECT hash, tenant_id, session_id, issued_at, expires_at, used_at FROM refresh_tokens WHERE hash = ?1",
        )
        .bind(&hash.0[..])
        .fetch_one(c))?;
        refresh_from_row(&r)
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        old: &SecretHash,
        new: &RefreshToken,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let spent = db::query(
            "UPDATE refresh_tokens SET used_at = ?3 WHERE hash = ?1 AND tenant_id = ?2 AND used_at IS NULL",
        )
        .bind(&old.0[..])
        .bind(tenant.as_uuid())
        .bind(to_micros(new.issued_at)?)
        .execute(&tx)?;
        if spent.rows_affected() != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::Conflict {
                constraint: TOKEN_ALREADY_USED.into(),
            });
        }
        insert_refresh(&tx, new)?;
        db::query("UPDATE sessions SET last_used_at = ?3, expires_at = ?4 WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_uuid())
            .bind(new.session_id.as_uuid())
            .bind(to_micros(new.issued_at)?)
            .bind(to_micros(new.expires_at)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }

    async fn revoke_session(
        &self,
        tenant: TenantId,
        id: SessionId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let done = db::query(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?3) WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(to_micros(at_time)?)
        .execute(&tx)?;
        if done.rows_affected() != 1 {
            tx.rollback().map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_session(&self, tenant: TenantId, id: SessionId) -> Result<Session, StoreError> {
        let r = self.read(|c| {
            db::query(concat!(
                session_select!(),
                " WHERE tenant_id = ?1 AND id = ?2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c)
        })?;
        session_from_row(&r)
    }

    async fn list_active_sessions(
        &self,
        tenant: TenantId,
        owner: Account,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = self.read(|c| db::query(concat!(
            session_select!(),
            " WHERE tenant_id = ?1 AND owner_kind = ?4 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3 ORDER BY id DESC"
        ))
        .bind(tenant.as_uuid())
        .bind(owner.uuid())
        .bind(to_micros(now)?)
        .bind(owner.kind())
        .fetch_all(c))?;
        rows.iter().map(session_from_row).collect()
    }
}

#[async_trait]
impl SigningKeyStore for SqliteStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = self.read(|c| db::query("SELECT kid, sealed_seed, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC")
            .fetch_all(c))?;
        rows.iter()
            .map(|r| {
                Ok(StoredSigningKey {
                    kid: r.col("kid")?,
                    sealed_seed: r.col("sealed_seed")?,
                    created_at: at(r, "created_at")?,
                    retired_at: at_opt(r, "retired_at")?,
                })
            })
            .collect()
    }

    async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")
            .bind(to_micros(key.created_at)?)
            .execute(&tx)?;
        db::query("INSERT INTO signing_keys (kid, sealed_seed, created_at, retired_at) VALUES (?1, ?2, ?3, NULL)")
            .bind(&key.kid)
            .bind(&key.sealed_seed)
            .bind(to_micros(key.created_at)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }
}
