//! Tenants and the event log on SQLite (the statements: `keel_store_common::store::tenants`).

use async_trait::async_trait;
use keel_identity::{Tenant, TenantSlug, TenantStore};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, EventLog, NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use keel_store_common::store::tenants as shared;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create(e, tenant, events))).await
    }

    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError> {
        self.read(|e| now(shared::get(e, id)))
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError> {
        self.read(|e| now(shared::get_by_slug(e, slug)))
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
        self.read(|e| now(shared::list(e, page)))
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        self.tx(|e| now(shared::insert_events(e, events))).await
    }

    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError> {
        self.read(|e| now(shared::get_event(e, tenant, id)))
    }

    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        self.read(|e| now(shared::list_events(e, tenant, page, type_prefix)))
    }

    async fn replay(
        &self,
        tenant: TenantId,
        last: EventId,
        filter: &keel_kernel::event::ReplayFilter,
        limit: keel_kernel::page::Limit,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        self.read(|e| now(shared::replay_events(e, tenant, last, filter, limit)))
    }
}

#[async_trait]
impl keel_kernel::ratelimit::TenantLimitStore for SqliteStore {
    async fn tenant_limits(
        &self,
        tenant: TenantId,
    ) -> Result<keel_kernel::ratelimit::TenantLimits, StoreError> {
        self.read(|e| now(keel_store_common::store::limits::tenant_limits(e, tenant)))
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
        self.tx(|e| {
            now(keel_store_common::store::limits::set_tenant_limits(
                e, tenant, scope, changes, events,
            ))
        })
        .await
    }
}

#[async_trait]
impl keel_kernel::quota::QuotaStore for SqliteStore {
    async fn set_quota_defaults(
        &self,
        defaults: &[(keel_kernel::quota::Quota, Option<u64>)],
    ) -> Result<(), StoreError> {
        use keel_store_common::store::limits as shared;
        self.tx(|e| now(shared::set_quota_defaults(e, defaults)))
            .await
    }

    async fn quota_defaults(&self) -> Result<Vec<(keel_kernel::quota::Quota, u64)>, StoreError> {
        use keel_store_common::store::limits as shared;
        self.read(|e| now(shared::quota_defaults(e)))
    }

    async fn tenant_quotas(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(keel_kernel::quota::Quota, u64)>, StoreError> {
        use keel_store_common::store::limits as shared;
        self.read(|e| now(shared::tenant_quotas(e, tenant)))
    }

    async fn set_tenant_quotas(
        &self,
        tenant: TenantId,
        changes: &[(keel_kernel::quota::Quota, Option<u64>)],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        use keel_store_common::store::limits as shared;
        self.tx(|e| now(shared::set_tenant_quotas(e, tenant, changes, events)))
            .await
    }
}
