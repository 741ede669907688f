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
    /// `KEEL_REALTIME__MAX_REPLAY`, default 1000: events one `Last-Event-ID` resume replays;
    /// with more missing, the stream ends after them and the client resumes again (the
    /// stream remembers the replayed ids, 16 bytes each, to send none twice).
    pub max_replay: u64,
    /// `KEEL_REALTIME__RECHECK_MS`, default 60000: how often a connection's credential is
    /// authenticated again; one refused, or naming other permissions, ends the connection.
    pub recheck_ms: u64,
}

impl Default for RawRealtime {
    fn default() -> Self {
        Self {
            buffer: 256,
            heartbeat_ms: 15_000,
            max_connections: 10_000,
            max_connections_per_shop: 1_000,
            max_replay: 1_000,
            recheck_ms: 60_000,
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
        max_replay: size("KEEL_REALTIME__MAX_REPLAY", raw.max_replay, 100_000)?,
        recheck: {
            let ms = positive("KEEL_REALTIME__RECHECK_MS", raw.recheck_ms)?;
            if ms > 3_600_000 {
                return Err(err("KEEL_REALTIME__RECHECK_MS", "must be at most 3600000"));
            }
            Duration::from_millis(ms)
        },
    })
}

/// GraphQL (`KEEL_GRAPHQL__*`, ADR 0040).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraphql {
    /// `KEEL_GRAPHQL__MAX_DEPTH`, default 12: levels of selection a query may nest.
    pub max_depth: u64,
    /// `KEEL_GRAPHQL__MAX_COMPLEXITY`, default 2000: a query's cost (each field 1, lists
    /// their page size times their items, declared per field).
    pub max_complexity: u64,
    /// `KEEL_GRAPHQL__MAX_ALIASES`, default 30.
    pub max_aliases: u64,
    /// `KEEL_GRAPHQL__MAX_QUERY_BYTES`, default 16384: the query text's size.
    pub max_query_bytes: u64,
    /// `KEEL_GRAPHQL__PERSISTED_ENTRIES`, default 1000: automatic persisted queries a node
    /// keeps per schema (the oldest goes first; each shop's its own); 0 turns them off.
    pub persisted_entries: u64,
    /// `KEEL_GRAPHQL__PERSISTED_QUERIES_FILE`, default unset: a JSON object of SHA-256 hex to
    /// query text, the queries the operator ships (accepted by hash on both schemas).
    pub persisted_queries_file: Option<String>,
    /// `KEEL_GRAPHQL__STORE_PERSISTED_ONLY`, default false: the storefront schema accepts only
    /// the shipped queries, by hash.
    #[serde(deserialize_with = "super::bool_or_string")]
    pub store_persisted_only: bool,
    /// `KEEL_GRAPHQL__STORE_INTROSPECTION`, default false.
    #[serde(deserialize_with = "super::bool_or_string")]
    pub store_introspection: bool,
    /// `KEEL_GRAPHQL__PING_MS`, default 15000: a WebSocket ping after this long.
    pub ping_ms: u64,
    /// `KEEL_GRAPHQL__MISSED_PONGS`, default 2: pings in a row without a pong that close it.
    pub missed_pongs: u32,
    /// `KEEL_GRAPHQL__PRESENCE_TTL_MS`, default 30000: a presence entry without a heartbeat
    /// (`enterResource` again) is gone after this long.
    pub presence_ttl_ms: u64,
    /// `KEEL_GRAPHQL__PRESENCE_ROOMS_PER_SHOP`, default 1000: resources a shop may have
    /// presence on at once on a node.
    pub presence_rooms_per_shop: u64,
    /// `KEEL_GRAPHQL__MAX_OPERATIONS_PER_CONNECTION`, default 50: subscriptions one WebSocket
    /// runs at once; one more closes it (4429).
    pub max_operations_per_connection: u64,
    /// `KEEL_GRAPHQL__INIT_TIMEOUT_MS`, default 10000: `connection_init` must come within this
    /// long after the upgrade (else 4408).
    pub init_timeout_ms: u64,
}

