//! `/metrics`: Prometheus text exposition of this node's HTTP, storefront-cache, store and
//! pricing-cache metrics.

use axum::{extract::State, http::header, response::IntoResponse};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state.metrics.render();
            state.store_cache.stats().render(&mut text);
            render_counters(&state.health.counters(), &mut text);
            render_counters(&state.orders.counters(), &mut text);
            render_dependencies(&state.dependencies, &mut text);
            render_counters(&state.changes.counters(), &mut text);
            render_counters(
                &[keel_kernel::health::StoreCounter {
                    name: "keel_ratelimit_backend_errors_total",
                    help: "Rate-limit decisions Redis did not answer within KEEL_LIMITS__REDIS_TIMEOUT_MS (each decided in this node's memory instead).",
                    value: state.limits.backend_errors(),
                }],
                &mut text,
            );
            text
        },
    )
}

fn render_counters(counters: &[keel_kernel::health::StoreCounter], out: &mut String) {
    use std::fmt::Write as _;
    for c in counters {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n",
            name = c.name,
            help = c.help,
            value = c.value
        );
    }
}

/// One series of `/metrics`: name, type, help, and its value from a dependency's snapshot.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&keel_resilience::Snapshot) -> u64,
);

/// Each outbound dependency's circuit (state as a gauge, transitions and refusals as
/// counters) and its bulkhead's fast failures.
fn render_dependencies(deps: &[keel_resilience::Dependency], out: &mut String) {
    use std::fmt::Write as _;
    let snapshots: Vec<_> = deps
        .iter()
        .map(keel_resilience::Dependency::snapshot)
        .collect();
    let series: [Series; 4] = [
        (
            "keel_circuit_state",
            "gauge",
            "Circuit breaker state per outbound dependency: 0 closed, 1 open, 2 half-open.",
            |s| u64::from(s.state.code()),
        ),
        (
            "keel_circuit_transitions_total",
            "counter",
            "Circuit breaker state changes per outbound dependency.",
            |s| s.transitions,
        ),
        (
            "keel_circuit_refused_total",
            "counter",
            "Calls refused without reaching the dependency because its circuit was open.",
            |s| s.refused,
        ),
        (
            "keel_bulkhead_rejected_total",
            "counter",
            "Calls failed fast because every slot of the dependency's bulkhead stayed taken for the queue wait.",
            |s| s.busy,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for s in &snapshots {
            let _ = writeln!(out, "{name}{{dependency=\"{}\"}} {}", s.name, value(s));
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}
