//! Idempotency keys: claimed by a request, answered, and purged once expired.

use keel_kernel::{
    StoreError,
    idempotency::{IdempotencyBegin, IdempotencyKey, claim_held},
};
use time::OffsetDateTime;

use crate::{args, exec::Exec, rows::orders::begin_from_row};

/// Claims the key (`IdempotencyStore::begin`). A new key, or one whose owner died in flight
/// (or that expired), is taken over. On PostgreSQL the two statements run without a
/// transaction around them (each is a round trip, two of them per idempotent request): the
/// read after a refused claim needs no snapshot shared with it, whatever state the key is in
/// by then is the answer.
pub async fn begin_key<E: Exec>(
    e: &mut E,
    key: &IdempotencyKey,
    request_hash: &[u8],
    now: OffsetDateTime,
    lock_until: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<IdempotencyBegin, StoreError> {
    let claimed = e
        .run(
            "INSERT INTO idempotency_keys (tenant_id, scope, key, request_hash, status, locked_until, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $7) \
             ON CONFLICT (tenant_id, scope, key) DO UPDATE SET request_hash = excluded.request_hash, status = 'in_flight', \
             response_status = NULL, response_body = NULL, locked_until = excluded.locked_until, \
             expires_at = excluded.expires_at, created_at = excluded.created_at \
             WHERE (idempotency_keys.status = 'in_flight' AND idempotency_keys.locked_until <= $7) \
             OR idempotency_keys.expires_at <= $7",
            args![
                key.tenant_id.as_uuid(),
                &key.scope,
                &key.key,
                request_hash,
                lock_until,
                expires_at,
                now
            ],
        )
        .await?;
    if claimed == 1 {
        return Ok(IdempotencyBegin::Started);
    }
    let row = e
        .opt(
            "SELECT request_hash, status, response_status, response_body FROM idempotency_keys \
             WHERE tenant_id = $1 AND scope = $2 AND key = $3",
            args![key.tenant_id.as_uuid(), &key.scope, &key.key],
        )
        .await?;
    // Gone between the two statements (purged as expired, on PostgreSQL): in flight for this
    // request, whose retry claims it afresh.
    row.as_ref()
        .map_or(Ok(IdempotencyBegin::InFlight), begin_from_row)
}

/// Marks an idempotency key done with its response, in the caller's transaction or on its own
/// (one statement). The key must be in flight: a claim committed ahead (SQLite, ADR 0022)
/// whose group failed is gone, and the work that depended on it must fail with it (see
/// `claim_held`).
pub async fn finish_key<E: Exec>(
    e: &mut E,
    key: &IdempotencyKey,
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE idempotency_keys SET status = 'done', response_status = $4, response_body = $5 \
             WHERE tenant_id = $1 AND scope = $2 AND key = $3 AND status = 'in_flight'",
            args![
                key.tenant_id.as_uuid(),
                &key.scope,
                &key.key,
                i64::from(status),
                body
            ],
        )
        .await?;
    claim_held(done)
}

/// Deletes the keys expired at `now`; answers how many went.
pub async fn purge_keys<E: Exec>(e: &mut E, now: OffsetDateTime) -> Result<u64, StoreError> {
    e.run(
        "DELETE FROM idempotency_keys WHERE expires_at <= $1",
        args![now],
    )
    .await
}
