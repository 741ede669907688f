//! Login throttling. Every reservation for a key is serialised: on PostgreSQL by a
//! transaction-scoped advisory lock per key, across every node; on SQLite by the single writer.

use keel_identity::{
    domain::throttle::{Limit, ThrottleKey, locked_until},
    ports::{Attempt, AttemptId},
};
use keel_kernel::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Dialect, Exec, decode},
    rows::ReadRow,
};

/// The advisory lock id of a key: its first 8 bytes (a SHA-256 prefix spreads evenly).
fn lock_id(key: &ThrottleKey) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.0[..8]);
    i64::from_be_bytes(first)
}

fn attempted_at(r: &impl ReadRow) -> Result<OffsetDateTime, StoreError> {
    r.time("attempted_at")
}

/// In the caller's transaction: if every limit has fewer than `max` attempts in
/// `(now - window, now]`, records one attempt per key and answers `Reserved`; otherwise
/// records nothing and answers `Locked` (attempts refused while locked do not extend the
/// lock), and the caller rolls back at once.
pub async fn reserve<E: Exec>(
    e: &mut E,
    limits: &[Limit],
    now: OffsetDateTime,
) -> Result<Attempt, StoreError> {
    // PostgreSQL only: nodes share the database, so each key is locked for the transaction,
    // in a fixed order so two logins sharing keys cannot deadlock. SQLite's single writer
    // serialises the reservations already.
    if E::DIALECT == Dialect::Postgres {
        let mut ids: Vec<i64> = limits.iter().map(|l| lock_id(&l.key)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            e.run("SELECT pg_advisory_xact_lock($1)", args![id]).await?;
        }
    }
    let mut locked: Option<OffsetDateTime> = None;
    let mut remaining = u32::MAX;
    for limit in limits {
        let rows = e
            .all(
                "SELECT attempted_at FROM login_attempts \
                 WHERE throttle_key = $1 AND attempted_at > $2 ORDER BY attempted_at",
                args![&limit.key.0[..], now - limit.window],
            )
            .await?;
        let times = decode(&rows, attempted_at)?;
        let used = u32::try_from(times.len()).unwrap_or(u32::MAX);
        remaining = remaining.min(limit.max.saturating_sub(used).saturating_sub(1));
        if let Some(until) = locked_until(&times, limit.max, limit.window) {
            locked = Some(locked.map_or(until, |l| l.max(until)));
        }
    }
    if let Some(until) = locked {
        return Ok(Attempt::Locked { until });
    }
    let id = Uuid::now_v7();
    for limit in limits {
        e.run(
            "INSERT INTO login_attempts (attempt_id, throttle_key, attempted_at) \
             VALUES ($1, $2, $3)",
            args![id, &limit.key.0[..], now],
        )
        .await?;
    }
    Ok(Attempt::Reserved {
        id: AttemptId(id),
        remaining,
    })
}

/// The attempt succeeded: removes its rows and every earlier row of `clear` (the account).
pub async fn succeed<E: Exec>(
    e: &mut E,
    attempt: AttemptId,
    clear: &ThrottleKey,
) -> Result<(), StoreError> {
    e.run(
        "DELETE FROM login_attempts WHERE attempt_id = $1 OR throttle_key = $2",
        args![attempt.0, &clear.0[..]],
    )
    .await?;
    Ok(())
}

/// Removes only the attempt's own rows.
pub async fn forget<E: Exec>(e: &mut E, attempt: AttemptId) -> Result<(), StoreError> {
    e.run(
        "DELETE FROM login_attempts WHERE attempt_id = $1",
        args![attempt.0],
    )
    .await?;
    Ok(())
}

/// Removes rows older than `before`; answers how many.
pub async fn prune<E: Exec>(e: &mut E, before: OffsetDateTime) -> Result<u64, StoreError> {
    e.run(
        "DELETE FROM login_attempts WHERE attempted_at < $1",
        args![before],
    )
    .await
}
