//! Identity rows: tenants, staff users, sessions, refresh tokens, customers, API keys.

use keel_identity::{
    Tenant, TenantName, TenantSlug,
    domain::access::{Permission, Role},
    domain::api_key::{ApiKey, ApiKeyId, KeyKind},
    domain::customer::{Customer, CustomerId},
    domain::password::StoredHash,
    domain::secret::SecretHash,
    domain::staff::{
        Account, Email, RefreshToken, Session, SessionId, StaffUser, UserId, UserStatus,
    },
};
use keel_kernel::{StoreError, TenantId};

use super::ReadRow;

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt {what} in storage"))
}

fn corrupt_key(what: &str) -> StoreError {
    StoreError::other(format!("corrupt API key {what} in storage"))
}

/// A 32-byte secret hash column.
pub fn hash_from(r: &impl ReadRow, col: &str) -> Result<SecretHash, StoreError> {
    r.bytes(col)?
        .try_into()
        .map(SecretHash)
        .map_err(|_| corrupt("hash"))
}

pub fn tenant_from_row(r: &impl ReadRow) -> Result<Tenant, StoreError> {
    let slug: String = r.col("slug")?;
    let name: String = r.col("name")?;
    Ok(Tenant {
        id: TenantId::from_uuid(r.col("id")?),
        slug: TenantSlug::parse(&slug).map_err(StoreError::other)?,
        name: TenantName::parse(&name).map_err(StoreError::other)?,
        created_at: r.time("created_at")?,
    })
}

pub fn user_from_row(r: &impl ReadRow) -> Result<StaffUser, StoreError> {
    let email: String = r.col("email")?;
    let role: String = r.col("role")?;
    let status: String = r.col("status")?;
    let hash: Option<String> = r.col("password_hash")?;
    Ok(StaffUser {
        id: UserId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        email: Email::parse(&email).map_err(|_| corrupt("email"))?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role"))?,
        status: UserStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        password_hash: hash
            .map(StoredHash::from_stored)
            .transpose()
            .map_err(|_| corrupt("password hash"))?,
        created_at: r.time("created_at")?,
    })
}

pub fn session_from_row(r: &impl ReadRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: SessionId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        owner: {
            let kind: String = r.col("owner_kind")?;
            Account::from_parts(&kind, r.col("user_id")?).ok_or_else(|| corrupt("session owner"))?
        },
        created_at: r.time("created_at")?,
        last_used_at: r.time("last_used_at")?,
        expires_at: r.time("expires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

pub fn refresh_from_row(r: &impl ReadRow) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        hash: hash_from(r, "hash")?,
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        session_id: SessionId::from_uuid(r.col("session_id")?),
        issued_at: r.time("issued_at")?,
        expires_at: r.time("expires_at")?,
        used_at: r.opt_time("used_at")?,
    })
}

/// A one-time token (`one_time_tokens`: hash, tenant_id, owner_kind, user_id, purpose,
/// expires_at).
pub fn one_time_token_from_row(
    r: &impl ReadRow,
) -> Result<keel_identity::domain::staff::OneTimeToken, StoreError> {
    use keel_identity::domain::staff::{OneTimeToken, TokenPurpose};
    let kind: String = r.col("owner_kind")?;
    let purpose: String = r.col("purpose")?;
    Ok(OneTimeToken {
        hash: hash_from(r, "hash")?,
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        owner: Account::from_parts(&kind, r.col("user_id")?)
            .ok_or_else(|| corrupt("token owner kind"))?,
        purpose: TokenPurpose::parse(&purpose).ok_or_else(|| corrupt("token purpose"))?,
        expires_at: r.time("expires_at")?,
    })
}

/// A JWT signing key (`signing_keys`).
pub fn signing_key_from_row(
    r: &impl ReadRow,
) -> Result<keel_identity::domain::staff::StoredSigningKey, StoreError> {
    Ok(keel_identity::domain::staff::StoredSigningKey {
        kid: r.col("kid")?,
        sealed_seed: r.col("sealed_seed")?,
        created_at: r.time("created_at")?,
        retired_at: r.opt_time("retired_at")?,
    })
}

pub fn customer_from_row(r: &impl ReadRow) -> Result<Customer, StoreError> {
    let email: String = r.col("email")?;
    let hash: String = r.col("password_hash")?;
    Ok(Customer {
        id: CustomerId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        email: Email::parse(&email).map_err(|_| StoreError::other("corrupt customer email"))?,
        password_hash: StoredHash::from_stored(hash)
            .map_err(|_| StoreError::other("corrupt customer hash"))?,
        created_at: r.time("created_at")?,
    })
}

pub fn key_from_row(r: &impl ReadRow) -> Result<ApiKey, StoreError> {
    let kind: String = r.col("kind")?;
    let scopes: String = r.col("scopes")?;
    let hash: Vec<u8> = r.col("secret_hash")?;
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        kind: KeyKind::parse(&kind).ok_or_else(|| corrupt_key("kind"))?,
        name: r.col("name")?,
        lookup: r.col("lookup")?,
        secret_hash: hash.try_into().map_err(|_| corrupt_key("hash"))?,
        scopes: scopes
            .split_whitespace()
            .map(|s| Permission::parse(s).ok_or_else(|| corrupt_key("scope")))
            .collect::<Result<_, _>>()?,
        allowed_origins: r
            .text("allowed_origins")?
            .split_whitespace()
            .map(|o| {
                keel_identity::domain::api_key::Origin::parse(o).map_err(|_| corrupt_key("origin"))
            })
            .collect::<Result<_, _>>()?,
        created_at: r.time("created_at")?,
        expires_at: r.opt_time("expires_at")?,
        last_used_at: r.opt_time("last_used_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

/// A TOTP enrolment (`mfa_enrolments`).
pub fn mfa_from_row(
    r: &impl ReadRow,
) -> Result<keel_identity::domain::staff::StoredMfa, StoreError> {
    Ok(keel_identity::domain::staff::StoredMfa {
        sealed_secret: r.bytes("sealed_secret")?,
        created_at: r.time("created_at")?,
        confirmed_at: r.opt_time("confirmed_at")?,
        last_used_step: r.opt_int("last_used_step")?,
    })
}
