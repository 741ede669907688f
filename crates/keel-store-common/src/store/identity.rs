//! Staff users, one-time tokens, sessions, refresh tokens and signing keys.
//!
//! The helpers at the top ([`insert_session`], [`insert_one_time_token`],
//! [`spend_one_time_token`], ...) run inside the caller's transaction and are used by the
//! other identity ports too (customers, MFA).

use keel_identity::{
    Tenant,
    domain::access::{Role, RoleChangeError, check_role_change},
    domain::password::StoredHash,
    domain::secret::SecretHash,
    domain::staff::UserStatus,
    domain::staff::{
        Account, Email, OneTimeToken, RefreshToken, Session, SessionId, StaffUser,
        StoredSigningKey, TokenPurpose, UserId,
    },
    ports::{MfaStatus, StaffAccess, TOKEN_ALREADY_USED},
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Cursor, Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{
    args,
    exec::{Exec, decode},
    for_update,
    rows::ReadRow,
    rows::corrupt,
    rows::identity::{
        one_time_token_from_row, refresh_from_row, session_from_row, signing_key_from_row,
        user_from_row,
    },
    store::tenants::{insert_events, insert_tenant},
};

/// Column lists as literal-producing macros, so every query stays a compile-time literal.
macro_rules! user_select {
    () => {
        "SELECT tenant_id, id, email, role, status, password_hash, created_at FROM staff_users"
    };
}
macro_rules! session_select {
    () => {
        "SELECT tenant_id, id, owner_kind, user_id, created_at, last_used_at, expires_at, \
         revoked_at FROM sessions"
    };
}

/// The answer when a single-use token was spent by a concurrent request first.
fn token_already_used() -> StoreError {
    StoreError::Conflict {
        constraint: TOKEN_ALREADY_USED.into(),
    }
}

/// The staff user an activation or reset token acts on; a customer's token here is a bug in the
/// caller, never a request to serve.
fn staff_token_user(token: &OneTimeToken) -> Result<UserId, StoreError> {
    token
        .staff_user()
        .ok_or_else(|| StoreError::other("a customer's one-time token reached a staff operation"))
}

/// Inserts a staff user inside the caller's transaction.
pub async fn insert_user<E: Exec>(e: &mut E, u: &StaffUser) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            u.tenant_id.as_uuid(),
            u.id.as_uuid(),
            u.email.as_str(),
            u.role.as_str(),
            u.status.as_str(),
            u.password_hash.as_ref().map(StoredHash::as_str),
            u.created_at
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a session and its first refresh token inside the caller's transaction.
pub async fn insert_session<E: Exec>(
    e: &mut E,
    s: &Session,
    r: &RefreshToken,
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO sessions (tenant_id, id, owner_kind, user_id, created_at, last_used_at, \
         expires_at, revoked_at) VALUES ($1, $2, $7, $3, $4, $5, $6, NULL)",
        args![
            s.tenant_id.as_uuid(),
            s.id.as_uuid(),
            s.owner.uuid(),
            s.created_at,
            s.last_used_at,
            s.expires_at,
            s.owner.kind()
        ],
    )
    .await?;
    insert_refresh(e, r).await
}

/// Inserts a refresh token inside the caller's transaction.
pub async fn insert_refresh<E: Exec>(e: &mut E, r: &RefreshToken) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_at, expires_at, used_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
        args![
            &r.hash.0[..],
            r.tenant_id.as_uuid(),
            r.session_id.as_uuid(),
            r.issued_at,
            r.expires_at
        ],
    )
    .await?;
    Ok(())
}

/// Stores a one-time token inside the caller's transaction.
pub async fn insert_one_time_token<E: Exec>(e: &mut E, t: &OneTimeToken) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO one_time_tokens (hash, tenant_id, user_id, purpose, expires_at, used_at, \
         owner_kind) VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        args![
            &t.hash.0[..],
            t.tenant_id.as_uuid(),
            t.owner.uuid(),
            t.purpose.as_str(),
            t.expires_at,
            t.owner.kind()
        ],
    )
    .await?;
    Ok(())
}

/// Ends every session of an account except `keep`, inside the caller's transaction (the first
/// revocation time of an already revoked session is kept).
pub async fn revoke_user_sessions<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    keep: Option<SessionId>,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    e.run(
        "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $3) \
         WHERE tenant_id = $1 AND owner_kind = $5 AND user_id = $2 AND ($4 IS NULL OR id <> $4)",
        args![
            tenant.as_uuid(),
            account.uuid(),
            at_time,
            keep.map(|s| s.as_uuid()),
            account.kind()
        ],
    )
    .await?;
    Ok(())
}

