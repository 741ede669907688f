//! Login throttling on PostgreSQL: a transaction-scoped advisory lock per key serialises the
//! reservations of every node for the same account or address (the statements:
//! `keel_store_common::store::throttle`).

use async_trait::async_trait;
use keel_identity::{
    domain::throttle::{Limit, ThrottleKey},
    ports::{Attempt, AttemptId, LoginThrottle},
};
use keel_kernel::StoreError;
use keel_store_common::store::throttle as shared;
use time::OffsetDateTime;

use crate::{PgStore, error::map_err};

#[async_trait]
impl LoginThrottle for PgStore {
    async fn reserve(&self, limits: &[Limit], now: OffsetDateTime) -> Result<Attempt, StoreError> {
        let mut tx = self.begin().await?;
        let out = shared::reserve(&mut tx, limits, now).await;
        match out {
            Ok(Attempt::Reserved { .. }) => tx.commit().await.map_err(map_err)?,
            // A refused attempt recorded nothing (nor did a failed one): roll back now rather
            // than on drop, which would keep the advisory locks until the connection's reuse.
            Ok(Attempt::Locked { .. }) => tx.rollback().await.map_err(map_err)?,
            Err(_) => {
                let _ = tx.rollback().await;
            }
        }
        out
    }

    async fn succeed(&self, attempt: AttemptId, clear: &ThrottleKey) -> Result<(), StoreError> {
        shared::succeed(&mut self.pg(), attempt, clear).await
    }

    async fn forget(&self, attempt: AttemptId) -> Result<(), StoreError> {
        shared::forget(&mut self.pg(), attempt).await
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        shared::prune(&mut self.pg(), before).await
    }
}
