//! Payments on SQLite (the statements: `keel_store_common::store::payments`).

use async_trait::async_trait;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_payments::{
    domain::ProviderKind,
    ports::{PaymentSession, PaymentStore, ProviderSettings},
};
use keel_store_common::store::payments as shared;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SqliteStore, db::now};

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn save_provider(
        &self,
        settings: &ProviderSettings,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::save_provider(e, settings, expected_version, events)))
            .await
    }

    async fn get_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderSettings, StoreError> {
        self.read(|e| now(shared::get_provider(e, tenant, provider)))
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderSettings>, StoreError> {
        self.read(|e| now(shared::list_providers(e, tenant)))
    }

    async fn create_session(
        &self,
        session: &PaymentSession,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create_session(e, session, events)))
            .await
    }

    async fn session_by_ref(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        provider_ref: &str,
    ) -> Result<PaymentSession, StoreError> {
        self.read(|e| now(shared::session_by_ref(e, tenant, provider, provider_ref)))
    }

    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        self.read(|e| now(shared::sessions_of_order(e, tenant, order_id)))
    }

    async fn unsettled_sessions(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        self.read(|e| now(shared::unsettled_sessions(e, before, limit)))
    }

    async fn record_provider_event(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        event_id: &str,
        event_type: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.tx(|e| {
            now(shared::record_provider_event(
                e, tenant, provider, event_id, event_type, at,
            ))
        })
        .await
    }
}