/// Marks a one-time token used, only if it still is unused; false when another request spent
/// it first. Callers roll back and answer `Conflict { TOKEN_ALREADY_USED }`.
pub async fn spend_one_time_token<E: Exec>(
    e: &mut E,
    token: &OneTimeToken,
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let used = e
        .run(
            "UPDATE one_time_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL",
            args![&token.hash.0[..], at_time],
        )
        .await?;
    Ok(used == 1)
}

/// Sets an account's password hash inside the caller's transaction; answers the rows changed
/// (0 when there is no such account).
pub async fn write_password<E: Exec>(
    e: &mut E,
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
    e.run(
        update,
        args![tenant.as_uuid(), account.uuid(), password.as_str()],
    )
    .await
}

/// Creates a tenant, its owner and the owner's setup token, with the events.
pub async fn create_tenant_with_owner<E: Exec>(
    e: &mut E,
    tenant: &Tenant,
    owner: &StaffUser,
    setup: &OneTimeToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_tenant(e, tenant).await?;
    insert_user(e, owner).await?;
    insert_one_time_token(e, setup).await?;
    insert_events(e, events).await
}

/// Adds an invited user and their invite token, with the events. The adapter queues the
/// account notice, if any, in the same transaction.
pub async fn invite_user<E: Exec>(
    e: &mut E,
    user: &StaffUser,
    invite: &OneTimeToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_user(e, user).await?;
    insert_one_time_token(e, invite).await?;
    insert_events(e, events).await
}

/// Replaces an account's password and revokes its sessions except `keep`, with the events;
/// `NotFound` (the caller rolls back) when there is no such account.
pub async fn set_password<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    password: &StoredHash,
    keep: Option<SessionId>,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if write_password(e, tenant, account, password).await? != 1 {
        return Err(StoreError::NotFound);
    }
    revoke_user_sessions(e, tenant, account, keep, at_time).await?;
    insert_events(e, events).await
}

/// Stores a one-time token with the events. The adapter queues the account notice, if any, in
/// the same transaction.
pub async fn issue_token<E: Exec>(
    e: &mut E,
    token: &OneTimeToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_one_time_token(e, token).await?;
    insert_events(e, events).await
}

/// Spends the token (`Conflict { TOKEN_ALREADY_USED }`, the caller rolling back, when a
/// concurrent request spent it first), sets the account's password and revokes every session
/// of it, with the events.
pub async fn reset_password<E: Exec>(
    e: &mut E,
    token: &OneTimeToken,
    password: &StoredHash,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if !spend_one_time_token(e, token, at_time).await? {
        return Err(token_already_used());
    }
    let account = token.owner;
    write_password(e, token.tenant_id, account, password).await?;
    revoke_user_sessions(e, token.tenant_id, account, None, at_time).await?;
    insert_events(e, events).await
}

