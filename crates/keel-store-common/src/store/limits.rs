//! Each shop's own rate limits (issue 23): the operator's ceilings and the owner's overrides.

use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
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
