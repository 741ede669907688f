//! Storage ports of the identity context. Each method is one atomic use-case step:
//! the adapter opens and commits its own transaction, writing the given events with it.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};

use crate::domain::{Tenant, TenantSlug};

/// The canonical name of the unique constraint on tenant slugs, on every backend.
pub const TENANT_SLUG_CONSTRAINT: &str = "tenants_slug_key";

/// Tenants: the one table not scoped by a tenant, because it *is* the tenant list. Only the
/// operator's tooling writes it.
#[async_trait]
pub trait TenantStore: Send + Sync + std::fmt::Debug {
    /// Inserts the tenant and its events in one transaction. A taken slug is
    /// `Conflict { constraint: "tenants_slug_key" }` and writes nothing.
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError>;
    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError>;
    /// Tenants in creation order.
    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError>;
}
