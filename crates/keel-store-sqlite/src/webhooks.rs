//! Webhook endpoints, messages, attempts and the outbox relay on SQLite (the statements:
//! `keel_store_common::store::webhooks`). What stays here is how SQLite runs them: the relay
//! and the claims read on a reader, outside the single writer's lock, and write under it.

use async_trait::async_trait;
use keel_identity::domain::notice::AccountNotice;
use keel_kernel::{
    StoreError, TenantId,
    bus::EventPublisher,
    event::{NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use keel_store_common::store::webhooks::{self as shared, deliveries, relay};
use keel_webhooks::{
    domain::{Attempt, Channel, DeliveryPolicy, Endpoint, EndpointId, Message, MessageId},
    ports::{AttemptOutcome, FanOut, Refill, WebhookStore},
};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::{Lite, now};

/// Queues an account notice for the shop's enabled account-notification endpoint, if it has
/// one (written in the caller's transaction, with the token it carries).
pub(crate) fn queue_notice(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    notice: &AccountNotice,
) -> Result<(), StoreError> {
    now(shared::queue_notice(&mut Lite(tx), tenant, notice))
}

// The methods name the time `at`: `now` runs the shared statements.
#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        max: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create_endpoint(e, endpoint, max, events)))
            .await
    }

    async fn get_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
    ) -> Result<Endpoint, StoreError> {
        self.read(|e| now(shared::get_endpoint(e, tenant, channel, id)))
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        channel: Channel,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        self.read(|e| now(shared::list_endpoints(e, tenant, channel, page)))
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::update_endpoint(
                e,
                endpoint,
                expected_version,
                events,
            ))
        })
        .await
    }

    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::delete_endpoint(e, tenant, channel, id, events)))
            .await
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        self.read(|e| now(shared::list_messages(e, tenant, endpoint, page)))
    }

    async fn get_message(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: MessageId,
    ) -> Result<Message, StoreError> {
        self.read(|e| now(shared::get_message(e, tenant, channel, id)))
    }

    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError> {
        self.read(|e| now(shared::list_attempts(e, tenant, message, page)))
    }

    async fn replay_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::replay_message(e, tenant, id, at, events)))
            .await
    }

    async fn replay_failed_since(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        since: OffsetDateTime,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<u64, StoreError> {
        self.tx(|e| {
            now(shared::replay_failed_since(
                e, tenant, endpoint, since, at, events,
            ))
        })
        .await
    }

    async fn relay(
        &self,
        limit: i64,
        at: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        // The events and their shops' endpoints are read outside the write lock, so the single
        // writer is held only for the mark and the messages, and not at all when nothing
        // waits (the relay is woken after every write). The mark is conditional and answers
        // the events it marked: only those fan out, so an event is relayed once even if two
        // relays read it.
        let batch = self.read(|e| now(relay::read_batch(e, limit)))?;
        if batch.is_empty() {
            return Ok(0);
        }
        self.tx(|e| now(relay::write_batch(e, &batch, at, fan_out)))
            .await
    }

    async fn relay_via(
        &self,
        limit: i64,
        at: OffsetDateTime,
        publisher: &dyn EventPublisher,
        hold: std::time::Duration,
    ) -> Result<usize, StoreError> {
        // One process owns an embedded database, so one relay reads it. The events are read
        // outside the write lock and numbered by the writer (they stay unrelayed); then what is
        // numbered and not yet on the bus is published in number order outside the write lock
        // (a slow bus must not stall every request's commit), and what went out is recorded. A
        // crash in between publishes again; the bus drops the repeat by its id.
        let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        let events = self.read(|e| now(relay::unrelayed(e, limit)))?;
        let relayed = if events.is_empty() {
            0
        } else {
            self.tx(|e| now(relay::number_for_bus(e, &events, at)))
                .await?
        };
        loop {
            let out = self.read(|e| now(relay::to_publish(e, limit, hold_ms)))?;
            let (last, failure) = relay::publish_in_order(&out, publisher, hold).await;
            if let (Some(from), Some(to)) = (out.first().map(|(s, _)| *s), last) {
                self.tx(|e| now(relay::published(e, from, to, at))).await?;
            }
            if let Some(err) = failure {
                return Err(StoreError::unavailable(std::io::Error::other(err)));
            }
            if i64::try_from(out.len()).unwrap_or(i64::MAX) < limit {
                return Ok(relayed);
            }
        }
    }

    async fn prune_events(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        self.tx(|e| now(relay::prune_events(e, before, limit)))
            .await
    }

    async fn accept_event(
        &self,
        event: &RecordedEvent,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        self.tx(|e| now(relay::accept_event(e, event, fan_out)))
            .await
    }

    async fn claim_due(
        &self,
        at: OffsetDateTime,
        limit: i64,
        lock_until: OffsetDateTime,
        policy: &DeliveryPolicy,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError> {
        let cap = usize::try_from(limit).unwrap_or(0);
        if cap == 0 {
            return Ok(Vec::new());
        }
        // Which endpoints have something due, the one waiting longest first, is read outside
        // the write lock (one writer); everything is read again under it.
        let waiting = self.read(|e| now(deliveries::waiting_endpoints(e, at)))?;
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        self.tx(|e| {
            now(deliveries::claim_waiting(
                e, &waiting, at, cap, lock_until, policy,
            ))
        })
        .await
    }

    async fn record_attempt(
        &self,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
        refill: Option<Refill<'_>>,
    ) -> Result<Option<(Message, Endpoint)>, StoreError> {
        self.tx(|e| {
            now(deliveries::record_attempt(
                e, attempt, outcome, events, refill,
            ))
        })
        .await
    }

    async fn abandon_pending(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::abandon_pending(e, tenant, endpoint, at)))
            .await
    }

    async fn prune_messages(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::prune_messages(e, before, limit)))
            .await
    }
}