pub async fn list_users<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    page: PageRequest,
) -> Result<Page<StaffUser>, StoreError> {
    let rows = e
        .all(
            concat!(
                user_select!(),
                " WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            args![
                tenant.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let users = decode(&rows, user_from_row)?;
    Ok(Page::from_overfetch(users, page.limit, |u| u.id.as_uuid()))
}

/// Changes a user's role (`Some`) or disables them (`None`), deciding on the current role and
/// the number of active owners read inside the transaction. A refusal is `Ok(Err(..))` with
/// nothing written: the caller rolls back.
pub async fn change_role<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    user: UserId,
    actor: Role,
    new: Option<Role>,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<Result<StaffUser, RoleChangeError>, StoreError> {
    // PostgreSQL locks the tenant's active owners (in id order, so concurrent changes queue
    // rather than deadlock) and the target: two concurrent demotions cannot both see two
    // owners. SQLite's single writer serialises this read-decide-write against every other
    // write already.
    let owner_rows = e
        .all(
            for_update!(
                E,
                "SELECT id FROM staff_users \
                 WHERE tenant_id = $1 AND role = 'owner' AND status = 'active' ORDER BY id"
            ),
            args![tenant.as_uuid()],
        )
        .await?;
    let target = e
        .one(
            for_update!(
                E,
                concat!(user_select!(), " WHERE tenant_id = $1 AND id = $2")
            ),
            args![tenant.as_uuid(), user.as_uuid()],
        )
        .await?;
    let current = user_from_row(&target)?;
    let owners = u32::try_from(owner_rows.len()).unwrap_or(u32::MAX);
    if let Err(refused) = check_role_change(actor, current.role, new, owners) {
        return Ok(Err(refused));
    }
    if let Some(role) = new {
        e.run(
            "UPDATE staff_users SET role = $3 WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), user.as_uuid(), role.as_str()],
        )
        .await?;
    } else {
        e.run(
            "UPDATE staff_users SET status = 'disabled' WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), user.as_uuid()],
        )
        .await?;
        revoke_user_sessions(e, tenant, Account::Staff(user), None, at_time).await?;
    }
    insert_events(e, events).await?;
    get_user(e, tenant, user).await.map(Ok)
}

pub async fn get_user<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: UserId,
) -> Result<StaffUser, StoreError> {
    let row = e
        .one(
            concat!(user_select!(), " WHERE tenant_id = $1 AND id = $2"),
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    user_from_row(&row)
}

pub async fn find_user_by_email<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    email: &Email,
) -> Result<StaffUser, StoreError> {
    let row = e
        .one(
            concat!(user_select!(), " WHERE tenant_id = $1 AND email = $2"),
            args![tenant.as_uuid(), email.as_str()],
        )
        .await?;
    user_from_row(&row)
}

/// An unused token of this purpose that has not expired at `now`, found by its hash.
pub async fn find_one_time_token<E: Exec>(
    e: &mut E,
    hash: &SecretHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<OneTimeToken, StoreError> {
    let row = e
        .one(
            "SELECT hash, tenant_id, owner_kind, user_id, purpose, expires_at FROM one_time_tokens \
             WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
            args![&hash.0[..], purpose.as_str(), now],
        )
        .await?;
    one_time_token_from_row(&row)
}

/// Spends the token (`Conflict { TOKEN_ALREADY_USED }`, the caller rolling back, when a
/// concurrent request spent it first), sets the user's password, activates the user and starts
/// the session, with the events.
pub async fn activate_with_token<E: Exec>(
    e: &mut E,
    token: &OneTimeToken,
    password: &StoredHash,
    session: &Session,
    refresh: &RefreshToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let user = staff_token_user(token)?;
    if !spend_one_time_token(e, token, session.created_at).await? {
        return Err(token_already_used());
    }
    // Only an invited account is activated: a disabled one never comes back through an old
    // invite (nor passes the staff quota, which counts accounts not disabled).
    let activated = e
        .run(
            "UPDATE staff_users SET password_hash = $3, status = 'active' \
             WHERE tenant_id = $1 AND id = $2 AND status = 'invited'",
            args![token.tenant_id.as_uuid(), user.as_uuid(), password.as_str()],
        )
        .await?;
    if activated != 1 {
        return Err(token_already_used());
    }
    insert_session(e, session, refresh).await?;
    insert_events(e, events).await
}

pub async fn start_session<E: Exec>(
    e: &mut E,
    session: &Session,
    refresh: &RefreshToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_session(e, session, refresh).await?;
    insert_events(e, events).await
}

/// A refresh token by hash, used or not (reuse detection needs the used ones).
pub async fn find_refresh_token<E: Exec>(
    e: &mut E,
    hash: &SecretHash,
) -> Result<RefreshToken, StoreError> {
    let row = e
        .one(
            "SELECT hash, tenant_id, session_id, issued_at, expires_at, used_at \
             FROM refresh_tokens WHERE hash = $1",
            args![&hash.0[..]],
        )
        .await?;
    refresh_from_row(&row)
}

/// Marks `old` used, stores `new` and moves the session's expiry and last use. If `old` was
/// already used (a concurrent rotation), `Conflict { TOKEN_ALREADY_USED }` and the caller rolls
/// back.
pub async fn rotate_refresh_token<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    old: &SecretHash,
    new: &RefreshToken,
) -> Result<(), StoreError> {
    let spent = e
        .run(
            "UPDATE refresh_tokens SET used_at = $3 \
             WHERE hash = $1 AND tenant_id = $2 AND used_at IS NULL",
            args![&old.0[..], tenant.as_uuid(), new.issued_at],
        )
        .await?;
    if spent != 1 {
        return Err(token_already_used());
    }
    insert_refresh(e, new).await?;
    e.run(
        "UPDATE sessions SET last_used_at = $3, expires_at = $4 WHERE tenant_id = $1 AND id = $2",
        args![
            tenant.as_uuid(),
            new.session_id.as_uuid(),
            new.issued_at,
            new.expires_at
        ],
    )
    .await?;
    Ok(())
}

/// Revokes a session (idempotent: the first revocation time is kept), with the events;
/// `NotFound` (the caller rolls back) when there is no such session.
pub async fn revoke_session<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: SessionId,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $3) \
             WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid(), at_time],
        )
        .await?;
    if done != 1 {
        return Err(StoreError::NotFound);
    }
    insert_events(e, events).await
}

