//! Each shop's own rate limits (issue 23): the operator's ceilings and the owner's overrides;
//! and its quotas (the triggers of migration 21 enforce them).

use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    quota::Quota,
    ratelimit::{Limit, LimitScope, Policy, TenantLimits},
};

use crate::{
    args,
    exec::Exec,
    rows::{ReadRow, corrupt},
    store::tenants::insert_events,
};

pub async fn tenant_limits<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<TenantLimits, StoreError> {
    let rows = e
        .all(
            "SELECT scope, policy, interval_ms, burst FROM tenant_limits WHERE tenant_id = $1",
            args![tenant.as_uuid()],
        )
        .await?;
    let mut limits = TenantLimits::default();
    for r in &rows {
        let policy =
            Policy::parse(&r.text("policy")?).ok_or_else(|| corrupt("tenant_limits", "policy"))?;
        let limit = u64::try_from(r.int("interval_ms")?)
            .ok()
            .zip(u32::try_from(r.int("burst")?).ok())
            .and_then(|(i, b)| Limit::new(i, b))
            .ok_or_else(|| corrupt("tenant_limits", "limit"))?;
        match r.text("scope")?.as_str() {
            "ceiling" => limits.ceilings.insert(policy, limit),
            "override" => limits.overrides.insert(policy, limit),
            _ => return Err(corrupt("tenant_limits", "scope")),
        };
    }
    Ok(limits)
}

pub async fn set_tenant_limits<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    scope: LimitScope,
    changes: &[(Policy, Option<Limit>)],
    events: &[NewEvent],
) -> Result<(), StoreError> {
    for (policy, limit) in changes {
        match limit {
            Some(l) => {
                e.run(
                    "INSERT INTO tenant_limits (tenant_id, scope, policy, interval_ms, burst) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, scope, policy) \
                     DO UPDATE SET interval_ms = excluded.interval_ms, burst = excluded.burst",
                    args![
                        tenant.as_uuid(),
                        scope.name(),
                        policy.name(),
                        i64::try_from(l.interval_ms())
                            .map_err(|_| corrupt("tenant_limits", "interval_ms"))?,
                        l.burst()
                    ],
                )
                .await?;
            }
            None => {
                e.run(
                    "DELETE FROM tenant_limits WHERE tenant_id = $1 AND scope = $2 AND policy = $3",
                    args![tenant.as_uuid(), scope.name(), policy.name()],
                )
                .await?;
            }
        }
    }
    insert_events(e, events).await
}

/// The deployment's quota defaults, replaced whole.
pub async fn set_quota_defaults<E: Exec>(
    e: &mut E,
    defaults: &[(Quota, Option<u64>)],
) -> Result<(), StoreError> {
    for (quota, max) in defaults {
        match max {
            Some(max) => {
                let max = i64::try_from(*max).map_err(|_| corrupt("quota_defaults", "max"))?;
                e.run(
                    "INSERT INTO quota_defaults (quota, max) VALUES ($1, $2) \
                     ON CONFLICT (quota) DO UPDATE SET max = excluded.max",
                    args![quota.name(), max],
                )
                .await?;
            }
            None => {
                e.run(
                    "DELETE FROM quota_defaults WHERE quota = $1",
                    args![quota.name()],
                )
                .await?;
            }
        }
    }
    Ok(())
}

pub async fn quota_defaults<E: Exec>(e: &mut E) -> Result<Vec<(Quota, u64)>, StoreError> {
    let rows = e
        .all("SELECT quota, max FROM quota_defaults ORDER BY quota", &[])
        .await?;
    rows.iter().map(quota_row).collect()
}

fn quota_row(r: &impl ReadRow) -> Result<(Quota, u64), StoreError> {
    let quota = Quota::parse(&r.text("quota")?).ok_or_else(|| corrupt("quotas", "quota"))?;
    let max = u64::try_from(r.int("max")?).map_err(|_| corrupt("quotas", "max"))?;
    Ok((quota, max))
}

pub async fn tenant_quotas<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<Vec<(Quota, u64)>, StoreError> {
    let rows = e
        .all(
            "SELECT quota, max FROM tenant_quotas WHERE tenant_id = $1 ORDER BY quota",
            args![tenant.as_uuid()],
        )
        .await?;
    rows.iter().map(quota_row).collect()
}

pub async fn set_tenant_quotas<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    changes: &[(Quota, Option<u64>)],
    events: &[NewEvent],
) -> Result<(), StoreError> {
    for (quota, max) in changes {
        match max {
            Some(max) => {
                let max = i64::try_from(*max).map_err(|_| corrupt("tenant_quotas", "max"))?;
                e.run(
                    "INSERT INTO tenant_quotas (tenant_id, quota, max) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, quota) DO UPDATE SET max = excluded.max",
                    args![tenant.as_uuid(), quota.name(), max],
                )
                .await?;
            }
            None => {
                e.run(
                    "DELETE FROM tenant_quotas WHERE tenant_id = $1 AND quota = $2",
                    args![tenant.as_uuid(), quota.name()],
                )
                .await?;
            }
        }
    }
    insert_events(e, events).await
}
