//! Storage port of the webhooks context.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::domain::{Attempt, Endpoint, EndpointId, Message, MessageId, MessageStatus};

/// The row changed since it was read.
pub const VERSION_CONFLICT: &str = "version_conflict";

/// Builds the messages of one event for the tenant's enabled endpoints (the relay's fan-out).
pub type FanOut<'a> = dyn Fn(&RecordedEvent, &[Endpoint]) -> Vec<Message> + Send + Sync + 'a;

/// What an attempt changes, written with it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub status: MessageStatus,
    pub next_attempt_at: OffsetDateTime,
    /// The endpoint succeeded: it is no longer failing.
    pub endpoint_ok: bool,
    /// Disable the endpoint with this reason.
    pub disable: Option<String>,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    async fn create_endpoint(&self, e: &Endpoint, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<Endpoint, StoreError>;
    async fn list_endpoints(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError>;
    /// Replaces the endpoint if its version is still `expected_version`.
    async fn update_endpoint(
        &self,
        e: &Endpoint,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Deletes the endpoint with its messages and attempts.
    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// An endpoint's messages, newest first.
    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError>;
    async fn get_message(&self, tenant: TenantId, id: MessageId) -> Result<Message, StoreError>;
    /// A message's attempts, oldest first.
    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError>;
    /// Queues a delivered or failed message again, at `now`.
    async fn replay_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Queues every failed message of an endpoint created at or after `since`; answers how many.
    async fn replay_failed_since(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        since: OffsetDateTime,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<u64, StoreError>;

    /// The relay: takes up to `limit` events not yet relayed (on PostgreSQL with `FOR UPDATE
    /// SKIP LOCKED`, so any number of nodes may run it), inserts the messages `fan_out` builds
    /// (at most one per endpoint and event, so a repeated relay adds nothing) and marks the
    /// events relayed, in one transaction. Answers how many events it relayed.
    async fn relay(
        &self,
        limit: i64,
        now: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError>;
    /// The relay with a bus: takes up to `limit` unrelayed events (on PostgreSQL with `FOR
    /// UPDATE SKIP LOCKED`), publishes each and marks them relayed, in one transaction; a
    /// publish failure rolls the batch back (what was published is published again later, and
    /// the bus drops the repeat). Answers how many events it relayed.
    async fn relay_via(
        &self,
        limit: i64,
        now: OffsetDateTime,
        publisher: &dyn keel_kernel::bus::EventPublisher,
    ) -> Result<usize, StoreError>;
    /// Retention: deletes up to `limit` relayed events that occurred before `before`, and up
    /// to `limit` consumers' processed-event rows older than it. Unrelayed events are never
    /// deleted. Answers how many rows went.
    async fn prune_events(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError>;
    /// A bus consumer's side of the fan-out: inserts the messages `fan_out` builds for one
    /// event (at most one per endpoint and event). Answers how many were new.
    async fn accept_event(
        &self,
        event: &RecordedEvent,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError>;
    /// Claims up to `limit` due messages (pending, `next_attempt_at <= now`, their endpoint
    /// enabled and under `max_in_flight` deliveries) as delivering until `lock_until`; a
    /// delivering message whose lock passed (its worker died) is due again.
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
        max_in_flight: i64,
        lock_until: OffsetDateTime,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError>;
    /// Records an attempt and its consequences for the message and the endpoint, with the
    /// events, in one transaction.
    async fn record_attempt(
        &self,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}
