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
    async fn begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &[u8],
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError>;
    /// Stores the response of the request that owns the key.
    async fn finish(&self, key: &IdempotencyKey, status: u16, body: &str)
    -> Result<(), StoreError>;
    /// Drops keys that expired before `now` (a scheduled job).
    async fn purge(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}
