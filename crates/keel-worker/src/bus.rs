//! The NATS JetStream event bus: events published on `keel.events.<tenant>.<type>` with the
//! event id as `Nats-Msg-Id` (JetStream drops a re-publish inside the duplicate window), and
//! durable pull consumers that process each event at most once, retry on an explicit schedule
//! and park a poison event in the dead-letter table after the last try.

use std::{sync::Arc, time::Duration as StdDuration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt as _;
use keel_kernel::{
    bus::{ConsumerStore, DeadLetter},
    clock::Clock,
    event::{EventId, RecordedEvent},
};

/// Why the bus refused.
#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(String);

fn bus_err(e: impl std::fmt::Display) -> BusError {
    BusError(e.to_string())
}

/// An event as it travels on the bus.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: i64,
    occurred_at_ns: i64,
    data: serde_json::Value,
}

fn to_wire(e: &RecordedEvent) -> Wire {
    Wire {
        id: e.id.to_string(),
        tenant_id: e.tenant_id.to_string(),
        event_type: e.event_type.clone(),
        occurred_at: e.occurred_at.unix_timestamp(),
        occurred_at_ns: i64::from(e.occurred_at.nanosecond()),
        data: e.payload.clone(),
    }
}

fn from_wire(bytes: &[u8]) -> Result<RecordedEvent, BusError> {
    let w: Wire = serde_json::from_slice(bytes).map_err(bus_err)?;
    let at = time::OffsetDateTime::from_unix_timestamp(w.occurred_at).map_err(bus_err)?
        + time::Duration::nanoseconds(w.occurred_at_ns);
    Ok(RecordedEvent {
        id: w.id.parse().map_err(bus_err)?,
        tenant_id: w.tenant_id.parse().map_err(bus_err)?,
        event_type: w.event_type,
        payload: w.data,
        occurred_at: at,
    })
}

