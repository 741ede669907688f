//! API keys on SQLite (the statements: `keel_store_common::store::apikeys`).

use async_trait::async_trait;
use keel_identity::{
    domain::api_key::{ApiKey, ApiKeyId},
    ports::ApiKeyStore,
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use keel_store_common::store::apikeys as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey, events: &[NewEvent]) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create(e, key, events))).await
    }

    async fn find_api_key(&self, lookup: &str) -> Result<ApiKey, StoreError> {
        self.read(|e| now(shared::find(e, lookup)))
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, StoreError> {
        self.read(|e| now(shared::get(e, tenant, id)))
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ApiKey>, StoreError> {
        self.read(|e| now(shared::list(e, tenant, page)))
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::revoke(e, tenant, id, at_time, events)))
            .await
    }

    async fn rotate_api_key(
        &self,
        tenant: TenantId,
        old: ApiKeyId,
        old_expires_at: OffsetDateTime,
        new: &ApiKey,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::rotate(e, tenant, old, old_expires_at, new, events)))
            .await
    }

    async fn publishable_origin_allowed(
        &self,
        origin: &keel_identity::domain::api_key::Origin,
        at_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.read(|e| now(shared::publishable_origin_allowed(e, origin, at_time)))
    }

    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::touch(e, tenant, id, at_time)))
            .await
    }
}
