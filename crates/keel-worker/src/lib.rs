//! Background work of a Keel node: the outbox relay (events → webhook messages) and the
//! Standard Webhooks delivery loop. Both run on exact intervals from the configuration and
//! are woken early when a request commits (embedded mode), and both are safe to run on any
//! number of nodes (PostgreSQL claims rows with `FOR UPDATE SKIP LOCKED`).
//!
//! Deliveries are fair per endpoint (issue 19, finding 3): each endpoint's due messages are
//! claimed on their own, up to its slots; a slot is refilled with the endpoint's next message
//! in the transaction that records the attempt; an endpoint whose attempts keep failing is
//! paused by its circuit without spending its messages' retries.
#![forbid(unsafe_code)]

pub mod bus;
pub mod changes;
pub mod delivery;
pub mod schedule;

use std::{sync::Arc, time::Duration as StdDuration};

use keel_kernel::{StoreError, clock::Clock, event::NewEvent};
use keel_webhooks::{
    domain::{Attempt, AttemptId, Channel, Endpoint, Message, cut_body},
    ports::{Refill, WebhookStore},
    service::{WebhooksService, fan_out, outcome},
    signing::signature_header,
};
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;

/// How long a claim outlives the attempt's timeout.
const CLAIM_MARGIN: Duration = Duration::seconds(5);

/// Exact settings of the loops.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub relay_interval: StdDuration,
    pub relay_batch: i64,
    pub delivery_interval: StdDuration,
    pub delivery_batch: i64,
}

/// The relay and delivery loops of one node.
#[derive(Debug, Clone)]
pub struct Worker {
    pub store: Arc<dyn WebhookStore>,
    pub webhooks: WebhooksService,
    pub clock: Arc<dyn Clock>,
    pub settings: WorkerSettings,
    /// Pinged after a request commits, so events leave without waiting for the interval.
    pub wake: Arc<Notify>,
    /// With `KEEL_NATS_URL`: the relay publishes to JetStream and the webhook fan-out consumes
    /// from it; without, the relay fans out in process.
    pub nats: Option<Nats>,
    /// Pinged when new messages may be due (the relay or the bus consumer added some).
    pub deliveries: Arc<Notify>,
    /// One HTTP client for every delivery (connections reused), that connects only to
    /// addresses the SSRF guard allows and never through a proxy ([`delivery`]).
    pub client: reqwest::Client,
    /// Set while the last claim filled every free slot of the node (more may be due than the
    /// node can take): a slot then keeps its endpoint for one delivery interval at most, so
    /// the next fair claim shares the node out again.
    pub congested: Arc<std::sync::atomic::AtomicBool>,
    /// This node's realtime subscribers: without a bus, the relay hands them what it relayed
    /// once its transaction committed; with one, the node's tail of the bus does.
    pub hub: Arc<keel_kernel::hub::EventHub>,
    /// Held by one relay pass of this node at a time: without a bus, subscribers get each
    /// batch in the order the batches were numbered (committed), which two passes handing
    /// theirs over at once could swap.
    pub relay_turn: Arc<tokio::sync::Mutex<()>>,
}

/// The JetStream side of a node.
#[derive(Debug, Clone)]
pub struct Nats {
    pub bus: bus::JetStreamBus,
    pub fan_out: Arc<bus::Consumer>,
    /// How long one relay pass may hold the relay position while it publishes (the bus's
    /// exact ack wait): a node that froze mid-way loses it then, and another publishes.
    pub hold: StdDuration,
}

/// A random jitter from 0 to `max` inclusive, in whole milliseconds.
fn jitter(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.whole_milliseconds()).unwrap_or(0);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let mut b = [0_u8; 8];
    getrandom::fill(&mut b).expect("the OS random source is available");
    let ms = u64::from_le_bytes(b) % (max_ms + 1);
    Duration::milliseconds(i64::try_from(ms).unwrap_or(0))
}

/// Reads at most `limit` bytes of a response body (the rest is not downloaded).
async fn read_prefix(mut res: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match res.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    res.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= 0)
        .map(Duration::seconds)
}

