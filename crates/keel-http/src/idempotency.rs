//! `Idempotency-Key` on money-moving POSTs, with Stripe's semantics: the first response (any
//! status) to a key is stored and replayed for the configured time with `Idempotent-Replayed:
//! true`; the same key with a different request is 422 `idempotency_key_reused`; a request
//! while another with the key is in flight is 409 `idempotency_request_in_progress`. A key
//! belongs to a tenant and a credential, so two shoppers' keys never meet.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use keel_kernel::idempotency::{IdempotencyBegin, IdempotencyKey};
use sha2::{Digest, Sha256};

use crate::{
    AppState,
    problem::{Problem, ProblemKind},
};

/// The header name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Stored responses larger than this are refused rather than truncated (the largest real one,
/// an order of 100 lines, is far smaller).
const MAX_STORED_BODY: usize = 1_048_576;

/// The key a request sent: 1 to 255 visible ASCII characters. Required on the routes that
/// create orders, payments, refunds and fulfilments.
pub fn required_key(headers: &HeaderMap) -> Result<String, Problem> {
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        Problem::new(
            ProblemKind::IDEMPOTENCY_KEY_REQUIRED,
            "Send an `Idempotency-Key` header (e.g. a UUID) so a retry cannot repeat this operation.",
        )
    })?;
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            ProblemKind::BAD_REQUEST,
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters.",
        ));
    }
    Ok(key.to_owned())
}

/// The fingerprint of a request: method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().to_vec()
}

fn stored_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    res
}

/// Marks a response whose answer the work already stored with its own writes, in the same
/// transaction (an order's receipt): [`once`] stores nothing more for it.
#[derive(Debug, Clone, Copy)]
pub struct StoredWithWork;

/// Runs `work` at most once per key: claims the key, runs, stores the response and answers it
/// (unless the work stored it itself, [`StoredWithWork`]); or replays the stored response; or
/// refuses a reused or in-flight key.
pub async fn once(
    state: &AppState,
    key: IdempotencyKey,
    request: Vec<u8>,
    work: impl Future<Output = Response> + Send,
) -> Result<Response, Problem> {
    let now = time::OffsetDateTime::now_utc();
    match state
        .idempotency
        .begin(
            &key,
            &request,
            now,
            now + state.idempotency_lock,
            now + state.idempotency_ttl,
        )
        .await?
    {
        IdempotencyBegin::InFlight => Err(Problem::new(
            ProblemKind::IDEMPOTENCY_REQUEST_IN_PROGRESS,
            "A request with this Idempotency-Key is still being processed; retry shortly.",
        )),
        IdempotencyBegin::Done {
            request_hash,
            status,
            body,
        } => {
            if request_hash == request {
                Ok(stored_response(status, body))
            } else {
                Err(Problem::new(
                    ProblemKind::IDEMPOTENCY_KEY_REUSED,
                    "This Idempotency-Key was used with a different request; use a new key.",
                ))
            }
        }
        IdempotencyBegin::Started => {
            let res = work.await;
            if res.extensions().get::<StoredWithWork>().is_some() {
                return Ok(res);
            }
            let (parts, body) = res.into_parts();
            let bytes = axum::body::to_bytes(body, MAX_STORED_BODY)
                .await
                .map_err(|e| Problem::internal(&std::io::Error::other(e.to_string())))?;
            let text = String::from_utf8(bytes.to_vec()).map_err(|e| Problem::internal(&e))?;
            state
                .idempotency
                .finish(&key, parts.status.as_u16(), &text)
                .await?;
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
    }
}
