//! The storage port behind `Idempotency-Key` (Stripe's semantics): the first response to a
//! key is stored and replayed; a key is scoped to a tenant and a credential.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{StoreError, TenantId};

/// Where a key stands when a request presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// New (or its earlier attempt died in flight): this request owns it now.
    Started,
    /// Another request with this key is still running.
    InFlight,
    /// Finished before: the stored request fingerprint and response.
    Done {
        request_hash: Vec<u8>,
        status: u16,
        body: String,
    },
}

/// One key, as the HTTP layer identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub tenant_id: TenantId,
    /// The credential the key belongs to (`pk:<key id>`, `cus:<customer id>`, `usr:<id>`, …).
    pub scope: String,
    pub key: String,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims the key for a request with fingerprint `request_hash`, in one atomic step: a new
    /// key is inserted as in flight until `lock_until`; a finished one is answered; one in
    /// flight past `lock_until` (its request died) is taken over.
    ///
    /// A fresh claim ([`IdempotencyBegin::Started`]) may become durable with the owner's
    /// next write rather than on its own (ADR 0022); so whatever stores the key's answer
    /// (here or with the work's own writes) must find it still in flight and fail otherwise
    /// ([`claim_held`]).
    async fn begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &[u8],
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError>;
    /// Stores the response of the request that owns the key; fails (changing nothing) if the
    /// key is not in flight.
    async fn finish(&self, key: &IdempotencyKey, status: u16, body: &str)
    -> Result<(), StoreError>;
    /// Drops keys that expired before `now` (a scheduled job).
    async fn purge(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// What storing a key's answer found, as rows changed by an update of the key *while in
/// flight*: exactly one, or the claim is gone (its commit failed, ADR 0022) and the work that
/// depended on it must not land without it.
pub fn claim_held(rows_changed: u64) -> Result<(), StoreError> {
    if rows_changed == 1 {
        Ok(())
    } else {
        Err(StoreError::unavailable(
            "the idempotency key is no longer in flight; retry the request",
        ))
    }
}
