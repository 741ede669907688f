//! Changes other nodes must hear about at once (issue 25, ADR 0041). A node keeps short-lived
//! copies of what it read (storefront answers, publishable keys, pricing setup, a shop's
//! limits, the signing key set), each with an exact time bound; a write through one node
//! drops its own copies at once and announces the change, so every other node drops them on
//! the next message rather than at the bound. The bound stays the fallback when the bus is down.

use crate::TenantId;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A shop's data changed: its cached storefront answers are stale. With `setup`, a staff
    /// member or secret key wrote (keys, pricing setup, limits may have changed too).
    Shop { tenant: TenantId, setup: bool },
    /// The signing key set changed (`keel keys rotate`).
    SigningKeys,
}

/// Where a node announces its changes (a bus, or nowhere in embedded mode).
pub trait ChangeFeed: Send + Sync + std::fmt::Debug {
    /// Announces `change` to the other nodes without waiting for them; a lost announcement
    /// leaves the exact time bounds to apply.
    fn announce(&self, change: Change);

    /// Counters for `/metrics` (announced, received, dropped).
    fn counters(&self) -> Vec<crate::health::StoreCounter> {
        Vec::new()
    }
}

/// The feed of a node alone (embedded mode): nothing to tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Alone;

impl ChangeFeed for Alone {
    fn announce(&self, _change: Change) {}
}
