//! Storage port of the webhooks context.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::domain::{
    Attempt, Channel, DeliveryPolicy, Endpoint, EndpointId, Message, MessageId, MessageStatus,
};

/// The row changed since it was read.
pub const VERSION_CONFLICT: &str = "version_conflict";

/// Builds the messages of one event for the tenant's enabled endpoints (the relay's fan-out).
pub type FanOut<'a> = dyn Fn(&RecordedEvent, &[Endpoint]) -> Vec<Message> + Send + Sync + 'a;

/// Another account-notification endpoint exists for the shop (one per shop).
pub const ACCOUNT_ENDPOINT_EXISTS: &str = "webhook_endpoints_one_account";
/// The conflict of an endpoint beyond the shop's limit for its channel.
pub const ENDPOINT_LIMIT: &str = "webhook_endpoints_per_shop";

/// What an attempt changes, written with it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub status: MessageStatus,
    pub next_attempt_at: OffsetDateTime,
    /// The endpoint succeeded: it is no longer failing, and its circuit closes.
    pub endpoint_ok: bool,
    /// A failure that makes the endpoint's failures in a row reach `circuit_failures` opens
    /// its circuit until `open_until` (counted in the store, so concurrent attempts add up).
    pub circuit_failures: i64,
    pub open_until: OffsetDateTime,
    /// Disable the endpoint with this reason.
    pub disable: Option<String>,
    /// Drop the message's body: an account notification that was delivered or given up must
    /// not keep its one-time secret.
    pub drop_body: bool,
}

/// After an attempt, claim the same endpoint's next due message in the same transaction when
/// it has a free slot, so an endpoint's slots stay busy without waiting for the next poll.
#[derive(Debug, Clone, Copy)]
pub struct Refill<'a> {
    pub now: OffsetDateTime,
    pub lock_until: OffsetDateTime,
    pub policy: &'a DeliveryPolicy,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// Creates the endpoint unless its shop already has `max` endpoints of its channel
    /// (`Conflict { ENDPOINT_LIMIT }`, counted in the write so that concurrent creations
    /// cannot pass the limit together). A second account endpoint of a shop is also
    /// `Conflict { ACCOUNT_ENDPOINT_EXISTS }` (the schema's own guard).
    async fn create_endpoint(
        &self,
        e: &Endpoint,
        max: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// The endpoint, if it belongs to `channel` (another channel's is `NotFound`).
    async fn get_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
    ) -> Result<Endpoint, StoreError>;
    async fn list_endpoints(
        &self,
        tenant: TenantId,
        channel: Channel,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError>;
    /// Replaces the endpoint if its version is still `expected_version`.
    async fn update_endpoint(
        &self,
        e: &Endpoint,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Deletes the endpoint (of `channel`) with its messages and attempts.
    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
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
    /// The message, if its endpoint belongs to `channel`.
    async fn get_message(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: MessageId,
    ) -> Result<Message, StoreError>;
    /// A message's attempts, oldest first.
    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError>;
    /// Queues a delivered or failed webhook message again, at `now` (account notifications
    /// cannot be replayed: their bodies are gone).
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
    /// SKIP LOCKED`, so any number of nodes may run it), numbers them after the relay position
    /// in commit order (a stream resumes by that number), inserts the messages `fan_out`
    /// builds (at most one per endpoint and event, so a repeated relay adds nothing) and marks
    /// the events relayed, in one transaction. `fan_out` sees the events in number order.
    /// Answers how many events it relayed.
    async fn relay(
        &self,
        limit: i64,
        now: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError>;
    /// The relay with a bus: numbers up to `limit` unrelayed events in commit order; then
    /// publishes every numbered event not yet on the bus, in number order,
    /// one node at a time, and records how far it got; numbered events stay unrelayed until
    /// they are out. A publisher holds the position for at most `hold` (a frozen one loses it
    /// then). A publish failure leaves the rest for the next relay on any node (what went out
    /// unrecorded goes out again, and the bus drops the repeat). Answers how many events it
    /// numbered.
    async fn relay_via(
        &self,
        limit: i64,
        now: OffsetDateTime,
        publisher: &dyn keel_kernel::bus::EventPublisher,
        hold: std::time::Duration,
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
    /// Claims due messages (pending with `next_attempt_at <= now`, or delivering with a lapsed
    /// lock) as delivering until `lock_until`, **fairly per endpoint**: each endpoint gets at
    /// most its free slots ([`Endpoint::slots`] minus its deliveries in flight, on every node),
    /// whatever the backlog of the others; an endpoint whose circuit is open gets none. At most
    /// `limit` in all, every endpoint's first message before any endpoint's second.
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
        lock_until: OffsetDateTime,
        policy: &DeliveryPolicy,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError>;
    /// Records an attempt and its consequences for the message and the endpoint, with the
    /// events, in one transaction.
    /// With `refill`, claims the endpoint's next due message in the same transaction if the
    /// endpoint has a free slot after this attempt, and answers it.
    async fn record_attempt(
        &self,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
        refill: Option<Refill<'_>>,
    ) -> Result<Option<(Message, Endpoint)>, StoreError>;
    /// Gives up every pending message of an endpoint and drops their bodies (an account
    /// endpoint turned off: its one-time secrets must not wait to be sent one day). Answers
    /// how many.
    async fn abandon_pending(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Retention: deletes up to `limit` messages delivered or given up before `before`, with
    /// their attempts. A message still pending or delivering is never deleted. Answers how
    /// many messages went.
    async fn prune_messages(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError>;
}
