//! Login throttling on PostgreSQL: a transaction-scoped advisory lock per key serialises the
//! reservations of every node for the same account or address.

use async_trait::async_trait;
use keel_identity::{
    ports::{Attempt, AttemptId, LoginThrottle},
    throttle::{Limit, ThrottleKey, locked_until},
};
use keel_kernel::StoreError;
use time::OffsetDateTime;

use crate::{PgStore, error::map_err};

/// The advisory lock id of a key: its first 8 bytes (a SHA-256 prefix spreads evenly).
fn lock_id(key: &ThrottleKey) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.0[..8]);
    i64::from_be_bytes(first)
}

#[async_trait]
impl LoginThrottle for PgStore {
    async fn reserve(&self, limits: &[Limit], now: OffsetDateTime) -> Result<Attempt, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Lock in a fixed order so two logins sharing keys cannot deadlock.
        let mut ids: Vec<i64> = limits.iter().map(|l| lock_id(&l.key)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let mut locked: Option<OffsetDateTime> = None;
        let mut remaining = u32::MAX;
        for limit in limits {
            let times: Vec<OffsetDateTime> = sqlx::query_scalar(
                "SELECT attempted_at FROM login_attempts \
                 WHERE throttle_key = $1 AND attempted_at > $2 ORDER BY attempted_at",
            )
            .bind(&limit.key.0[..])
            .bind(now - limit.window)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let used = u32::try_from(times.len()).unwrap_or(u32::MAX);
            remaining = remaining.min(limit.max.saturating_sub(used).saturating_sub(1));
            if let Some(until) = locked_until(&times, limit.max, limit.window) {
                locked = Some(locked.map_or(until, |l| l.max(until)));
            }
        }
        if let Some(until) = locked {
            // Nothing recorded: attempts refused while locked do not extend the lock. Roll back
            // now rather than on drop, which would keep the lock until the connection's reuse.
            tx.rollback().await.map_err(map_err)?;
            return Ok(Attempt::Locked { until });
        }
        let id = uuid::Uuid::now_v7();
        for limit in limits {
            sqlx::query("INSERT INTO login_attempts (attempt_id, throttle_key, attempted_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(&limit.key.0[..])
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Attempt::Reserved {
            id: AttemptId(id),
            remaining,
        })
    }

    async fn succeed(&self, attempt: AttemptId, clear: &ThrottleKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_attempts WHERE attempt_id = $1 OR throttle_key = $2")
            .bind(attempt.0)
            .bind(&clear.0[..])
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn forget(&self, attempt: AttemptId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_attempts WHERE attempt_id = $1")
            .bind(attempt.0)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM login_attempts WHERE attempted_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
