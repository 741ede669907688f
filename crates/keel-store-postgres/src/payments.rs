//! Payments on PostgreSQL (the statements: `keel_store_common::store::payments`).

use async_trait::async_trait;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_orders::order::OrderId;
use keel_payments::{
    domain::ProviderKind,
    ports::{Applied, Effect, PaymentSession, PaymentStore, ProviderSettings, RefundTask},
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

    async fn open_session_of(
        &self,
        tenant: TenantId,
        order_id: Uuid,
        provider: ProviderKind,
    ) -> Result<Option<PaymentSession>, StoreError> {
        // A unique violation is reported only once the racing insert committed: a read now
        // sees it.
        shared::open_session_of(&mut self.pg(), tenant, order_id, provider).await
    }

    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        shared::sessions_of_order(&mut self.pg(), tenant, order_id).await
    }

    async fn due_sessions(
        &self,
        at: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        shared::due_sessions(&mut self.pg(), at, limit).await
    }

    async fn reschedule_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        next_check_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        // One statement: its own transaction.
        shared::reschedule_session(&mut self.pg(), tenant, id, next_check_at).await
    }

    async fn apply(&self, effect: &Effect<'_>) -> Result<Applied, StoreError> {
        let write = shared::EffectWrite::of(effect)?;
        in_tx!(self, |tx| shared::apply(&mut tx, &write))
    }

    async fn due_refunds(
        &self,
        at: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<RefundTask>, StoreError> {
        shared::due_refunds(&mut self.pg(), at, limit).await
    }

    async fn refunds_of_order(
        &self,
        tenant: TenantId,
        order_id: OrderId,
    ) -> Result<Vec<RefundTask>, StoreError> {
        shared::refunds_of_order(&mut self.pg(), tenant, order_id).await
    }
}
