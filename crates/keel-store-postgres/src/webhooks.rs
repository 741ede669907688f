//! Webhook endpoints, messages, attempts and the outbox relay on PostgreSQL (the statements:
//! `keel_store_common::store::webhooks`). Each write, the relay and each claim is one
//! transaction.

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
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::{PgStore, error::map_err, exec::Raw};

/// Queues an account notice for the shop's enabled account-notification endpoint, if it has
/// one (written in the caller's transaction, with the token it carries).
pub(crate) async fn queue_notice(
    tx: &mut PgConnection,
    tenant: TenantId,
    notice: &AccountNotice,
) -> Result<(), StoreError> {
    shared::queue_notice(&mut Raw(tx), tenant, notice).await
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        max: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_endpoint(
            &mut tx, endpoint, max, events
        ))
    }

    async fn get_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
    ) -> Result<Endpoint, StoreError> {
        shared::get_endpoint(&mut self.pg(), tenant, channel, id).await
    }

    async fn list_endpoints(
        &self,
        tenant: TenantId,
        channel: Channel,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, StoreError> {
        shared::list_endpoints(&mut self.pg(), tenant, channel, page).await
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::update_endpoint(
            &mut tx,
            endpoint,
            expected_version,
            events
        ))
    }

    async fn delete_endpoint(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: EndpointId,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::delete_endpoint(
            &mut tx, tenant, channel, id, events
        ))
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        shared::list_messages(&mut self.pg(), tenant, endpoint, page).await
    }

    async fn get_message(
        &self,
        tenant: TenantId,
        channel: Channel,
        id: MessageId,
    ) -> Result<Message, StoreError> {
        shared::get_message(&mut self.pg(), tenant, channel, id).await
    }

    async fn list_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, StoreError> {
        shared::list_attempts(&mut self.pg(), tenant, message, page).await
    }

    async fn replay_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::replay_message(
            &mut tx, tenant, id, now, events
        ))
    }

    async fn replay_failed_since(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        since: OffsetDateTime,
        now: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<u64, StoreError> {
        in_tx!(self, |tx| shared::replay_failed_since(
            &mut tx, tenant, endpoint, since, now, events
        ))
    }

    async fn relay(
        &self,
        limit: i64,
        now: OffsetDateTime,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        // Shops without endpoints in one statement (issue 25: a pass per commit was five
        // statements); then, whenever events of shops with endpoints wait, a batch of those in
        // the transaction, so neither kind can starve the other. A pass relays up to `limit`
        // of each.
        let quiet = relay::relay_quiet(&mut self.pg(), limit, now, fan_out).await?;
        if !quiet.more {
            return Ok(quiet.relayed);
        }
        // A failure here leaves the events of shops with endpoints for the next pass. The ones
        // the statement above relayed are committed and numbered: they are answered (the
        // caller hands exactly that many of what `fan_out` saw to its subscribers), and the
        // failure is logged here.
        match in_tx!(self, |tx| relay::relay(&mut tx, limit, now, fan_out)) {
            Ok(rest) => Ok(quiet.relayed + rest),
            Err(err) if quiet.relayed > 0 => {
                tracing::warn!(error = %err, "relaying the events of shops with webhook endpoints failed");
                Ok(quiet.relayed)
            }
            Err(err) => Err(err),
        }
    }

    async fn relay_via(
        &self,
        limit: i64,
        now: OffsetDateTime,
        publisher: &dyn EventPublisher,
        hold: std::time::Duration,
    ) -> Result<usize, StoreError> {
        // Numbered in commit order in one statement; then whatever is numbered and not yet on
        // the bus goes out in number order, one publisher at a time (the position row locked,
        // for at most `hold`), and what went out is recorded, also when the bus failed
        // mid-way. The rest waits for the next pass, whichever node makes it; what went out
        // unrecorded goes out again and the bus drops the repeat.
        let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        let numbered = relay::number(&mut self.pg(), limit).await?;
        if !numbered.pending {
            return Ok(numbered.relayed);
        }
        loop {
            let mut tx = self.begin().await?;
            let events = relay::to_publish(&mut tx, limit, hold_ms).await?;
            let (out, failure) = relay::publish_in_order(&events, publisher, hold).await;
            if let (Some(from), Some(to)) = (events.first().map(|(s, _)| *s), out) {
                relay::published(&mut tx, from, to, now).await?;
            }
            tx.commit().await.map_err(map_err)?;
            if let Some(err) = failure {
                return Err(StoreError::unavailable(std::io::Error::other(err)));
            }
            if i64::try_from(events.len()).unwrap_or(i64::MAX) < limit {
                return Ok(numbered.relayed);
            }
        }
    }

    async fn prune_events(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        in_tx!(self, |tx| relay::prune_events(&mut tx, before, limit))
    }

    async fn accept_event(
        &self,
        event: &RecordedEvent,
        fan_out: &FanOut<'_>,
    ) -> Result<usize, StoreError> {
        in_tx!(self, |tx| relay::accept_event(&mut tx, event, fan_out))
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
        lock_until: OffsetDateTime,
        policy: &DeliveryPolicy,
    ) -> Result<Vec<(Message, Endpoint)>, StoreError> {
        let cap = usize::try_from(limit).unwrap_or(0);
        if cap == 0 {
            return Ok(Vec::new());
        }
        in_tx!(self, |tx| deliveries::claim_due(
            &mut tx, now, cap, lock_until, policy
        ))
    }

    async fn record_attempt(
        &self,
        attempt: &Attempt,
        outcome: &AttemptOutcome,
        events: &[NewEvent],
        refill: Option<Refill<'_>>,
    ) -> Result<Option<(Message, Endpoint)>, StoreError> {
        in_tx!(self, |tx| deliveries::record_attempt(
            &mut tx, attempt, outcome, events, refill
        ))
    }

    async fn abandon_pending(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        shared::abandon_pending(&mut self.pg(), tenant, endpoint, at).await
    }

    async fn prune_messages(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        in_tx!(self, |tx| shared::prune_messages(&mut tx, before, limit))
    }
}
