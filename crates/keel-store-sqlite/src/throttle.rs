//! Login throttling on SQLite: the single writer serialises every reservation (the
//! statements: `keel_store_common::store::throttle`).

use async_trait::async_trait;
use keel_identity::{
    domain::throttle::{Limit, ThrottleKey},
    ports::{Attempt, AttemptId, LoginThrottle},
};
use keel_kernel::StoreError;
use keel_store_common::store::throttle as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::{Lite, now};

#[async_trait]
impl LoginThrottle for SqliteStore {
    async fn reserve(
        &self,
        limits: &[Limit],
        at_time: OffsetDateTime,
    ) -> Result<Attempt, StoreError> {
        let tx = self.write().await?;
        let out = now(shared::reserve(&mut Lite(&tx), limits, at_time));
        match out {
            Ok(Attempt::Reserved { .. }) => tx.commit().await?,
            // A refused attempt recorded nothing: roll back now, rather than commit (which
            // waits for the group's fsync) or drop (which leaves the savepoint to the next
            // holder of the writer).
            Ok(Attempt::Locked { .. }) | Err(_) => tx.rollback()?,
        }
        out
    }

    async fn succeed(&self, attempt: AttemptId, clear: &ThrottleKey) -> Result<(), StoreError> {
        self.tx(|e| now(shared::succeed(e, attempt, clear))).await
    }

    async fn forget(&self, attempt: AttemptId) -> Result<(), StoreError> {
        self.tx(|e| now(shared::forget(e, attempt))).await
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::prune(e, before))).await
    }
}
