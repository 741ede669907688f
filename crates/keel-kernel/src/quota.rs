//! Quotas per shop (issue 23): exact counts of what a shop may hold, enforced by the store
//! where the rows are written (so concurrent writes never pass them). A shop's own quota, set
//! by the operator, holds; else the deployment's default; else none.

use crate::{StoreError, TenantId, event::NewEvent};

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quota {
    Products,
    Variants,
    StockLocations,
    WebhookEndpoints,
    /// Keys not revoked.
    ApiKeys,
    /// Staff members not disabled.
    StaffUsers,
    OpenCarts,
}

impl Quota {
    pub const ALL: [Self; 7] = [
        Self::Products,
        Self::Variants,
        Self::StockLocations,
        Self::WebhookEndpoints,
        Self::ApiKeys,
        Self::StaffUsers,
        Self::OpenCarts,
    ];

    /// The name in configuration, the CLI, problems and storage.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Products => "products",
            Self::Variants => "variants",
            Self::StockLocations => "stock_locations",
            Self::WebhookEndpoints => "webhook_endpoints",
            Self::ApiKeys => "api_keys",
            Self::StaffUsers => "staff_users",
            Self::OpenCarts => "open_carts",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where quotas are kept.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync + std::fmt::Debug {
    /// Replaces the deployment's defaults (`None`: no quota).
    async fn set_quota_defaults(&self, defaults: &[(Quota, Option<u64>)])
    -> Result<(), StoreError>;

    /// The deployment's defaults as the nodes wrote them.
    async fn quota_defaults(&self) -> Result<Vec<(Quota, u64)>, StoreError>;

    /// The shop's own quotas.
    async fn tenant_quotas(&self, tenant: TenantId) -> Result<Vec<(Quota, u64)>, StoreError>;

    /// Sets (`Some`) or removes (`None`) the shop's own quotas, with the events, in one
    /// transaction.
    async fn set_tenant_quotas(
        &self,
        tenant: TenantId,
        changes: &[(Quota, Option<u64>)],
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_refusal_names_its_quota() {
        for q in Quota::ALL {
            let e = StoreError::quota_in(&format!("quota_exceeded:{q}"));
            assert!(matches!(e, Some(StoreError::QuotaExceeded { quota }) if quota == q.name()));
        }
        assert!(StoreError::quota_in("quota_exceeded:unknown").is_none());
        assert!(StoreError::quota_in("unique constraint").is_none());
        assert!(
            StoreError::quota_in("value 'quota_exceeded:products' too long").is_none(),
            "only the whole message"
        );
    }
}
