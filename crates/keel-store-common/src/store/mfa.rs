//! TOTP enrolments, backup codes and the MFA step of login.

use keel_identity::{
    domain::secret::SecretHash,
    domain::staff::{Account, OneTimeToken, RefreshToken, Session, StoredMfa, UserId},
    ports::{MFA_ALREADY_ENABLED, MfaStatus, TOKEN_ALREADY_USED},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use time::OffsetDateTime;

use crate::{
    args,
    exec::Exec,
    rows::{ReadRow, identity::mfa_from_row},
    store::{
        identity::{insert_one_time_token, insert_session, spend_one_time_token},
        tenants::insert_events,
    },
};

/// Replaces an account's backup codes inside the caller's transaction.
async fn write_backup_codes<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    hashes: &[[u8; 32]],
) -> Result<(), StoreError> {
    e.run(
        "DELETE FROM backup_codes WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
        args![tenant.as_uuid(), account.uuid(), account.kind()],
    )
    .await?;
    for hash in hashes {
        e.run(
            "INSERT INTO backup_codes (tenant_id, user_id, code_hash, used_at, owner_kind) \
             VALUES ($1, $2, $3, NULL, $4)",
            args![tenant.as_uuid(), account.uuid(), &hash[..], account.kind()],
        )
        .await?;
    }
    Ok(())
}

/// The refusal of a second enrolment while one is confirmed.
fn already_enabled() -> StoreError {
    StoreError::Conflict {
        constraint: MFA_ALREADY_ENABLED.into(),
    }
}

pub async fn get_mfa<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
) -> Result<Option<StoredMfa>, StoreError> {
    let row = e
        .opt(
            "SELECT sealed_secret, created_at, confirmed_at, last_used_step FROM mfa_enrolments \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
            args![tenant.as_uuid(), account.uuid(), account.kind()],
        )
        .await?;
    row.as_ref().map(mfa_from_row).transpose()
}

/// Starts an enrolment, replacing an unconfirmed one; refused while one is confirmed.
pub async fn begin_mfa<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    mfa: &StoredMfa,
) -> Result<(), StoreError> {
    let current = e
        .opt(
            "SELECT confirmed_at FROM mfa_enrolments \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
            args![tenant.as_uuid(), account.uuid(), account.kind()],
        )
        .await?;
    if let Some(r) = current
        && r.opt_time("confirmed_at")?.is_some()
    {
        return Err(already_enabled());
    }
    e.run(
        "DELETE FROM mfa_enrolments WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
        args![tenant.as_uuid(), account.uuid(), account.kind()],
    )
    .await?;
    e.run(
        "INSERT INTO mfa_enrolments (tenant_id, user_id, sealed_secret, created_at, confirmed_at, last_used_step, owner_kind) \
         VALUES ($1, $2, $3, $4, NULL, NULL, $5)",
        args![
            tenant.as_uuid(),
            account.uuid(),
            &mfa.sealed_secret,
            mfa.created_at,
            account.kind()
        ],
    )
    .await?;
    Ok(())
}

/// Confirms the pending enrolment at `step` (the step is spent), with the backup codes and
/// the events; refused when there is no pending enrolment.
pub async fn confirm_mfa<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    step: i64,
    backup_code_hashes: &[[u8; 32]],
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE mfa_enrolments SET confirmed_at = $3, last_used_step = $4 \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $5 AND confirmed_at IS NULL",
            args![
                tenant.as_uuid(),
                account.uuid(),
                at_time,
                step,
                account.kind()
            ],
        )
        .await?;
    if done != 1 {
        return Err(already_enabled());
    }
    write_backup_codes(e, tenant, account, backup_code_hashes).await?;
    insert_events(e, events).await
}

/// Spends a TOTP step: true when it is later than every step used before (no replay).
pub async fn use_totp_step<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    step: i64,
) -> Result<bool, StoreError> {
    let done = e
        .run(
            "UPDATE mfa_enrolments SET last_used_step = $3 \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $4 \
             AND confirmed_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $3)",
            args![tenant.as_uuid(), account.uuid(), step, account.kind()],
        )
        .await?;
    Ok(done == 1)
}