impl Default for RawGraphql {
    /// The crate's defaults, so that the two cannot drift apart.
    fn default() -> Self {
        let (g, ws) = (
            keel_graphql::GraphqlSettings::default(),
            keel_graphql::WsSettings::default(),
        );
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            max_depth: n(g.max_depth),
            max_complexity: n(g.max_complexity),
            max_aliases: n(g.max_aliases),
            max_query_bytes: n(g.max_query_bytes),
            persisted_entries: n(g.persisted_entries),
            persisted_queries_file: None,
            store_persisted_only: g.store_persisted_only,
            store_introspection: g.store_introspection,
            ping_ms: ms(ws.ping),
            missed_pongs: ws.missed_pongs,
            presence_ttl_ms: ms(ws.presence_ttl),
            presence_rooms_per_shop: n(ws.presence_rooms_per_shop),
            max_operations_per_connection: n(ws.max_operations),
            init_timeout_ms: ms(ws.init_timeout),
        }
    }
}

/// The operator's persisted queries: `{"<sha256 hex>": "<query>", …}`, each hash checked.
fn persisted_queries(
    path: Option<&str>,
) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    const KEY: &str = "KEEL_GRAPHQL__PERSISTED_QUERIES_FILE";
    let Some(path) = path.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(std::collections::HashMap::new());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| err(KEY, format!("cannot read it: {e}")))?;
    let queries: std::collections::HashMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| err(KEY, format!("not a JSON object of hash to query: {e}")))?;
    for (hash, query) in &queries {
        if !hash.eq_ignore_ascii_case(&keel_graphql::sha256_hex(query)) {
            return Err(err(
                KEY,
                format!(
                    "`{}` is not the SHA-256 of its query",
                    hash.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    Ok(queries)
}

pub(super) fn graphql(
    raw: &RawGraphql,
    max_message_bytes: usize,
) -> Result<(keel_graphql::GraphqlSettings, keel_graphql::WsSettings), ConfigError> {
    let ms = |key: &str, v: u64| -> Result<Duration, ConfigError> {
        let v = positive(key, v)?;
        if v > 3_600_000 {
            return Err(err(key, "must be at most 3600000"));
        }
        Ok(Duration::from_millis(v))
    };
    if raw.missed_pongs == 0 || raw.missed_pongs > 100 {
        return Err(err(
            "KEEL_GRAPHQL__MISSED_PONGS",
            "must be between 1 and 100",
        ));
    }
    let persisted = persisted_queries(raw.persisted_queries_file.as_deref())?;
    if raw.store_persisted_only && persisted.is_empty() {
        return Err(err(
            "KEEL_GRAPHQL__STORE_PERSISTED_ONLY",
            "needs KEEL_GRAPHQL__PERSISTED_QUERIES_FILE with the storefront's queries",
        ));
    }
    Ok((
        keel_graphql::GraphqlSettings {
            max_depth: size("KEEL_GRAPHQL__MAX_DEPTH", raw.max_depth, 1_000)?,
            max_complexity: size(
                "KEEL_GRAPHQL__MAX_COMPLEXITY",
                raw.max_complexity,
                10_000_000,
            )?,
            max_aliases: size("KEEL_GRAPHQL__MAX_ALIASES", raw.max_aliases, 10_000)?,
            max_query_bytes: size(
                "KEEL_GRAPHQL__MAX_QUERY_BYTES",
                raw.max_query_bytes,
                1_048_576,
            )?,
            persisted_entries: usize::try_from(raw.persisted_entries.min(10_000_000))
                .map_err(|_| err("KEEL_GRAPHQL__PERSISTED_ENTRIES", "too large"))?,
            store_persisted_only: raw.store_persisted_only,
            store_introspection: raw.store_introspection,
            persisted,
        },
        keel_graphql::WsSettings {
            ping: ms("KEEL_GRAPHQL__PING_MS", raw.ping_ms)?,
            missed_pongs: raw.missed_pongs,
            presence_ttl: ms("KEEL_GRAPHQL__PRESENCE_TTL_MS", raw.presence_ttl_ms)?,
            presence_rooms_per_shop: size(
                "KEEL_GRAPHQL__PRESENCE_ROOMS_PER_SHOP",
                raw.presence_rooms_per_shop,
                1_000_000,
            )?,
            max_operations: size(
                "KEEL_GRAPHQL__MAX_OPERATIONS_PER_CONNECTION",
                raw.max_operations_per_connection,
                10_000,
            )?,
            init_timeout: ms("KEEL_GRAPHQL__INIT_TIMEOUT_MS", raw.init_timeout_ms)?,
            max_message_bytes,
        },
    ))
}
