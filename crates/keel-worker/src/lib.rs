//! Background work of a Keel node: the outbox relay (events → webhook messages) and the
//! Standard Webhooks delivery loop. Both run on exact intervals from the configuration and
//! are woken early when a request commits (embedded mode), and both are safe to run on any
//! number of nodes (PostgreSQL claims rows with `FOR UPDATE SKIP LOCKED`).
#![forbid(unsafe_code)]

pub mod bus;

use std::{sync::Arc, time::Duration as StdDuration};

use keel_kernel::{clock::Clock, event::NewEvent};
use keel_webhooks::{
    domain::{Attempt, AttemptId, Endpoint, Message, cut_body},
    ports::WebhookStore,
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
}

/// The JetStream side of a node.
#[derive(Debug, Clone)]
pub struct Nats {
    pub bus: bus::JetStreamBus,
    pub fan_out: Arc<bus::Consumer>,
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
        let mut total = 0;
        loop {
            let now = self.clock.now();
            let n = match &self.nats {
                Some(nats) => {
                    self.store
                        .relay_via(self.settings.relay_batch, now, &nats.bus)
                        .await?
                }
                None => {
                    self.store
                        .relay(self.settings.relay_batch, now, &fan_out)
                        .await?
                }
            };
            total += n;
            if i64::try_from(n).unwrap_or(0) < self.settings.relay_batch {
                return Ok(total);
            }
        }
    }

    /// Delivers every message due now (one claim of a batch, sent concurrently).
    pub async fn deliver_once(&self) -> Result<usize, keel_kernel::StoreError> {
        let policy = &self.webhooks.settings().policy;
        let now = self.clock.now();
        // The lock outlives the request timeout by an exact margin (time to record the
        // attempt), so a live worker is never overtaken, and a message claimed by a node that
        // died is due again soon after.
        let lock_until = now + policy.timeout + CLAIM_MARGIN;
        let due = self
            .store
            .claim_due(
                now,
                self.settings.delivery_batch,
                policy.max_in_flight,
                lock_until,
            )
            .await?;
        let n = due.len();
        let mut tasks = tokio::task::JoinSet::new();
        for (message, endpoint) in due {
            let this = self.clone();
            tasks.spawn(async move { this.deliver(&message, &endpoint).await });
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => tracing::warn!(error = %e, "recording a webhook attempt failed"),
                Err(e) => tracing::warn!(error = %e, "a webhook delivery task failed"),
                Ok(Ok(())) => {}
            }
        }
        Ok(n)
    }

    /// One attempt: SSRF check and pinned address, signed POST with the exact timeout, no
    /// redirects; the attempt and its consequences are recorded in one transaction.
    async fn deliver(&self, m: &Message, e: &Endpoint) -> Result<(), keel_kernel::StoreError> {
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
            response_body: body,
        };
        let mut events = Vec::new();
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
        self.store.record_attempt(&attempt, &decided, &events).await
    }

    async fn send(
        &self,
        m: &Message,
        e: &Endpoint,
        now: OffsetDateTime,
    ) -> Result<(u16, Option<Duration>, String), String> {
        let settings = self.webhooks.settings();
        let url = settings
            .ssrf
            .check_url(&e.url)
            .map_err(|r| format!("refused: {r}"))?;
        let addr = settings
            .ssrf
            .resolve(&url)
            .await
            .map_err(|r| format!("refused: {r}"))?;
        // Exactly one provider; a second install attempt is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(StdDuration::from_millis(
                u64::try_from(settings.policy.timeout.whole_milliseconds()).unwrap_or(15_000),
            ));
        if let Some(url::Host::Domain(d)) = url.host() {
            // The connection goes to the address that was checked: no second lookup.
            builder = builder.resolve(d, addr);
        }
        let client = builder.build().map_err(|err| format!("client: {err}"))?;
        let keys = self
            .webhooks
            .signing_keys(e, now)
            .map_err(|err| err.to_string())?;
        let id = m.id.to_string();
        let ts = now.unix_timestamp();
        let res = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                signature_header(&keys, &id, ts, m.body.as_bytes()),
            )
            .body(m.body.clone())
            .send()
            .await
            .map_err(|err| {
                if err.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("connection: {err}")
                }
            })?;
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
                if let Err(e) = nats
                    .fan_out
                    .run_once(
                        usize::try_from(consumer.settings.delivery_batch).unwrap_or(50),
                        consumer.settings.relay_interval,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "consuming from JetStream failed");
                    tokio::time::sleep(consumer.settings.relay_interval).await;
                }
            }
        };
        let delivery = async move {
            let period = self.settings.delivery_interval;
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                loop {
                    match self.deliver_once().await {
                        Ok(n) if i64::try_from(n).unwrap_or(0) >= self.settings.delivery_batch => {}
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming webhook messages failed");
                            break;
                        }
                    }
                }
            }
        };
        tokio::join!(relay, delivery, consume);
    }
}

/// The payload of `endpoint.disabled`.
#[derive(serde::Serialize)]
struct Disabled<'a> {
    endpoint_id: String,
    url: &'a str,
    reason: &'a str,
}

fn serde_json_payload<'a>(e: &'a Endpoint, reason: &'a str) -> Disabled<'a> {
    Disabled {
        endpoint_id: e.id.to_string(),
        url: &e.url,
        reason,
    }
}
