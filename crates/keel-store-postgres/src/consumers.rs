//! Bus consumer bookkeeping on PostgreSQL: processed events and dead letters (the statements:
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

use crate::PgStore;

#[async_trait]
impl ConsumerStore for PgStore {
    async fn is_processed(&self, consumer: &str, event: EventId) -> Result<bool, StoreError> {
        shared::is_processed(&mut self.pg(), consumer, event).await
    }

    async fn mark_processed(
        &self,
        consumer: &str,
        event: EventId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::mark_processed(
            &mut tx, consumer, event, at_time
        ))
    }

    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::dead_letter(&mut tx, l))
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        shared::dead_letters(&mut self.pg(), tenant, page).await
    }

    async fn find_dead_letter(&self, id: uuid::Uuid) -> Result<DeadLetter, StoreError> {
        shared::find_dead_letter(&mut self.pg(), id).await
    }

    async fn remove_dead_letter(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::remove_dead_letter(&mut tx, id))
    }
}
