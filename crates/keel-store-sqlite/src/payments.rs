//! Payments on SQLite (the statements: `keel_store_common::store::payments`).

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

    async fn open_session_of(
        &self,
        tenant: TenantId,
        order_id: Uuid,
        provider: ProviderKind,
    ) -> Result<Option<PaymentSession>, StoreError> {
        // On the writer: a racing session written in the same group commit is not visible
        // to readers until that commit, and this answer comes after it.
        self.tx(|e| now(shared::open_session_of(e, tenant, order_id, provider)))
            .await
    }

    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        self.read(|e| now(shared::sessions_of_order(e, tenant, order_id)))
    }

    async fn due_sessions(
        &self,
        at: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError> {
        self.read(|e| now(shared::due_sessions(e, at, limit)))
    }

    async fn reschedule_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        next_check_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::reschedule_session(e, tenant, id, next_check_at)))
            .await
    }

    async fn apply(&self, effect: &Effect<'_>) -> Result<Applied, StoreError> {
        let write = shared::EffectWrite::of(effect)?;
        self.tx(|e| now(shared::apply(e, &write))).await
    }

    async fn due_refunds(
        &self,
        at: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<RefundTask>, StoreError> {
        self.read(|e| now(shared::due_refunds(e, at, limit)))
    }

    async fn refunds_of_order(
        &self,
        tenant: TenantId,
        order_id: OrderId,
    ) -> Result<Vec<RefundTask>, StoreError> {
        self.read(|e| now(shared::refunds_of_order(e, tenant, order_id)))
    }
}
