//! Tenants and the event log on PostgreSQL (the statements: `keel_store_common::store::tenants`).

use async_trait::async_trait;
use keel_identity::{Tenant, TenantSlug, TenantStore};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, EventLog, NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use keel_store_common::store::tenants as shared;

use crate::PgStore;

#[async_trait]
impl TenantStore for PgStore {
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create(&mut tx, tenant, events))
    }

    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError> {
        shared::get(&mut self.pg(), id).await
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError> {
        shared::get_by_slug(&mut self.pg(), slug).await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
        shared::list(&mut self.pg(), page).await
    }
}

#[async_trait]
impl EventLog for PgStore {
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::insert_events(&mut tx, events))
    }

    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError> {
        shared::get_event(&mut self.pg(), tenant, id).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        shared::list_events(&mut self.pg(), tenant, page, type_prefix).await
    }

    async fn replay(
        &self,
        tenant: TenantId,
        last: EventId,
        filter: &keel_kernel::event::ReplayFilter,
        limit: keel_kernel::page::Limit,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        shared::replay_events(&mut self.pg(), tenant, last, filter, limit).await
    }
}

#[async_trait]
impl keel_kernel::ratelimit::TenantLimitStore for PgStore {
    async fn tenant_limits(
        &self,
        tenant: TenantId,
    ) -> Result<keel_kernel::ratelimit::TenantLimits, StoreError> {
        keel_store_common::store::limits::tenant_limits(&mut self.pg(), tenant).await
    }

    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        scope: keel_kernel::ratelimit::LimitScope,
        changes: &[(
            keel_kernel::ratelimit::Policy,
            Option<keel_kernel::ratelimit::Limit>,
        )],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| {
            keel_store_common::store::limits::set_tenant_limits(
                &mut tx, tenant, scope, changes, events,
            )
        })
    }
}

#[async_trait]
impl keel_kernel::quota::QuotaStore for PgStore {
    async fn set_quota_defaults(
        &self,
        defaults: &[(keel_kernel::quota::Quota, Option<u64>)],
    ) -> Result<(), StoreError> {
        use keel_store_common::store::limits as shared;
        in_tx!(self, |tx| shared::set_quota_defaults(&mut tx, defaults))
    }

    async fn quota_defaults(&self) -> Result<Vec<(keel_kernel::quota::Quota, u64)>, StoreError> {
        use keel_store_common::store::limits as shared;
        shared::quota_defaults(&mut self.pg()).await
    }

    async fn tenant_quotas(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(keel_kernel::quota::Quota, u64)>, StoreError> {
        use keel_store_common::store::limits as shared;
        shared::tenant_quotas(&mut self.pg(), tenant).await
    }

    async fn set_tenant_quotas(
        &self,
        tenant: TenantId,
        changes: &[(keel_kernel::quota::Quota, Option<u64>)],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        use keel_store_common::store::limits as shared;
        in_tx!(self, |tx| shared::set_tenant_quotas(
            &mut tx, tenant, changes, events
        ))
    }
}