/// Spends a backup code: true when it was the account's and unused.
pub async fn use_backup_code<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    hash: &[u8; 32],
    at_time: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = e
        .run(
            "UPDATE backup_codes SET used_at = $4 \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $5 AND code_hash = $3 \
             AND used_at IS NULL",
            args![
                tenant.as_uuid(),
                account.uuid(),
                &hash[..],
                at_time,
                account.kind()
            ],
        )
        .await?;
    Ok(done == 1)
}

/// New backup codes for a confirmed enrolment, with the events; [`StoreError::NotFound`]
/// without one.
pub async fn replace_backup_codes<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    backup_code_hashes: &[[u8; 32]],
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let confirmed = e
        .one(
            "SELECT count(*) AS n FROM mfa_enrolments \
             WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3 AND confirmed_at IS NOT NULL",
            args![tenant.as_uuid(), account.uuid(), account.kind()],
        )
        .await?
        .int("n")?;
    if confirmed != 1 {
        return Err(StoreError::NotFound);
    }
    write_backup_codes(e, tenant, account, backup_code_hashes).await?;
    insert_events(e, events).await
}

/// Whether the shop requires staff MFA and whether this user has confirmed it, in one read.
pub async fn staff_mfa_status<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    user: UserId,
) -> Result<MfaStatus, StoreError> {
    let row = e
        .one(
            "SELECT t.require_staff_mfa AS required, \
             EXISTS (SELECT 1 FROM mfa_enrolments m WHERE m.tenant_id = t.id AND m.owner_kind = 'staff' \
             AND m.user_id = $2 AND m.confirmed_at IS NOT NULL) AS enrolled \
             FROM tenants t WHERE t.id = $1",
            args![tenant.as_uuid(), user.as_uuid()],
        )
        .await?;
    Ok(MfaStatus {
        required: row.flag("required")?,
        enrolled: row.flag("enrolled")?,
    })
}

/// Sets the shop's staff MFA requirement, with the events; [`StoreError::NotFound`] without
/// the tenant.
pub async fn set_require_staff_mfa<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    required: bool,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE tenants SET require_staff_mfa = $2 WHERE id = $1",
            args![tenant.as_uuid(), required],
        )
        .await?;
    if done != 1 {
        return Err(StoreError::NotFound);
    }
    insert_events(e, events).await
}

/// Removes an account's enrolment and backup codes, with the events.
pub async fn disable_mfa<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    account: Account,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        "DELETE FROM backup_codes WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
        args![tenant.as_uuid(), account.uuid(), account.kind()],
    )
    .await?;
    e.run(
        "DELETE FROM mfa_enrolments WHERE tenant_id = $1 AND user_id = $2 AND owner_kind = $3",
        args![tenant.as_uuid(), account.uuid(), account.kind()],
    )
    .await?;
    insert_events(e, events).await
}

/// Stores the token that carries a login to its MFA step.
pub async fn create_mfa_token<E: Exec>(e: &mut E, token: &OneTimeToken) -> Result<(), StoreError> {
    insert_one_time_token(e, token).await
}

/// Counts a failed MFA attempt on a live token, spending it at the `max`th; answers the
/// failures so far (`max` when the token is spent or missing).
pub async fn fail_mfa_token<E: Exec>(
    e: &mut E,
    hash: &SecretHash,
    max: u32,
    at_time: OffsetDateTime,
) -> Result<u32, StoreError> {
    // `failures` is a 4-byte `integer` on PostgreSQL: widened to the 8 bytes the shared rows
    // read (`CAST` is the form both dialects know).
    let row = e
        .opt(
            "UPDATE one_time_tokens SET failures = failures + 1, \
             used_at = CASE WHEN failures + 1 >= $2 THEN $3 ELSE used_at END \
             WHERE hash = $1 AND used_at IS NULL RETURNING CAST(failures AS bigint) AS failures",
            args![&hash.0[..], max, at_time],
        )
        .await?;
    let failures = row.map(|r| r.int("failures")).transpose()?;
    Ok(failures.map_or(max, |f| u32::try_from(f).unwrap_or(max)))
}

/// Spends the login's MFA token and opens the session, with the events; refused when the
/// token was already spent.
pub async fn complete_mfa_login<E: Exec>(
    e: &mut E,
    token: &OneTimeToken,
    session: &Session,
    refresh: &RefreshToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if !spend_one_time_token(e, token, session.created_at).await? {
        return Err(StoreError::Conflict {
            constraint: TOKEN_ALREADY_USED.into(),
        });
    }
    insert_session(e, session, refresh).await?;
    insert_events(e, events).await
}
