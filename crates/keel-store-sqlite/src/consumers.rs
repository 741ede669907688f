//! Bus consumer bookkeeping on SQLite: processed events and dead letters (the statements:
//! `keel_store_common::store::consumers`).

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    bus::{ConsumerStore, DeadLetter},
    event::EventId,
    page::{Page, PageRequest},
};
use keel_store_common::store::consumers as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl ConsumerStore for SqliteStore {
    async fn is_processed(&self, consumer: &str, event: EventId) -> Result<bool, StoreError> {
        self.read(|e| now(shared::is_processed(e, consumer, event)))
    }

    async fn mark_processed(
        &self,
        consumer: &str,
        event: EventId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::mark_processed(e, consumer, event, at_time)))
            .await
    }

    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), StoreError> {
        self.tx(|e| now(shared::dead_letter(e, l))).await
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        self.read(|e| now(shared::dead_letters(e, tenant, page)))
    }

    async fn find_dead_letter(&self, id: uuid::Uuid) -> Result<DeadLetter, StoreError> {
        self.read(|e| now(shared::find_dead_letter(e, id)))
    }

    async fn remove_dead_letter(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        self.tx(|e| now(shared::remove_dead_letter(e, id))).await
    }
}