pub async fn get_session<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: SessionId,
) -> Result<Session, StoreError> {
    let row = e
        .one(
            concat!(session_select!(), " WHERE tenant_id = $1 AND id = $2"),
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    session_from_row(&row)
}

pub async fn staff_access<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    session: SessionId,
    user: UserId,
) -> Result<StaffAccess, StoreError> {
    // Three reads made one (issue 25): a staff request's session, user and MFA facts. The
    // user is a left join, so a missing user is told apart from a missing session.
    let row = e
        .one(
            "SELECT s.tenant_id AS tenant_id, s.id AS id, s.owner_kind AS owner_kind, \
             s.user_id AS user_id, s.created_at AS created_at, s.last_used_at AS last_used_at, \
             s.expires_at AS expires_at, s.revoked_at AS revoked_at, \
             u.role AS staff_role, u.status AS staff_status, \
             t.require_staff_mfa AS required, \
             EXISTS (SELECT 1 FROM mfa_enrolments m WHERE m.tenant_id = s.tenant_id \
             AND m.owner_kind = 'staff' AND m.user_id = $3 AND m.confirmed_at IS NOT NULL) AS enrolled \
             FROM sessions s JOIN tenants t ON t.id = s.tenant_id \
             LEFT JOIN staff_users u ON u.tenant_id = s.tenant_id AND u.id = $3 \
             WHERE s.tenant_id = $1 AND s.id = $2",
            args![tenant.as_uuid(), session.as_uuid(), user.as_uuid()],
        )
        .await?;
    let user = match (row.opt_text("staff_role")?, row.opt_text("staff_status")?) {
        (Some(role), Some(status)) => Some((
            Role::parse(&role).ok_or_else(|| corrupt("staff_users", "role"))?,
            UserStatus::parse(&status).ok_or_else(|| corrupt("staff_users", "status"))?,
        )),
        _ => None,
    };
    Ok(StaffAccess {
        session: session_from_row(&row)?,
        user,
        mfa: MfaStatus {
            required: row.flag("required")?,
            enrolled: row.flag("enrolled")?,
        },
    })
}

/// An owner's sessions that are neither revoked nor expired at `now`, newest first.
pub async fn list_active_sessions<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    owner: Account,
    now: OffsetDateTime,
) -> Result<Vec<Session>, StoreError> {
    let rows = e
        .all(
            concat!(
                session_select!(),
                " WHERE tenant_id = $1 AND owner_kind = $4 AND user_id = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 ORDER BY id DESC"
            ),
            args![tenant.as_uuid(), owner.uuid(), now, owner.kind()],
        )
        .await?;
    decode(&rows, session_from_row)
}

/// Every signing key, newest first.
pub async fn list_signing_keys<E: Exec>(e: &mut E) -> Result<Vec<StoredSigningKey>, StoreError> {
    let rows = e
        .all(
            "SELECT kid, sealed_seed, created_at, retired_at FROM signing_keys \
             ORDER BY created_at DESC, kid DESC",
            args![],
        )
        .await?;
    decode(&rows, signing_key_from_row)
}

/// Retires every current key at `key.created_at` and adds `key`.
pub async fn rotate_signing_key<E: Exec>(
    e: &mut E,
    key: &StoredSigningKey,
) -> Result<(), StoreError> {
    e.run(
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
        args![key.created_at],
    )
    .await?;
    e.run(
        "INSERT INTO signing_keys (kid, sealed_seed, created_at, retired_at) \
         VALUES ($1, $2, $3, NULL)",
        args![&key.kid, &key.sealed_seed, key.created_at],
    )
    .await?;
    Ok(())
}
