//! Realtime delivery's settings (`KEEL_REALTIME__*`, ADR 0040): every one an exact number.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, err, settings::positive};

/// SSE streams and GraphQL WebSockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRealtime {
    /// `KEEL_REALTIME__BUFFER`, default 256: events one subscriber may have waiting; one more
    /// and the subscriber is cut off (SSE: a `slow_consumer` event; WebSocket: close code
    /// 4408), never buffered without bound.
    pub buffer: u64,
    /// `KEEL_REALTIME__HEARTBEAT_MS`, default 15000: silence after which a stream sends a
    /// heartbeat (SSE comment), so that proxies keep the connection open.
    pub heartbeat_ms: u64,
    /// `KEEL_REALTIME__MAX_CONNECTIONS`, default 10000: realtime connections per node; one
    /// more is answered 503 `overloaded`.
    pub max_connections: u64,
    /// `KEEL_REALTIME__MAX_CONNECTIONS_PER_SHOP`, default 1000: realtime connections one shop
    /// holds per node; one more is answered 429 `too_many_connections`.
    pub max_connections_per_shop: u64,
    /// `KEEL_REALTIME__MAX_REPLAY`, default 10000: events one `Last-Event-ID` resume replays;
    /// with more missing, the stream ends after them and the client resumes again.
    pub max_replay: u64,
}

impl Default for RawRealtime {
    fn default() -> Self {
        Self {
            buffer: 256,
            heartbeat_ms: 15_000,
            max_connections: 10_000,
            max_connections_per_shop: 1_000,
            max_replay: 10_000,
        }
    }
}

fn size(key: &str, v: u64, max: u64) -> Result<usize, ConfigError> {
    let v = positive(key, v)?;
    if v > max {
        return Err(err(key, format!("must be at most {max}")));
    }
    usize::try_from(v).map_err(|_| err(key, "too large for this platform"))
}

pub(super) fn settings(
    raw: &RawRealtime,
) -> Result<keel_http::realtime::RealtimeSettings, ConfigError> {
    let heartbeat_ms = positive("KEEL_REALTIME__HEARTBEAT_MS", raw.heartbeat_ms)?;
    if heartbeat_ms > 3_600_000 {
        return Err(err(
            "KEEL_REALTIME__HEARTBEAT_MS",
            "must be at most 3600000",
        ));
    }
    Ok(keel_http::realtime::RealtimeSettings {
        buffer: size("KEEL_REALTIME__BUFFER", raw.buffer, 1_000_000)?,
        heartbeat: Duration::from_millis(heartbeat_ms),
        max_connections: size(
            "KEEL_REALTIME__MAX_CONNECTIONS",
            raw.max_connections,
            10_000_000,
        )?,
        max_connections_per_shop: size(
            "KEEL_REALTIME__MAX_CONNECTIONS_PER_SHOP",
            raw.max_connections_per_shop,
            10_000_000,
        )?,
        max_replay: size("KEEL_REALTIME__MAX_REPLAY", raw.max_replay, 1_000_000)?,
    })
}
