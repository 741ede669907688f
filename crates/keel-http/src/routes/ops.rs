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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}
