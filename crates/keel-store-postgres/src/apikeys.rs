//! API keys on PostgreSQL (the statements: `keel_store_common::store::apikeys`).

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

use crate::PgStore;

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn create_api_key(&self, key: &ApiKey, events: &[NewEvent]) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create(&mut tx, key, events))
    }

    async fn find_api_key(&self, lookup: &str) -> Result<ApiKey, StoreError> {
        shared::find(&mut self.pg(), lookup).await
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, StoreError> {
        shared::get(&mut self.pg(), tenant, id).await
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ApiKey>, StoreError> {
        shared::list(&mut self.pg(), tenant, page).await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::revoke(
            &mut tx, tenant, id, at_time, events
        ))
    }

    async fn rotate_api_key(
        &self,
        tenant: TenantId,
        old: ApiKeyId,
        old_expires_at: OffsetDateTime,
        new: &ApiKey,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::rotate(
            &mut tx,
            tenant,
            old,
            old_expires_at,
            new,
            events
        ))
    }

    async fn publishable_origin_allowed(
        &self,
        origin: &keel_identity::domain::api_key::Origin,
        at_time: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        shared::publishable_origin_allowed(&mut self.pg(), origin, at_time).await
    }

    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::touch(&mut tx, tenant, id, at_time))
    }
}
