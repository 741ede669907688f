//! Cluster mode's settings (`KEEL_CLUSTER__*`, issue 25, ADR 0041): the node's name and the
//! exact lease timing of scheduled jobs.

use serde::{Deserialize, Serialize};

use super::{ConfigError, err, settings::positive};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `KEEL_CLUSTER__NODE_ID`, default `<hostname>-<8 random hex digits>` at each start: the
    /// node's name in job leases, job runs, logs and invalidation messages (letters, digits,
    /// `.`, `_`, `-`; at most 64). Two running nodes must never share one.
    pub node_id: String,
    /// `KEEL_CLUSTER__LEASE_TTL_S`, default 30: how long a job's lease holds without renewal,
    /// so the longest a dead node keeps a scheduled job from the others.
    pub lease_ttl_s: u64,
    /// `KEEL_CLUSTER__LEASE_RENEW_S`, default 10: how often the holder renews (less than the
    /// lease time).
    pub lease_renew_s: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            lease_ttl_s: 30,
            lease_renew_s: 10,
        }
    }
}

/// What a node runs (`keel serve --role`, ADR 0041).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API and every background loop (the default; the only role embedded mode allows).
    #[default]
    All,
    /// The API only: no relay, deliveries or scheduled jobs (it still tails the bus for its
    /// realtime subscribers).
    Api,
    /// The relay, deliveries, bus consumers and scheduled jobs; HTTP serves only the probes
    /// and `/metrics`.
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }

    pub fn runs_background(self) -> bool {
        self != Self::Api
    }
}

/// The node's cluster settings, validated.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Set by `keel serve --role` (not a configuration key: a node's role is how it is run).
    pub role: Role,
    pub node_id: String,
    pub leases: keel_kernel::lease::LeaseTiming,
}

fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(40)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let mut b = [0_u8; 4];
    getrandom::fill(&mut b).expect("the OS random source is available");
    format!("{host}-{:08x}", u32::from_be_bytes(b))
}

pub(super) fn settings(raw: &RawCluster) -> Result<ClusterSettings, ConfigError> {
    let node_id = if raw.node_id.is_empty() {
        generated_node_id()
    } else {
        raw.node_id.clone()
    };
    if node_id.len() > 64
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(err(
            "KEEL_CLUSTER__NODE_ID",
            "must be at most 64 letters, digits, `.`, `_` or `-`",
        ));
    }
    let ttl = positive("KEEL_CLUSTER__LEASE_TTL_S", raw.lease_ttl_s)?;
    let renew = positive("KEEL_CLUSTER__LEASE_RENEW_S", raw.lease_renew_s)?;
    if renew >= ttl {
        return Err(err(
            "KEEL_CLUSTER__LEASE_RENEW_S",
            "must be less than KEEL_CLUSTER__LEASE_TTL_S (a holder renews before its lease lapses)",
        ));
    }
    if ttl > 86_400 {
        return Err(err("KEEL_CLUSTER__LEASE_TTL_S", "must be at most 86400"));
    }
    let secs = |s: u64| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    Ok(ClusterSettings {
        role: Role::All,
        node_id,
        leases: keel_kernel::lease::LeaseTiming {
            ttl: secs(ttl),
            renew: secs(renew),
        },
    })
}

impl super::Settings {
    /// The cluster settings as `keel config check` shows them.
    pub(super) fn cluster_json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.cluster.role,
            "node_id": self.cluster.node_id,
            "lease_ttl_s": self.cluster.leases.ttl.whole_seconds(),
            "lease_renew_s": self.cluster.leases.renew.whole_seconds(),
        })
    }
}
