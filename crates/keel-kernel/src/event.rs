//! Domain events and the transactional outbox.
//!
//! Every state change writes its events into the outbox table in the **same** transaction
//! (docs/architecture.md, "Events"): a port method that changes state takes the [`NewEvent`]s to write. The relay
//! that publishes them arrives with the events issue; [`EventLog`] reads a tenant's log.

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    StoreError, TenantId, define_id,
    page::{Page, PageRequest},
};

define_id!(
    /// One recorded domain event.
    EventId,
    "evt"
);

/// An event to record with a state change. The id and time are fixed when it is built so
/// that the relay can deduplicate re-publishes by id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub tenant_id: TenantId,
    /// Dotted, past tense, stable: `tenant.created`, `order.paid`.
    pub event_type: &'static str,
    /// The versioned payload, as stored and published.
    pub payload: serde_json::Value,
    pub occurred_at: OffsetDateTime,
}

impl NewEvent {
    /// Builds an event from a serializable payload.
    pub fn new(
        tenant_id: TenantId,
        event_type: &'static str,
        payload: &impl Serialize,
        occurred_at: OffsetDateTime,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: EventId::new(),
            tenant_id,
            event_type,
            payload: serde_json::to_value(payload)?,
            occurred_at,
        })
    }
}

/// An event as read back from the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub event_type: String,
    pub payload: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

/// A tenant's event log. Another tenant's events are invisible: `get` answers
/// [`StoreError::NotFound`] and `list` never includes them.
#[async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug {
    /// Records events that accompany no state change (e.g. `security.login_failed`), in one
    /// transaction. Events that accompany a change are written by that change's port method.
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError>;
    /// The tenant's events in order; with `type_prefix`, only types starting with it
    /// (e.g. `security.`).
    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError>;
    /// A stream's resume: the tenant's events after `last` in the order they reached live
    /// subscribers (the relay's numbering, which follows commit order), not the order they
    /// were created, so that nothing committed after `last` is missed and nothing before it
    /// comes again. Events not relayed yet are left out (a stream subscribed before its
    /// resume gets them live). When `last` is unknown (another shop's, pruned) or was relayed
    /// before numbering existed, the events after it in id order.
    async fn replay(
        &self,
        tenant: TenantId,
        last: EventId,
        filter: &ReplayFilter,
        limit: crate::page::Limit,
    ) -> Result<Page<RecordedEvent>, StoreError>;
}

/// Which events a resume replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFilter {
    /// The shop's events; with a prefix, only types starting with it (e.g. `order.`).
    Shop { type_prefix: Option<String> },
    /// One order's own events: `order.*`, `payment.*` and `refund.*` whose payload names it
    /// (`order_id`), found through the log's index on the order id.
    Order(String),
}
