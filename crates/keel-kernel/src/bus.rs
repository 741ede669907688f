//! Consumers of the event bus: each processes an event at most once (a processed-event table
//! keyed by consumer and event id), retries on an explicit schedule, and parks a poison event
//! in a dead-letter table after the last try, from where it can be re-driven.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    StoreError, TenantId,
    event::{EventId, RecordedEvent},
    page::{Page, PageRequest},
};

/// A parked event.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: uuid::Uuid,
    pub consumer: String,
    pub event: RecordedEvent,
    pub error: String,
    pub attempts: i64,
    pub created_at: OffsetDateTime,
}

#[async_trait]
pub trait ConsumerStore: Send + Sync + std::fmt::Debug {
    async fn is_processed(&self, consumer: &str, event: EventId) -> Result<bool, StoreError>;
    /// Records the event as processed by `consumer` (idempotent).
    async fn mark_processed(
        &self,
        consumer: &str,
        event: EventId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError>;
    /// Parked events, oldest first: of one tenant, or of all (an operator's view).
    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError>;
    /// One parked event; `NotFound` when it is not (or no longer) parked.
    async fn find_dead_letter(&self, id: uuid::Uuid) -> Result<DeadLetter, StoreError>;
    /// Removes a parked event once it is re-driven; `NotFound` when it is already gone.
    async fn remove_dead_letter(&self, id: uuid::Uuid) -> Result<(), StoreError>;
}

/// Publishes events to a bus (the relay's side).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Stores the event on the bus; a repeat of the same event must be harmless.
    async fn publish(&self, event: &RecordedEvent) -> Result<(), String>;
}
