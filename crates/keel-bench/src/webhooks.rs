//! `keel bench webhooks`: how many webhook deliveries a running Keel makes per second to
//! receivers on loopback that answer at once.
//!
//! The bench starts its own receiver (one path per endpoint, 204 at once, each `webhook-id`
//! recorded), creates `endpoints` webhook endpoints on it for `product.created`, spread over
//! the shops it is given (round robin), then records `events` such events in each shop in
//! product batches of 1000, and waits until every endpoint has every event of its shop (or
//! the time limit). The server must allow plain-http loopback endpoints:
//! `KEEL_WEBHOOKS__ALLOW_HTTP=true KEEL_WEBHOOKS__ALLOW_CIDRS=127.0.0.1/32`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Target;

/// What one run measured (integers only: times in microseconds, rates in thousandths).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookReport {
    pub shops: u32,
    pub endpoints: u32,
    /// Events recorded in each shop.
    pub events: u64,
    /// `endpoints * events`.
    pub expected: u64,
    /// Distinct messages received (by `webhook-id`).
    pub delivered: u64,
    /// Requests beyond the first for one `webhook-id` (at-least-once delivery).
    pub duplicates: u64,
    /// Time to record the events (the product batches' answers).
    pub recording_us: u64,
    /// From the first batch sent to the last delivery received.
    pub wall_us: u64,
    /// `delivered` per second of `wall_us`, in thousandths.
    pub deliveries_per_s_milli: u64,
}

impl WebhookReport {
    /// A short human-readable summary.
    pub fn table(&self) -> String {
        format!(
            "webhooks: {} endpoint(s) in {} shop(s) x {} events = {} expected\n\
             delivered {} distinct ({} duplicate requests) in {} s (events recorded in {} s)\n\
             {} deliveries/s\n",
            self.endpoints,
            self.shops,
            self.events,
            self.expected,
            self.delivered,
            self.duplicates,
            crate::milli(self.wall_us / 1_000),
            crate::milli(self.recording_us / 1_000),
            crate::milli(self.deliveries_per_s_milli)
        )
    }
}

#[derive(Debug, Default)]
struct Received {
    ids: HashSet<String>,
    requests: u64,
    last: Option<Instant>,
}

/// The receiver: one path per endpoint, 204 at once, each `webhook-id` recorded.
async fn start_receiver(
    received: Arc<Mutex<Received>>,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let app = axum::Router::new().route(
        "/hook/{n}",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let received = received.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut r = received.lock().unwrap_or_else(PoisonError::into_inner);
                r.requests += 1;
                r.ids.insert(id);
                r.last = Some(Instant::now());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("the receiver cannot listen")?;
    let addr = listener.local_addr().context("the receiver's address")?;
    Ok((
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    ))
}

/// Runs the bench against `target` in the shops whose owners' tokens are `shops`.
///
/// # Errors
/// When a request of the setup fails, or the receiver cannot listen.
pub async fn run(
    target: &Target,
    shops: &[&str],
    endpoints: u32,
    events: u64,
    limit: Duration,
) -> anyhow::Result<WebhookReport> {
    ensure!(
        (1..=1_000).contains(&endpoints),
        "--endpoints must be 1 to 1000"
    );
    let shop_count = u32::try_from(shops.len()).unwrap_or(u32::MAX);
    ensure!(
        (1..=endpoints).contains(&shop_count),
        "every shop needs an endpoint: --shops must be 1 to --endpoints"
    );
    ensure!(
        (1..=1_000_000).contains(&events),
        "--iterations (events) must be 1 to 1000000"
    );
    let received = Arc::new(Mutex::new(Received::default()));
    let (addr, server) = start_receiver(received.clone()).await?;
    for (n, staff_token) in (0..endpoints).zip(shops.iter().cycle()) {
        let res = target
            .request(Method::POST, "/v1/admin/webhook-endpoints")
            .bearer_auth(staff_token)
            .json(&json!({"url": format!("http://{addr}/hook/{n}"), "event_types": ["product.created"]}))
            .send()
            .await
            .context("webhook endpoint: no answer")?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        ensure!(
            status.is_success(),
            "webhook endpoint: {status}: {text} (start the server with KEEL_WEBHOOKS__ALLOW_HTTP=true KEEL_WEBHOOKS__ALLOW_CIDRS=127.0.0.1/32; a shop has at most KEEL_WEBHOOKS__MAX_ENDPOINTS, see --shops)"
        );
    }
    let started = Instant::now();
    let all: Vec<u64> = (0..events).collect();
    for (chunk, staff_token) in all
        .chunks(1_000)
        .flat_map(|chunk| shops.iter().map(move |token| (chunk, token)))
    {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"title": format!("Hook {i}"), "handle": format!("hook-{i}"), "status": "draft"}))
            .collect();
        let res = target
            .request(Method::POST, "/v1/admin/products/batch")
            .bearer_auth(staff_token)
            .json(&json!({"products": batch}))
            .send()
            .await
            .context("product batch: no answer")?;
        ensure!(res.status().is_success(), "product batch: {}", res.status());
    }
    let recording = started.elapsed();
    let expected = events * u64::from(endpoints);
    let deadline = started + limit;
    loop {
        let delivered = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .len();
        if u64::try_from(delivered).unwrap_or(u64::MAX) >= expected || Instant::now() >= deadline {
            break;
        }
        // A load generator's progress check, not a test's synchronisation.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();
    let r = received.lock().unwrap_or_else(PoisonError::into_inner);
    let delivered = u64::try_from(r.ids.len()).unwrap_or(u64::MAX);
    let wall = r.last.map_or(started.elapsed(), |l| l - started);
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    Ok(WebhookReport {
        shops: shop_count,
        endpoints,
        events,
        expected,
        delivered,
        duplicates: r.requests.saturating_sub(delivered),
        recording_us: micros(recording),
        wall_us: micros(wall),
        deliveries_per_s_milli: crate::per_second_milli(delivered, micros(wall)),
    })
}
