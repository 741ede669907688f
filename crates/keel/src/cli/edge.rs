//! `keel tenant limits` and `keel tenant quotas`: the operator's per-shop edge settings.

use std::collections::BTreeMap;

use anyhow::Context as _;
use keel::{Settings, Store};
use keel_kernel::{
    TenantId,
    quota::Quota,
    ratelimit::{Limit as RateLimit, LimitScope, Policy},
};

pub(crate) fn parse_quota_name(s: &str) -> Result<Quota, String> {
    Quota::parse(s).ok_or_else(|| {
        format!(
            "not a quota; one of {}",
            Quota::ALL.map(Quota::name).join(", ")
        )
    })
}

pub(crate) fn parse_quota(s: &str) -> Result<(Quota, u64), String> {
    let (quota, max) = s
        .split_once('=')
        .ok_or("expected QUOTA=N, such as products=5000")?;
    let max = max
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or("N must be a whole number")?;
    Ok((parse_quota_name(quota.trim())?, max))
}

pub(crate) fn parse_policy(s: &str) -> Result<Policy, String> {
    Policy::parse(s).ok_or_else(|| {
        format!(
            "not a shop's policy; one of {}",
            Policy::ALL.map(Policy::name).join(", ")
        )
    })
}

pub(crate) fn parse_ceiling(s: &str) -> Result<(Policy, RateLimit), String> {
    let (policy, limit) = s
        .split_once('=')
        .ok_or("expected POLICY=INTERVAL_MS/BURST, such as checkout=3000/20")?;
    let (interval, burst) = limit
        .split_once('/')
        .ok_or("expected POLICY=INTERVAL_MS/BURST, such as checkout=3000/20")?;
    let limit = interval
        .trim()
        .parse()
        .ok()
        .zip(burst.trim().parse().ok())
        .and_then(|(i, b)| RateLimit::bounded(i, b))
        .ok_or(
            "INTERVAL_MS and BURST must be whole numbers of at least 1, their product below 2^52",
        )?;
    Ok((parse_policy(policy.trim())?, limit))
}

/// What to set (`Some`) and what to clear (`None`), as one list of changes.
fn changes<K, V>(set: Vec<(K, V)>, clear: Vec<K>) -> Vec<(K, Option<V>)> {
    set.into_iter()
        .map(|(k, v)| (k, Some(v)))
        .chain(clear.into_iter().map(|k| (k, None)))
        .collect()
}

/// The shop, or an error naming it when there is none.
async fn existing(store: &Store, tenant: TenantId) -> anyhow::Result<()> {
    store
        .tenants()
        .get(tenant)
        .await
        .map(drop)
        .with_context(|| format!("no tenant {tenant}"))
}

/// An audit event of the operator's change to a shop.
fn operator_event(
    tenant: TenantId,
    event_type: &'static str,
    what: &str,
    change: serde_json::Value,
) -> anyhow::Result<keel_kernel::event::NewEvent> {
    let mut payload = serde_json::json!({"actor": {"kind": "operator"}});
    payload[what] = change;
    Ok(keel_kernel::event::NewEvent::new(
        tenant,
        event_type,
        &payload,
        time::OffsetDateTime::now_utc(),
    )?)
}

