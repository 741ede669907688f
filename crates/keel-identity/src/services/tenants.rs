//! Tenant use cases.

use std::sync::Arc;

use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::NewEvent,
    page::{Page, PageRequest},
};
use serde::Serialize;
use tracing::instrument;

use crate::{
    domain::{NewTenant, Tenant, TenantError, TenantSlug},
    ports::{TENANT_SLUG_CONSTRAINT, TenantStore},
};

/// Payload of `tenant.created`, version 1.
#[derive(Serialize)]
struct TenantCreatedV1<'a> {
    tenant_id: TenantId,
    slug: &'a str,
    name: &'a str,
}

/// Creates and reads tenants.
#[derive(Debug, Clone)]
pub struct TenantService {
    store: Arc<dyn TenantStore>,
    clock: Arc<dyn Clock>,
}

impl TenantService {
    pub fn new(store: Arc<dyn TenantStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Creates a tenant and records `tenant.created` with it.
    #[instrument(skip_all, fields(slug = %new.slug))]
    pub async fn create(&self, new: NewTenant) -> Result<Tenant, TenantError> {
        let tenant = Tenant {
            id: TenantId::new(),
            slug: new.slug,
            name: new.name,
            created_at: self.clock.now(),
        };
        let payload = TenantCreatedV1 {
            tenant_id: tenant.id,
            slug: tenant.slug.as_str(),
            name: tenant.name.as_str(),
        };
        let event = NewEvent::new(tenant.id, "tenant.created", &payload, tenant.created_at)
            .map_err(|e| TenantError::Store(StoreError::other(e)))?;
        match self.store.create(&tenant, &[event]).await {
            Ok(()) => Ok(tenant),
            Err(e) if e.is_conflict_on(TENANT_SLUG_CONSTRAINT) => {
                Err(TenantError::SlugTaken(tenant.slug))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, id: TenantId) -> Result<Tenant, TenantError> {
        Ok(self.store.get(id).await?)
    }

    pub async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, TenantError> {
        Ok(self.store.get_by_slug(slug).await?)
    }

    pub async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, TenantError> {
        Ok(self.store.list(page).await?)
    }
}