impl Worker {
    /// Relays until a batch comes back short; answers how many events were relayed.
    pub async fn relay_once(&self) -> Result<usize, keel_kernel::StoreError> {
        let _turn = self.relay_turn.lock().await;
        let mut total = 0;
        loop {
            let now = self.clock.now();
            let n = if let Some(nats) = &self.nats {
                self.store
                    .relay_via(self.settings.relay_batch, now, &nats.bus, nats.hold)
                    .await?
            } else {
                self.relay_in_process(now).await?
            };
            total += n;
            if i64::try_from(n).unwrap_or(0) < self.settings.relay_batch {
                return Ok(total);
            }
        }
    }

    /// One relay batch without a bus: webhook messages written in the relay's transaction, and
    /// once it committed, the relayed events handed to this node's realtime subscribers.
    async fn relay_in_process(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let relayed = std::sync::Mutex::new(Vec::new());
        let messages = std::sync::atomic::AtomicUsize::new(0);
        // Every event is kept, whether or not anyone listens now: a subscriber that arrives
        // before the commit and reads the log before it must get the batch live.
        let keep = |e: &keel_kernel::event::RecordedEvent, endpoints: &[Endpoint]| {
            relayed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(e.clone());
            let out = fan_out(e, endpoints);
            messages.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
            out
        };
        let n = self
            .store
            .relay(self.settings.relay_batch, now, &keep)
            .await?;
        // New messages may be due: claimed now, not at the next tick (and no claim at all
        // when the events wrote none: three statements saved per pass on PostgreSQL).
        if messages.into_inner() > 0 {
            self.deliveries.notify_one();
        }
        // Only now committed: subscribers never see an event whose relay rolled back (it
        // comes again with the next batch). The store answers how many of the events it
        // handed over committed; they come first, in number order.
        let mut relayed = relayed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        relayed.truncate(n);
        self.hub.publish(&relayed);
        Ok(n)
    }