/// `keel tenant quotas`: sets the shop's own quotas asked for (with an audit event), then
/// prints the quotas that hold for it.
pub(crate) async fn tenant_quotas(
    store: &Store,
    tenant: TenantId,
    (set, clear): (Vec<(Quota, u64)>, Vec<Quota>),
    json: bool,
) -> anyhow::Result<()> {
    existing(store, tenant).await?;
    let quotas = store.quotas();
    let changes = changes(set, clear);
    if !changes.is_empty() {
        let event = operator_event(
            tenant,
            "tenant.quotas_changed",
            "quotas",
            serde_json::json!(
                changes
                    .iter()
                    .map(|(q, n)| (q.name(), *n))
                    .collect::<BTreeMap<_, _>>()
            ),
        )?;
        quotas
            .set_tenant_quotas(tenant, &changes, &[event])
            .await
            .context("cannot set the quotas")?;
    }
    let own: BTreeMap<Quota, u64> = quotas
        .tenant_quotas(tenant)
        .await
        .context("cannot read the shop's quotas")?
        .into_iter()
        .collect();
    // The defaults the nodes wrote (not this command's own configuration).
    let defaults: BTreeMap<Quota, u64> = quotas
        .quota_defaults()
        .await
        .context("cannot read the quota defaults")?
        .into_iter()
        .collect();
    let rows: Vec<(Quota, Option<u64>, bool)> = Quota::ALL
        .into_iter()
        .map(|q| match own.get(&q) {
            Some(n) => (q, Some(*n), true),
            None => (q, defaults.get(&q).copied(), false),
        })
        .collect();
    if json {
        let out: BTreeMap<_, _> = rows
            .iter()
            .map(|(q, max, shop)| (q.name(), serde_json::json!({"max": max, "shop_own": shop})))
            .collect();
        println!(
            "{}",
            serde_json::json!({"tenant_id": tenant, "quotas": out})
        );
    } else {
        println!("{:<18} {:<12} SOURCE", "QUOTA", "MAX");
        for (q, max, shop) in rows {
            let max = max.map_or_else(|| "none".to_owned(), |n| n.to_string());
            println!(
                "{:<18} {:<12} {}",
                q.name(),
                max,
                if shop { "shop" } else { "default" }
            );
        }
    }
    Ok(())
}

/// `keel tenant limits`: sets the ceilings asked for (with an audit event), then prints the
/// shop's limits as every node applies them.
pub(crate) async fn tenant_limits(
    settings: &Settings,
    store: &Store,
    tenant: TenantId,
    (ceilings, clear, clear_override): (Vec<(Policy, RateLimit)>, Vec<Policy>, Vec<Policy>),
    json: bool,
) -> anyhow::Result<()> {
    existing(store, tenant).await?;
    let limits = store.tenant_limits();
    let changes = changes(ceilings, clear);
    if !changes.is_empty() {
        let event = operator_event(
            tenant,
            "tenant.limit_ceilings_changed",
            "ceilings",
            serde_json::json!(changes.iter().map(|(p, l)| (p.name(), l.map(|l| serde_json::json!({"interval_ms": l.interval_ms(), "burst": l.burst()})))).collect::<BTreeMap<_, _>>()),
        )?;
        limits
            .set_tenant_limits(tenant, LimitScope::Ceiling, &changes, &[event])
            .await
            .context("cannot set the ceilings")?;
    }
    if !clear_override.is_empty() {
        let changes: Vec<(Policy, Option<RateLimit>)> =
            clear_override.iter().map(|p| (*p, None)).collect();
        let event = operator_event(
            tenant,
            "tenant.limit_overrides_cleared",
            "policies",
            serde_json::json!(clear_override.iter().map(|p| p.name()).collect::<Vec<_>>()),
        )?;
        limits
            .set_tenant_limits(tenant, LimitScope::Override, &changes, &[event])
            .await
            .context("cannot clear the overrides")?;
    }
    let shop = limits
        .tenant_limits(tenant)
        .await
        .context("cannot read the shop's limits")?;
    let one =
        |l: RateLimit| serde_json::json!({"interval_ms": l.interval_ms(), "burst": l.burst()});
    let rows: Vec<_> = Policy::ALL
        .into_iter()
        .map(|p| {
            let default = settings.limits.default_for(p);
            (
                p,
                shop.ceiling(p, default),
                shop.effective(p, default),
                shop.overrides.get(&p).copied(),
            )
        })
        .collect();
    if json {
        let out: BTreeMap<_, _> = rows
            .iter()
            .map(|(p, ceiling, effective, own)| {
                (p.name(), serde_json::json!({"ceiling": one(*ceiling), "effective": one(*effective), "override": own.map(one)}))
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"tenant_id": tenant, "rate_limits": out})
        );
    } else {
        println!(
            "{:<18} {:<22} {:<22} OWNER'S OVERRIDE",
            "POLICY", "CEILING", "EFFECTIVE"
        );
        let text = |l: RateLimit| format!("{} ms / {}", l.interval_ms(), l.burst());
        for (p, ceiling, effective, own) in rows {
            println!(
                "{:<18} {:<22} {:<22} {}",
                p.name(),
                text(ceiling),
                text(effective),
                own.map_or_else(
                    || "-".to_owned(),
                    |l| if l.within(ceiling) {
                        text(l)
                    } else {
                        format!("{} (above the ceiling: ignored)", text(l))
                    }
                )
            );
        }
    }
    Ok(())
}
