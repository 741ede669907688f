//! API keys: created, found by their public lookup, listed, revoked, rotated and touched.

use keel_identity::domain::api_key::{ApiKey, ApiKeyId};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Cursor, Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{
    args,
    exec::{Exec, decode},
    rows::identity::key_from_row,
    store::tenants::insert_events,
};

/// The columns [`key_from_row`] reads.
macro_rules! key_select {
    () => {
        "SELECT tenant_id, id, kind, name, lookup, secret_hash, scopes, allowed_origins, \
         created_at, expires_at, last_used_at, revoked_at FROM api_keys"
    };
}

/// A key's scopes as stored: their names, space-separated.
fn scopes_text(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Inserts a key inside the caller's transaction (never used nor revoked yet).
async fn insert_key<E: Exec>(e: &mut E, key: &ApiKey) -> Result<(), StoreError> {
    let scopes = scopes_text(key);
    // Origins hold no space (`Origin` parses none): space-separated, as scopes are.
    let origins = key
        .allowed_origins
        .iter()
        .map(keel_identity::domain::api_key::Origin::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    e.run(
        "INSERT INTO api_keys (tenant_id, id, kind, name, lookup, secret_hash, scopes, created_at, \
         expires_at, last_used_at, revoked_at, allowed_origins) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10)",
        args![
            key.tenant_id.as_uuid(),
            key.id.as_uuid(),
            key.kind.as_str(),
            &key.name,
            &key.lookup,
            &key.secret_hash[..],
            &scopes,
            key.created_at,
            key.expires_at,
            &origins
        ],
    )
    .await?;
    Ok(())
}

/// Whether an active publishable key of any tenant allows `origin` (matched as a whole
/// space-separated word; a bound parameter, never spliced).
pub async fn publishable_origin_allowed<E: Exec>(
    e: &mut E,
    origin: &keel_identity::domain::api_key::Origin,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let word = format!(" {origin} ");
    Ok(e.opt(
        crate::exec::pick::<E>(
            "SELECT 1 AS one FROM api_keys WHERE kind = 'publishable' AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2) \
                 AND position($1 in ' ' || allowed_origins || ' ') > 0 LIMIT 1",
            "SELECT 1 AS one FROM api_keys WHERE kind = 'publishable' AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2) \
                 AND instr(' ' || allowed_origins || ' ', $1) > 0 LIMIT 1",
        ),
        args![word.as_str(), now],
    )
    .await?
    .is_some())
}

pub async fn create<E: Exec>(
    e: &mut E,
    key: &ApiKey,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    insert_key(e, key).await?;
    insert_events(e, events).await
}

pub async fn find<E: Exec>(e: &mut E, lookup: &str) -> Result<ApiKey, StoreError> {
    let row = e
        .one(concat!(key_select!(), " WHERE lookup = $1"), args![lookup])
        .await?;
    key_from_row(&row)
}

pub async fn get<E: Exec>(e: &mut E, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, StoreError> {
    let row = e
        .one(
            concat!(key_select!(), " WHERE tenant_id = $1 AND id = $2"),
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    key_from_row(&row)
}

pub async fn list<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    page: PageRequest,
) -> Result<Page<ApiKey>, StoreError> {
    let rows = e
        .all(
            concat!(
                key_select!(),
                " WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            args![
                tenant.as_uuid(),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let keys = decode(&rows, key_from_row)?;
    Ok(Page::from_overfetch(keys, page.limit, |k| k.id.as_uuid()))
}

/// Revokes a key, with the events; revoking a revoked key keeps its first revocation time.
/// [`StoreError::NotFound`] without such a key.
pub async fn revoke<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: ApiKeyId,
    at_time: OffsetDateTime,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid(), at_time],
        )
        .await?;
    if done != 1 {
        return Err(StoreError::NotFound);
    }
    insert_events(e, events).await
}

/// Shortens the old key's life to `old_expires_at` at most (never lengthens it) and inserts
/// the new key, with the events. [`StoreError::NotFound`] when the old key is missing or
/// revoked.
pub async fn rotate<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    old: ApiKeyId,
    old_expires_at: OffsetDateTime,
    new: &ApiKey,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            args![tenant.as_uuid(), old.as_uuid(), old_expires_at],
        )
        .await?;
    if done != 1 {
        return Err(StoreError::NotFound);
    }
    insert_key(e, new).await?;
    insert_events(e, events).await
}

/// Records a key's last use (a missing key is no error).
pub async fn touch<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: ApiKeyId,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    e.run(
        "UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2",
        args![tenant.as_uuid(), id.as_uuid(), at_time],
    )
    .await?;
    Ok(())
}
