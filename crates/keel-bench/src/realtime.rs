//! `keel bench realtime`: committed events fanned out to many subscribers of one node.
//!
//! The bench opens `subscribers` Server-Sent Events streams of the shop's `product.created`
//! events (`GET /v1/admin/events/stream`), measures the server's resident memory before and
//! after (per idle connection), then records `events` events in product batches of 100 and
//! waits until every stream has every event (or the time limit). Each delivery's latency is
//! the time from the event's `occurred_at` (set in the transaction that commits it, so the
//! figure slightly overstates commit-to-delivery) to the moment the subscriber parsed it.
//! The server must allow the connections: `KEEL_MAX_CONNECTIONS_PER_ADDRESS` and
//! `KEEL_REALTIME__MAX_CONNECTIONS_PER_SHOP` at least `subscribers`, and the edge's limits
//! out of reach.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::Target;

/// What one run measured (integers only: times in microseconds, rates in thousandths).
#[derive(Debug, Clone, Serialize)]
pub struct RealtimeReport {
    pub subscribers: u32,
    pub events: u64,
    /// `subscribers * events`.
    pub expected: u64,
    pub delivered: u64,
    /// From the first batch sent to the last delivery received.
    pub wall_us: u64,
    pub deliveries_per_s_milli: u64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
    /// The server's resident memory with the streams open and idle, less before, per stream
    /// (bytes); `None` without `--server-pid`.
    pub bytes_per_idle_connection: Option<u64>,
}

impl RealtimeReport {
    pub fn table(&self) -> String {
        format!(
            "realtime: {} subscribers x {} events = {} expected; delivered {} in {} s\n\
             {} deliveries/s; commit to delivery p50 {} ms, p99 {} ms, max {} ms\n\
             memory per idle connection: {}\n",
            self.subscribers,
            self.events,
            self.expected,
            self.delivered,
            crate::milli(self.wall_us / 1_000),
            crate::milli(self.deliveries_per_s_milli),
            crate::milli(self.latency_p50_us),
            crate::milli(self.latency_p99_us),
            crate::milli(self.latency_max_us),
            self.bytes_per_idle_connection.map_or_else(
                || "unmeasured (no --server-pid)".to_owned(),
                |b| format!("{b} bytes")
            ),
        )
    }
}

/// Resident memory of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Microseconds since the Unix epoch of an RFC 3339 UTC timestamp (`2026-12-07T15:04:05.123456Z`).
fn epoch_us(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

fn now_us() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(0)
}

/// One subscriber: reads its stream until `events` events came (or the deadline); answers
/// each event's latency.
async fn subscriber(
    target: Target,
    token: String,
    events: u64,
    connected: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<Vec<u64>> {
    let mut res = target
        .request(Method::GET, "/v1/admin/events/stream?type=product.created")
        .bearer_auth(token)
        .timeout(deadline.saturating_duration_since(Instant::now()))
        .send()
        .await
        .context("a stream did not open")?;
    ensure!(
        res.status().is_success(),
        "a stream was refused: {}",
        res.status()
    );
    connected.fetch_add(1, Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    let mut buf = String::new();
    while u64::try_from(latencies.len()).unwrap_or(u64::MAX) < events {
        let Ok(Some(chunk)) = res.chunk().await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let at = serde_json::from_str::<serde_json::Value>(data)
                .ok()
                .and_then(|v| v["occurred_at"].as_str().and_then(epoch_us));
            if let Some(at) = at {
                latencies.push(now_us().saturating_sub(at));
            }
        }
    }
    Ok(latencies)
}

/// Runs the bench against the shop of `token` (a staff token with `audit:read` and
/// `catalog:write`).
pub async fn run(
    target: &Target,
    token: &str,
    subscribers: u32,
    events: u64,
    duration: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<RealtimeReport> {
    ensure!(
        (1..=10_000).contains(&subscribers),
        "--subscribers must be 1 to 10000"
    );
    ensure!(
        (100..=1_000_000).contains(&events),
        "--iterations must be 100 to 1000000 events"
    );
    let events = events - events % 100;
    let deadline = Instant::now() + duration;
    let before = server_pid.map(rss_kib).transpose()?;
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        tasks.spawn(subscriber(
            target.clone(),
            token.to_owned(),
            events,
            connected.clone(),
            deadline,
        ));
    }
    // Every stream open before the first event: the server answers a stream's headers after
    // it subscribed.
    let mut waited = tokio::time::interval(Duration::from_millis(10));
    while connected.load(Ordering::Relaxed) < u64::from(subscribers) {
        ensure!(
            Instant::now() < deadline,
            "the streams did not all open in time"
        );
        waited.tick().await;
    }
    let idle = server_pid.map(rss_kib).transpose()?;
    let per_connection = before
        .zip(idle)
        .map(|(b, i)| i.saturating_sub(b) * 1024 / u64::from(subscribers));
    let started = Instant::now();
    let stamp = now_us();
    for batch in 0..events / 100 {
        let products: Vec<_> = (0..100)
            .map(|i| {
                json!({"title": "Live", "handle": format!("live-{stamp}-{batch}-{i}"), "status": "draft",
                       "variants": [{"sku": format!("LIVE-{stamp}-{batch}-{i}"), "prices": [{"amount": 100, "currency": "USD"}]}]})
            })
            .collect();
        let res = target
            .request(Method::POST, "/v1/admin/products/batch")
            .bearer_auth(token)
            .json(&json!({ "products": products }))
            .send()
            .await
            .context("a batch was not answered")?;
        ensure!(
            res.status().is_success(),
            "a batch was refused: {}",
            res.status()
        );
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("a subscriber panicked")??);
    }
    let wall_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    latencies.sort_unstable();
    let delivered = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
    Ok(RealtimeReport {
        subscribers,
        events,
        expected: u64::from(subscribers) * events,
        delivered,
        wall_us,
        deliveries_per_s_milli: crate::per_second_milli(delivered, wall_us),
        latency_p50_us: crate::percentile(&latencies, 50),
        latency_p99_us: crate::percentile(&latencies, 99),
        latency_max_us: latencies.last().copied().unwrap_or(0),
        bytes_per_idle_connection: per_connection,
    })
}
