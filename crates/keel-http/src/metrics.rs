//! HTTP metrics in the Prometheus text format, kept with integers only.
//!
//! Two families, labelled by method, *matched route template* and status class:
//! `keel_http_requests_total` (counter) and `keel_http_request_duration_seconds` (histogram).
//! Requests that matched no route share the `route="unmatched"` series, so raw paths never
//! become label values (unbounded cardinality, and a path can carry an id or a token).
//!
//! Durations are counted in whole microseconds and bucket bounds are exact microsecond
//! values; seconds appear only when rendering, as exact decimal strings (no floating point,
//! docs/architecture.md, "Exact values"). One registry per app instance, so tests in one process do not share counts.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::http::{Method, StatusCode};

/// Histogram upper bounds in microseconds: 1 ms to 10 s.
pub const BUCKETS_MICROS: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Label value for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Default)]
struct Series {
    count: u64,
    sum_micros: u64,
    /// Non-cumulative counts per bucket; the last slot is the `+Inf` overflow.
    buckets: [u64; BUCKETS_MICROS.len() + 1],
}

/// The registry behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<SeriesKey, Series>>,
    /// The listener's connections (see `keel::serve`).
    pub connections: ConnectionCounters,
}

/// What the listener did with connections: open now, refused at the cap, and closed because
/// a client was too slow to send a request's headers or idled past the keep-alive timeout.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub open: AtomicU64,
    pub refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
}

impl ConnectionCounters {
    fn render(&self, out: &mut String) {
        let families: [(&str, &str, &str, &AtomicU64); 4] = [
            (
                "keel_http_connections_open",
                "gauge",
                "Connections open now.",
                &self.open,
            ),
            (
                "keel_http_connections_refused_total",
                "counter",
                "Connections closed at once because the open-connection cap was reached.",
                &self.refused,
            ),
            (
                "keel_http_header_timeouts_total",
                "counter",
                "Connections closed because a request's headers did not arrive within the header-read timeout.",
                &self.header_timeouts,
            ),
            (
                "keel_http_idle_timeouts_total",
                "counter",
                "Keep-alive connections closed after idling for the idle timeout.",
                &self.idle_timeouts,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// Only standard methods become label values; anything else is `OTHER`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Exact decimal seconds from microseconds: 2_500 -> "0.0025".
fn seconds(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one finished request. `route` is the matched template, or `None`.
    pub fn record(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let key = SeriesKey {
            route: route.unwrap_or(UNMATCHED).to_owned(),
            method: method_label(method),
            status: status_class(status),
        };
        let slot = BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(BUCKETS_MICROS.len());
        let mut map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.entry(key).or_default();
        s.count += 1;
        s.sum_micros = s.sum_micros.saturating_add(micros);
        s.buckets[slot] += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(256 + map.len() * 1_500);
        out.push_str("# HELP keel_http_requests_total HTTP requests served, by method, route template and status class.\n");
        out.push_str("# TYPE keel_http_requests_total counter\n");
        for (k, s) in map.iter() {
            let _ = writeln!(
                out,
                "keel_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}",
                k.method,
                escape(&k.route),
                k.status,
                s.count
            );
        }
        out.push_str("# HELP keel_http_request_duration_seconds Time from request received to response headers, by method, route template and status class.\n");
        out.push_str("# TYPE keel_http_request_duration_seconds histogram\n");
        for (k, s) in map.iter() {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{}\"",
                k.method,
                escape(&k.route),
                k.status
            );
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "keel_http_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    seconds(*bound)
                );
            }
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_sum{{{labels}}} {}",
                seconds(s.sum_micros)
            );
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        self.connections.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(1_000), "0.001");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(1_234_567), "1.234567");
        assert_eq!(seconds(0), "0");
    }

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let m = Metrics::default();
        m.record(
            &Method::GET,
            Some("/v1/things/{id}"),
            StatusCode::OK,
            Duration::from_micros(900),
        );
        m.record(
            &Method::GET,
            Some("/v1/things/{id}"),
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.record(
            &Method::GET,
            Some("/v1/things/{id}"),
            StatusCode::OK,
            Duration::from_mins(1),
        );
        let text = m.render();
        let l = r#"method="GET",route="/v1/things/{id}",status="2xx""#;
        assert!(
            text.contains(&format!("keel_http_requests_total{{{l}}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{{l},le=\"0.001\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{{l},le=\"0.0025\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{{l},le=\"0.005\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{{l},le=\"30\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{{l},le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(text.contains(&format!("_sum{{{l}}} 60.0039\n")), "{text}");
    }

    #[test]
    fn unknown_methods_and_routes_collapse_into_fixed_labels() {
        let m = Metrics::default();
        let weird = Method::from_bytes(b"BREW").expect("extension method");
        m.record(&weird, None, StatusCode::NOT_FOUND, Duration::ZERO);
        let text = m.render();
        assert!(
            text.contains(
                r#"keel_http_requests_total{method="OTHER",route="unmatched",status="4xx"} 1"#
            ),
            "{text}"
        );
    }
}
