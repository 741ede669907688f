//! Parts of the effective configuration as `keel config check` shows them.

use super::Settings;

impl Settings {
    /// The webhook settings as `keel config check` shows them.
    pub(super) fn webhooks_json(&self) -> serde_json::Value {
        serde_json::json!({
            "retry_schedule_ms": self.webhooks.policy.schedule.iter().map(|d| d.whole_milliseconds()).collect::<Vec<_>>(),
            "jitter_ms": self.webhooks.policy.jitter.whole_milliseconds(),
            "timeout_ms": self.webhooks.policy.timeout.whole_milliseconds(),
            "disable_after_s": self.webhooks.policy.disable_after.whole_seconds(),
            "max_in_flight": self.webhooks.policy.max_in_flight,
            "secret_overlap_s": self.webhooks.rotation_overlap.whole_seconds(),
            "allow_http": self.webhooks.ssrf.allow_http,
            "allow_cidrs": self.webhooks.ssrf.allow_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "relay_interval_ms": self.worker.relay_interval.as_millis(),
            "relay_batch": self.worker.relay_batch,
            "delivery_interval_ms": self.worker.delivery_interval.as_millis(),
            "delivery_batch": self.worker.delivery_batch,
            "circuit_failures": self.webhooks.policy.circuit_failures,
            "circuit_pause_ms": self.webhooks.policy.circuit_pause.whole_milliseconds(),
        "shop_max_in_flight": self.webhooks.policy.shop_max_in_flight,
            "retention_s": self.webhooks.retention.whole_seconds(),
            "max_endpoints": self.webhooks.max_endpoints,
        })
    }

    /// The edge's limits as `keel config check` shows them (Redis's URL never: it may hold a
    /// password).
    pub(super) fn limits_json(&self) -> serde_json::Value {
        let l = &self.limits;
        let one = |x: keel_kernel::ratelimit::Limit| serde_json::json!({"interval_ms": x.interval_ms(), "burst": x.burst()});
        serde_json::json!({
            "enabled": l.enabled,
            "memory_keys": l.memory_keys,
            "redis": if self.redis_url.is_some() { "***" } else { "unset (in memory)" },
            "redis_timeout_ms": self.redis_timeout.as_millis(),
            "client": one(l.client),
            "store_read": one(l.store_read),
            "store_write": one(l.store_write),
            "admin_read": one(l.admin_read),
            "admin_write": one(l.admin_write),
            "auth": one(l.auth),
            "cart_create": one(l.cart_create),
            "checkout": one(l.checkout),
            "promotion_address": one(l.promotion_per_address),
            "promotion_cart": one(l.promotion_per_cart),
            "shop": one(l.shop),
        })
    }

    /// Realtime delivery's exact settings.
    pub(super) fn realtime_json(&self) -> serde_json::Value {
        let r = &self.realtime;
        serde_json::json!({
            "buffer": r.buffer,
            "heartbeat_ms": r.heartbeat.as_millis(),
            "max_connections": r.max_connections,
            "max_connections_per_shop": r.max_connections_per_shop,
            "max_replay": r.max_replay,
            "recheck_ms": r.recheck.as_millis(),
        })
    }

    /// GraphQL's exact limits (the persisted queries by count only).
    pub(super) fn graphql_json(&self) -> serde_json::Value {
        let (g, ws) = &self.graphql;
        serde_json::json!({
            "max_depth": g.max_depth,
            "max_complexity": g.max_complexity,
            "max_aliases": g.max_aliases,
            "max_query_bytes": g.max_query_bytes,
            "persisted_entries": g.persisted_entries,
            "persisted_queries": g.persisted.len(),
            "store_persisted_only": g.store_persisted_only,
            "store_introspection": g.store_introspection,
            "ping_ms": ws.ping.as_millis(),
            "missed_pongs": ws.missed_pongs,
            "presence_ttl_ms": ws.presence_ttl.as_millis(),
            "presence_rooms_per_shop": ws.presence_rooms_per_shop,
            "max_operations_per_connection": ws.max_operations,
            "init_timeout_ms": ws.init_timeout.as_millis(),
        })
    }
}