    /// When a claim made at `now` lapses: the attempt's timeout plus an exact margin (time to
    /// record the attempt), so a live worker is never overtaken, and a message claimed by a
    /// node that died is due again soon after.
    fn lock_until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + self.webhooks.settings().policy.timeout + CLAIM_MARGIN
    }

    /// Claims what is due now, fairly per endpoint, up to `room` deliveries; answers them with
    /// the time their claim lapses.
    async fn claim(
        &self,
        room: usize,
    ) -> Result<(Vec<(Message, Endpoint)>, OffsetDateTime), StoreError> {
        let now = self.clock.now();
        let lease = self.lock_until(now);
        if room == 0 {
            return Ok((Vec::new(), lease));
        }
        let due = self
            .store
            .claim_due(
                now,
                i64::try_from(room).unwrap_or(i64::MAX),
                lease,
                &self.webhooks.settings().policy,
            )
            .await?;
        Ok((due, lease))
    }

    /// Delivers every message due now: one claim (fair per endpoint, at most the node's
    /// `delivery_batch`), each claimed slot kept busy with its endpoint's next due messages
    /// until none is left. Answers how many attempts were made. (The running worker does the
    /// same continuously; this is for tests and one-shot tools.)
    pub async fn deliver_once(&self) -> Result<usize, StoreError> {
        let (due, lease) = self
            .claim(usize::try_from(self.settings.delivery_batch).unwrap_or(0))
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (message, endpoint) in due {
            let this = self.clone();
            tasks.spawn(async move { this.run_slot(message, endpoint, lease).await });
        }
        let mut attempts = 0;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(n) => attempts += n,
                Err(e) => tracing::warn!(error = %e, "a webhook delivery task failed"),
            }
        }
        Ok(attempts)
    }

    /// One delivery slot: delivers `m`, then the endpoint's next due message claimed in the
    /// same transaction as the attempt, and so on while the endpoint has a free slot and
    /// something due. Answers how many attempts it made.
    async fn run_slot(&self, mut m: Message, mut e: Endpoint, mut lease: OffsetDateTime) -> usize {
        let turn = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.deliver(&m, &e, turn, lease).await {
                Ok(Some((next, endpoint, until))) => (m, e, lease) = (next, endpoint, until),
                Ok(None) => return attempts,
                Err(err) => {
                    // The message stays claimed until its lock lapses, then is due again.
                    tracing::warn!(error = %err, "recording a webhook attempt failed");
                    return attempts;
                }
            }
        }
    }

    /// One attempt: SSRF check (the delivery client connects only to checked addresses),
    /// signed POST with the exact timeout, no redirects, no proxy; the attempt and its
    /// consequences are recorded in one transaction, with the endpoint's next claim.
    async fn deliver(
        &self,
        m: &Message,
        e: &Endpoint,
        turn: std::time::Instant,
        lease: OffsetDateTime,
    ) -> Result<Option<(Message, Endpoint, OffsetDateTime)>, StoreError> {
        let settings = self.webhooks.settings();
        let started = std::time::Instant::now();
        let attempted_at = self.clock.now();
        let (status, retry, body, error) = match self.send(m, e, attempted_at).await {
            Ok((status, retry, body)) => (Some(status), retry, Some(body), None),
            Err(err) => (None, None, None, Some(err)),
        };
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.clock.now();
        let decided = outcome(
            &settings.policy,
            e,
            m.attempts + 1,
            status,
            retry,
            now,
            jitter(settings.policy.jitter),
        );
        let attempt = Attempt {
            id: AttemptId::new(),
            tenant_id: m.tenant_id,
            message_id: m.id,
            endpoint_id: m.endpoint_id,
            attempted_at,
            status_code: status,
            latency_ms,
            error,
            // A mail system's answer may echo the notification (and its secret): not kept.
            response_body: body.filter(|_| e.channel == Channel::Webhook),
        };
        let mut events = Vec::new();
        if let (Some(_), Channel::Account) = (&decided.disable, e.channel) {
            // A disabled account endpoint sends nothing more: its waiting secrets are given up.
            self.store.abandon_pending(m.tenant_id, e.id, now).await?;
        }
        if let Some(reason) = &decided.disable {
            events.push(
                NewEvent::new(
                    m.tenant_id,
                    "endpoint.disabled",
                    &serde_json_payload(e, reason),
                    now,
                )
                .map_err(keel_kernel::StoreError::other)?,
            );
            tracing::warn!(tenant_id = %m.tenant_id, endpoint_id = %e.id, reason, "webhook endpoint disabled");
        }
        if decided.status == keel_webhooks::domain::MessageStatus::Failed
            && e.channel == Channel::Webhook
        {
            events.push(
                NewEvent::new(
                    m.tenant_id,
                    keel_webhooks::domain::MESSAGE_FAILED,
                    &serde_json::json!({
                        "message_id": m.id,
                        "endpoint_id": e.id,
                        "event_type": m.event_type,
                        "attempts": m.attempts + 1,
                        "status_code": status,
                    }),
                    now,
                )
                .map_err(keel_kernel::StoreError::other)?,
            );
        }
        if !decided.endpoint_ok && e.consecutive_failures + 1 == settings.policy.circuit_failures {
            tracing::warn!(tenant_id = %m.tenant_id, endpoint_id = %e.id, "webhook endpoint circuit opened");
        }
        // The slot takes its endpoint's next message only while its own claim holds (a lapsed
        // one may already be counted out and claimed again elsewhere, so a refill would add a
        // delivery instead of replacing one) and, under congestion (the last claim filled
        // every free slot: more may be due than the node can take), for one delivery interval
        // at most: then it goes back to the fair claim, which serves the endpoint that has
        // waited longest. Decided after the attempt, so an attempt that outlasted the interval
        // gives the slot back.
        let congested = self.congested.load(std::sync::atomic::Ordering::Relaxed);
        let until = self.lock_until(now);
        let refill = (now < lease
            && (!congested || turn.elapsed() < self.settings.delivery_interval))
            .then_some(Refill {
                now,
                lock_until: until,
                policy: &settings.policy,
            });
        Ok(self
            .store
            .record_attempt(&attempt, &decided, &events, refill)
            .await?
            .map(|(m, e)| (m, e, until)))
    }

    async fn send(
        &self,
        m: &Message,
        e: &Endpoint,
        now: OffsetDateTime,
    ) -> Result<(u16, Option<Duration>, String), String> {
        let url = self
            .webhooks
            .settings()
            .ssrf
            .check_url(&e.url)
            .map_err(|r| format!("refused: {r}"))?;
        delivery::check_literal(&self.webhooks.settings().ssrf, &url)
            .map_err(|r| format!("refused: {r}"))?;
        let keys = self
            .webhooks
            .signing_keys(e, now)
            .map_err(|err| err.to_string())?;
        let body = self
            .webhooks
            .body_to_send(e, m)
            .map_err(|err| err.to_string())?;
        let id = m.id.to_string();
        let ts = now.unix_timestamp();
        let res = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                signature_header(&keys, &id, ts, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .map_err(|err| delivery::describe(&err))?;
        let status = res.status().as_u16();
        let retry = retry_after(&res);
        let body = read_prefix(res, keel_webhooks::domain::RESPONSE_BODY_MAX).await;
        Ok((status, retry, cut_body(&body)))
    }

    /// Runs both loops until the task is dropped.
    pub async fn run(self) {
        let relay = {
            let this = self.clone();
            async move {
                // The first pass comes after one interval: starting must not touch the
                // database (a node may start while its database is down).
                let period = this.settings.relay_interval;
                let mut every =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        () = this.wake.notified() => {}
                    }
                    // A relay that wrote messages wakes the deliveries itself; with a bus,
                    // the consumer that writes them does.
                    match this.relay_once().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(events = n, "relayed"),
                        Err(e) => tracing::warn!(error = %e, "relay failed"),
                    }
                }
            }
        };
        let consumer = self.clone();
        let consume = async move {
            let Some(nats) = &consumer.nats else {
                return;
            };
            loop {
                // Each fetch waits at most one relay interval for messages.
                match nats
                    .fan_out
                    .run_once(
                        usize::try_from(consumer.settings.delivery_batch).unwrap_or(50),
                        consumer.settings.relay_interval,
                    )
                    .await
                {
                    Ok(0) => {}
                    Ok(_) => consumer.deliveries.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "consuming from JetStream failed");
                        tokio::time::sleep(consumer.settings.relay_interval).await;
                    }
                }
            }
        };
        let tail = self.clone().tail_forever();
        let delivery = self.clone().deliver_forever();
        tokio::join!(relay, delivery, consume, tail);
    }

    /// With a bus: hands every event on it to this node's realtime subscribers, until the
    /// task is dropped (an `api` node runs only this). Without one, returns at once.
    pub async fn tail_forever(self) {
        let Some(nats) = &self.nats else {
            return;
        };
        loop {
            // Events published while the tail is down never reach the node's live subscribers:
            // each is cut off when the tail fails and again when it starts anew (a subscriber
            // that came in between read the log before events the tail missed), and resumes
            // from the event log with `Last-Event-ID`.
            if let Err(e) = nats.bus.tail(&self.hub).await {
                tracing::warn!(error = %e, "tailing JetStream for realtime subscribers failed");
            }
            self.hub.cut_all();
            tokio::time::sleep(self.settings.relay_interval).await;
        }
    }

    /// The delivery loop: at most `delivery_batch` deliveries in flight on this node, each
    /// slot kept busy with its endpoint's next due message as soon as an attempt is recorded
    /// (not once per poll), and a fresh fair claim on every tick, on every relay that added
    /// messages, and whenever a slot ends. A slow endpoint holds only its own slots: nothing
    /// waits for its attempts but its own messages.
    async fn deliver_forever(self) {
        let capacity = usize::try_from(self.settings.delivery_batch).unwrap_or(0);
        let period = self.settings.delivery_interval;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slots = tokio::task::JoinSet::new();
        let mut started = false;
        loop {
            if started {
                let room = capacity.saturating_sub(slots.len());
                match self.claim(room).await {
                    Ok((due, lease)) => {
                        // Every slot taken, or the claim filled every free one: others may
                        // be waiting.
                        self.congested
                            .store(due.len() == room, std::sync::atomic::Ordering::Relaxed);
                        for (message, endpoint) in due {
                            let this = self.clone();
                            slots.spawn(
                                async move { this.run_slot(message, endpoint, lease).await },
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook messages failed"),
                }
            }
            tokio::select! {
                // The first claim comes after one interval, as the relay's first pass.
                _ = every.tick() => started = true,
                () = self.deliveries.notified(), if started => {}
                Some(ended) = slots.join_next(), if !slots.is_empty() => {
                    if let Err(e) = ended {
                        tracing::warn!(error = %e, "a webhook delivery task failed");
                    }
                }
            }
        }
    }
}

/// The payload of `endpoint.disabled`.
#[derive(serde::Serialize)]
struct Disabled<'a> {
    endpoint_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    reason: &'a str,
}

fn serde_json_payload<'a>(e: &'a Endpoint, reason: &'a str) -> Disabled<'a> {
    Disabled {
        endpoint_id: e.id.to_string(),
        // An account endpoint's address is the owner's business: not in the event log.
        url: (e.channel == Channel::Webhook).then_some(e.url.as_str()),
        reason,
    }
}