/// A JetStream stream of Keel events.
#[derive(Debug, Clone)]
pub struct JetStreamBus {
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl JetStreamBus {
    /// Connects and creates (or finds) the stream `stream` over `<prefix>.>` with an exact
    /// duplicate window.
    pub async fn connect(
        url: &str,
        stream: &str,
        prefix: &str,
        duplicate_window: StdDuration,
    ) -> Result<Self, BusError> {
        let client = async_nats::connect(url).await.map_err(bus_err)?;
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(bus_err)?;
        Ok(Self {
            js,
            stream: stream.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The core NATS connection under the stream (for messages that are not events).
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// Publishes an event and waits for JetStream to store it. `msg_id` is the event id, or a
    /// re-drive's own id (so the duplicate window does not drop a deliberate re-drive).
    pub async fn publish_as(&self, e: &RecordedEvent, msg_id: &str) -> Result<(), BusError> {
        let subject = format!("{}.{}.{}", self.prefix, e.tenant_id, e.event_type);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let body = serde_json::to_vec(&to_wire(e)).map_err(bus_err)?;
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(bus_err)?
            .await
            .map_err(bus_err)?;
        Ok(())
    }

    /// Publishes an event under its own id (a repeat inside the window is dropped).
    pub async fn publish(&self, e: &RecordedEvent) -> Result<(), BusError> {
        self.publish_as(e, &e.id.to_string()).await
    }

    /// Deletes the stream and everything in it (decommissioning; tests remove their own).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.js
            .delete_stream(&self.stream)
            .await
            .map(|_| ())
            .map_err(bus_err)
    }

    /// This node's tail of the stream for its realtime subscribers (ADR 0040): an ordered,
    /// ephemeral consumer that takes every event published from now on, in stream order, and
    /// hands it to `hub`, on every node (the shared webhook consumer gives each event to one
    /// node only). Runs until the connection fails; the caller starts it again.
    pub async fn tail(&self, hub: &keel_kernel::hub::EventHub) -> Result<(), BusError> {
        let stream = self.js.get_stream(&self.stream).await.map_err(bus_err)?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(bus_err)?;
        let mut messages = consumer.messages().await.map_err(bus_err)?;
        // From here on every publication reaches the hub; what came before is in the log.
        hub.cut_all();
        while let Some(m) = messages.next().await {
            let m = m.map_err(bus_err)?;
            let Ok(event) = from_wire(&m.payload) else {
                continue;
            };
            // A dead letter's re-drive travels under its own message id: subscribers saw the
            // event when it was first published.
            let redrive = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .is_some_and(|id| id.as_str() != event.id.to_string());
            if !redrive {
                hub.publish(std::slice::from_ref(&event));
            }
        }
        Ok(())
    }

    /// How many messages the stream holds.
    pub async fn stored(&self) -> Result<u64, BusError> {
        let mut s = self.js.get_stream(&self.stream).await.map_err(bus_err)?;
        Ok(s.info().await.map_err(bus_err)?.state.messages)
    }
}

/// What a consumer does with one event. An error is retried on the consumer's schedule.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), String>;
}

/// A durable pull consumer with at-most-once processing, an explicit retry schedule and a
/// dead-letter table.
pub struct Consumer {
    name: String,
    pull: jetstream::consumer::Consumer<pull::Config>,
    store: Arc<dyn ConsumerStore>,
    handler: Arc<dyn Handler>,
    /// Delay before redelivery n+1 after failed delivery n; after the last, the event is parked.
    schedule: Vec<StdDuration>,
    clock: Arc<dyn Clock>,
    bus: JetStreamBus,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub async fn new(
        bus: &JetStreamBus,
        name: &str,
        store: Arc<dyn ConsumerStore>,
        handler: Arc<dyn Handler>,
        schedule: Vec<StdDuration>,
        ack_wait: StdDuration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BusError> {
        let stream = bus.js.get_stream(&bus.stream).await.map_err(bus_err)?;
        // Created, or updated to this node's settings: the ack wait is the exact time after
        // which a message taken by a node that died is delivered to another (issue 25).
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                ..Default::default()
            })
            .await
            .map_err(bus_err)?;
        Ok(Self {
            name: name.to_owned(),
            pull: consumer,
            store,
            handler,
            schedule,
            clock,
            bus: bus.clone(),
        })
    }

    /// Fetches and settles one batch (waiting at most `wait` for messages); answers how many
    /// messages it settled.
    pub async fn run_once(&self, batch: usize, wait: StdDuration) -> Result<usize, BusError> {
        let mut messages = self
            .pull
            .fetch()
            .max_messages(batch)
            .expires(wait)
            .messages()
            .await
            .map_err(bus_err)?;
        let mut n = 0;
        while let Some(m) = messages.next().await {
            let m = m.map_err(bus_err)?;
            n += 1;
            let delivered = m.info().map_err(bus_err)?.delivered;
            let event = match from_wire(&m.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "unreadable bus message dropped");
                    m.ack_with(AckKind::Term).await.map_err(bus_err)?;
                    continue;
                }
            };
            if self
                .store
                .is_processed(&self.name, event.id)
                .await
                .map_err(bus_err)?
            {
                m.ack().await.map_err(bus_err)?;
                continue;
            }
            match self.handler.handle(&event).await {
                Ok(()) => {
                    self.store
                        .mark_processed(&self.name, event.id, self.clock.now())
                        .await
                        .map_err(bus_err)?;
                    m.ack().await.map_err(bus_err)?;
                }
                Err(error) => {
                    let index = usize::try_from(delivered - 1).unwrap_or(usize::MAX);
                    if let Some(delay) = self.schedule.get(index) {
                        m.ack_with(AckKind::Nak(Some(*delay)))
                            .await
                            .map_err(bus_err)?;
                    } else {
                        self.store
                            .dead_letter(&DeadLetter {
                                id: uuid::Uuid::now_v7(),
                                consumer: self.name.clone(),
                                event,
                                error,
                                attempts: delivered,
                                created_at: self.clock.now(),
                            })
                            .await
                            .map_err(bus_err)?;
                        m.ack_with(AckKind::Term).await.map_err(bus_err)?;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Re-drives one of this consumer's parked events (see [`redrive`]).
    pub async fn redrive(&self, id: uuid::Uuid) -> Result<EventId, BusError> {
        redrive(&self.bus, &*self.store, id).await
    }
}

/// Publishes a parked event again and then removes it from the dead-letter table. The re-drive
/// goes out under its own message id (`<event>:redrive:<letter>`), so the duplicate window does
/// not drop it as a repeat of the original, while a re-drive repeated after a failed removal is
/// dropped (and the consumer's processed table would skip it anyway).
pub async fn redrive(
    bus: &JetStreamBus,
    store: &dyn ConsumerStore,
    id: uuid::Uuid,
) -> Result<EventId, BusError> {
    let letter = store.find_dead_letter(id).await.map_err(bus_err)?;
    bus.publish_as(
        &letter.event,
        &format!("{}:redrive:{}", letter.event.id, letter.id),
    )
    .await?;
    store.remove_dead_letter(id).await.map_err(bus_err)?;
    Ok(letter.event.id)
}

#[async_trait::async_trait]
impl keel_kernel::bus::EventPublisher for JetStreamBus {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), String> {
        JetStreamBus::publish(self, event)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The webhook fan-out as a bus consumer: each event becomes one message per endpoint that
/// wants it (at most once per endpoint and event).
#[derive(Debug)]
pub struct WebhookFanOut {
    pub store: Arc<dyn keel_webhooks::ports::WebhookStore>,
}

#[async_trait::async_trait]
impl Handler for WebhookFanOut {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), String> {
        self.store
            .accept_event(event, &keel_webhooks::service::fan_out)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
