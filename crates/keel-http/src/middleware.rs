//! The middleware every response passes through, outermost first:
//! [`request_context`] (request id, span, log line, metrics), [`security_headers`],
//! [`problems_for_bare_errors`], panic catching, [`timeout`], body limit. See `router_with`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::{Instrument, field::Empty};

use crate::{
    metrics::Metrics,
    problem::{InternalError, PROBLEM_JSON, Problem, ProblemKind},
};

/// `X-Request-Id`: accepted from the client when sane, else generated; echoed on the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, for handlers that want to mention it.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A client-supplied id is kept only if it is 1 to 128 characters of `[A-Za-z0-9._-]`:
/// it goes into logs and headers, so anything else (spaces, control characters, quotes) is
/// replaced rather than trusted.
fn accepted_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(s)
}

/// Request id, tracing span, completion log line and metrics for every request.
pub async fn request_context(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match req.headers().get(REQUEST_ID).and_then(accepted_request_id) {
        Some(s) => s.into(),
        None => uuid::Uuid::now_v7().simple().to_string().into(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // The span carries the route *template*, never the raw path (which may hold ids or
    // tokens); `tenant_id` is filled in by authentication once a principal is known.
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED),
        request_id = %id,
        tenant_id = Empty,
    );
    let mut res = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = res.status();
    metrics.record(&method, route.as_deref(), status, elapsed);
    let _enter = span.enter();
    let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if let Some(InternalError(cause)) = res.extensions().get::<InternalError>() {
        tracing::error!(status = status.as_u16(), duration_us, error = %cause, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), duration_us, "request completed");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// CSP for API responses: nothing may load, nothing may frame.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// CSP for the API docs page: its own scripts and styles only (Swagger UI sets inline styles
/// and data: images), no third-party origin.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Security headers on every response; `Cache-Control: no-store` unless a route chose.
pub async fn security_headers(State(tls): State<bool>, req: Request, next: Next) -> Response {
    // The API docs and the GraphQL console (GraphiQL) load their own scripts and styles.
    let docs = req.uri().path().starts_with("/docs") || req.uri().path().starts_with("/graphiql");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if tls {
        // Browsers must never reach this API over plain HTTP again (RFC 6797), for a year.
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if docs { DOCS_CSP } else { API_CSP }),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Headers of a framework error worth keeping when its body is replaced by a problem.
const KEPT_HEADERS: [HeaderName; 2] = [header::ALLOW, header::RETRY_AFTER];

/// Rewrites any error the framework answered on its own (404 fallback, 405, 413 from the
/// body limit, extractor rejections) into a problem, so no error leaves as plain text.
pub async fn problems_for_bare_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    // The legacy API's answers (gateway mode) are passed on as they are.
    if !(status.is_client_error() || status.is_server_error())
        || res
            .extensions()
            .get::<crate::gateway::Passthrough>()
            .is_some()
    {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON) || ct.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (kind, detail) = ProblemKind::for_status(status);
    let mut problem = Problem::new(kind, detail).into_response();
    for name in KEPT_HEADERS {
        if let Some(v) = res.headers().get(&name) {
            problem.headers_mut().insert(name, v.clone());
        }
    }
    problem
}

/// Answers 503 `request_timeout` when the handler has not finished within the exact
/// configured time; the handler's future is dropped (its transaction, if any, rolls back).
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => Problem::new(
            ProblemKind::REQUEST_TIMEOUT,
            format!(
                "The request did not complete within {} ms.",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// A panic in a handler becomes a generic 500 problem; the panic message is logged only.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature CatchPanicLayer::custom requires"
)]
pub fn panic_to_problem(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    let cause = std::io::Error::other(format!("handler panicked: {msg}"));
    Problem::internal(&cause).into_response()
}

/// Whether a request may change state: every method but the safe ones (RFC 9110 §9.2.1).
pub(crate) fn is_write(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Marks the answer to a POST that wrote nothing (a GraphQL query): the relay is not woken.
#[derive(Debug, Clone, Copy)]
pub struct ReadOnly;

/// After a successful write, wakes the outbox relay: the events it committed leave at once
/// instead of at the next poll.
pub async fn wake_worker(
    axum::extract::State(wake): axum::extract::State<std::sync::Arc<tokio::sync::Notify>>,
    req: Request,
    next: Next,
) -> Response {
    let write = is_write(req.method());
    let res = next.run(req).await;
    if write && res.status().is_success() && res.extensions().get::<ReadOnly>().is_none() {
        wake.notify_one();
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_accepted_only_when_sane() {
        let ok = HeaderValue::from_static("abc-123_X.y");
        assert_eq!(accepted_request_id(&ok), Some("abc-123_X.y"));
        for bad in ["", "has space", "quote\"d", &"a".repeat(129)] {
            let v = HeaderValue::from_str(bad).expect("valid header bytes");
            assert_eq!(accepted_request_id(&v), None, "{bad:.20}");
        }
    }
}

/// Requests in flight on this node, against an exact cap (load shedding, ADR 0035).
#[derive(Debug)]
pub struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl InFlight {
    pub fn new(cap: usize) -> Self {
        Self {
            now: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }
}

/// Gives a request's place back however it ends (answered, failed or abandoned).
struct Place<'a>(&'a InFlight);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Past the node's cap on requests in flight, answers 503 `overloaded` with `Retry-After` at
/// once, before any other work; the probes and `/metrics` are never shed (an overloaded node
/// must still say so, and be seen).
pub async fn shed(State(in_flight): State<Arc<InFlight>>, req: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering;
    if matches!(req.uri().path(), "/livez" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let taken = in_flight.now.fetch_add(1, Ordering::AcqRel);
    let place = Place(&in_flight);
    if taken >= in_flight.cap {
        drop(place);
        return Problem::new(
            ProblemKind::OVERLOADED,
            "This node is serving as many requests as it may at once; retry after the pause.",
        )
        .with_header(header::RETRY_AFTER, "1")
        .into_response();
    }
    let res = next.run(req).await;
    drop(place);
    res
}
