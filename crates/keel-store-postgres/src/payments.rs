//! Payments on PostgreSQL (the statements: `keel_store_common::store::payments`).

use async_trait::async_trait;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_payments::{
    domain::ProviderKind,
    ports::{PaymentSession, PaymentStore, ProviderSettings},
};
use keel_store_common::store::payments as shared;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PgStore;

#[async_trait]
impl PaymentStore for PgStore {
    async fn save_provider(
        &self,
        settings: &ProviderSettings,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::save_provider(
            &mut tx,
            settings,
            expected_version,
            events
        ))
    }

    async fn get_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderSettings, StoreError> {
        shared::get_provider(&mut self.pg(), tenant, provider).await
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderSettings>, StoreError> {
        shared::list_providers(&mut self.pg(), tenant).await
    }

    async fn create_session(
        &self,
        session: &PaymentSession,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_session(&mut tx, session, events))
    }

    async fn session_by_ref(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        provider_ref: &str,
    ) -> Result<PaymentSession, StoreError> {
        shared::session_by_ref(&mut self.pg(), tenant, provider, provider_ref).await
    }

    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        shared::sessions_of_order(&mut self.pg(), tenant, order_id).await
    }

    async fn unsettled_sessions(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        shared::unsettled_sessions(&mut self.pg(), before, limit).await
    }

    async fn record_provider_event(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        event_id: &str,
        event_type: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // One statement: its own transaction.
        shared::record_provider_event(&mut self.pg(), tenant, provider, event_id, event_type, at)
            .await
    }
}
