//! Login throttling on SQLite: the single writer serialises every reservation.

use async_trait::async_trait;
use keel_identity::{
    ports::{Attempt, AttemptId, LoginThrottle},
    throttle::{Limit, ThrottleKey, locked_until},
};
use keel_kernel::StoreError;
use time::OffsetDateTime;

use crate::db;
use crate::{SqliteStore, error::map_err, from_micros, to_micros};

#[async_trait]
impl LoginThrottle for SqliteStore {
    async fn reserve(&self, limits: &[Limit], now: OffsetDateTime) -> Result<Attempt, StoreError> {
        let tx = self.write().await?;
        let mut locked: Option<OffsetDateTime> = None;
        let mut remaining = u32::MAX;
        for limit in limits {
            let times: Vec<i64> = db::query(
                "SELECT attempted_at FROM login_attempts \
                 WHERE throttle_key = ?1 AND attempted_at > ?2 ORDER BY attempted_at",
            )
            .bind(&limit.key.0[..])
            .bind(to_micros(now - limit.window)?)
            .scalars(&tx)?;
            let times = times
                .into_iter()
                .map(from_micros)
                .collect::<Result<Vec<_>, _>>()?;
            let used = u32::try_from(times.len()).unwrap_or(u32::MAX);
            remaining = remaining.min(limit.max.saturating_sub(used).saturating_sub(1));
            if let Some(until) = locked_until(&times, limit.max, limit.window) {
                locked = Some(locked.map_or(until, |l| l.max(until)));
            }
        }
        if let Some(until) = locked {
            // Nothing recorded: attempts refused while locked do not extend the lock. Roll back
            // now rather than on drop, which would keep the lock until the connection's reuse.
            tx.rollback().map_err(map_err)?;
            return Ok(Attempt::Locked { until });
        }
        let id = uuid::Uuid::now_v7();
        for limit in limits {
            db::query("INSERT INTO login_attempts (attempt_id, throttle_key, attempted_at) VALUES (?1, ?2, ?3)")
                .bind(id)
                .bind(&limit.key.0[..])
                .bind(to_micros(now)?)
                .execute(&tx)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Attempt::Reserved {
            id: AttemptId(id),
            remaining,
        })
    }

    async fn succeed(&self, attempt: AttemptId, clear: &ThrottleKey) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query("DELETE FROM login_attempts WHERE attempt_id = ?1 OR throttle_key = ?2")
            .bind(attempt.0)
            .bind(&clear.0[..])
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }

    async fn forget(&self, attempt: AttemptId) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query("DELETE FROM login_attempts WHERE attempt_id = ?1")
            .bind(attempt.0)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let tx = self.write().await?;
        let done = db::query("DELETE FROM login_attempts WHERE attempted_at < ?1")
            .bind(to_micros(before)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
