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

/// The longest key accepted, in bytes.
pub const KEY_MAX_LEN: usize = 255;

/// [`required_key`]'s rule as a regular expression, for the document: visible ASCII (`!` to `~`).
pub const KEY_PATTERN: &str = "^[!-~]+$";

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
    check_key(key)?;
    Ok(key.to_owned())
}

/// An idempotency key as any transport takes it: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > KEY_MAX_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            ProblemKind::BAD_REQUEST,
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters.",
        ));
    }
    Ok(())
}

/// The fingerprint of a request: method, path, whether it had a body, and the body's canonical
/// JSON form (object members sorted by key, no insignificant whitespace), so a retry that
/// serialises the same parameters differently replays, and a request with other parameters,
/// or a body where the first had none, is a different request (422). Stripe compares
/// parameters, not bytes. A body that is not JSON is hashed as it is (its answer is a 400).
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = route_hash(method, path);
    if body.is_empty() {
        h.update([0]);
    } else if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        h.update([1]);
        let mut canonical = Vec::with_capacity(body.len());
        write_canonical(&value, &mut canonical);
        h.update(&canonical);
    } else {
        h.update([2]);
        h.update(body);
    }
    h.finalize().to_vec()
}

/// What a request is compared by: its fingerprint, and for keys stored by a node from before
/// ADR 0031 (which hashed the raw body; checkout and payment, no body at all) the fingerprint
/// such a node made, so a retry during a rolling upgrade, or within a key's time to live after
/// it, still replays instead of answering 422 (a client could read that as "not done" and
/// repeat a refund under a new key). Drop the old form one release after ADR 0031.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    current: Vec<u8>,
    before_0031: Vec<u8>,
}

impl Fingerprint {
    /// `old_body` is what a node from before ADR 0031 hashed for this request.
    pub fn of(method: &str, path: &str, body: &[u8], old_body: &[u8]) -> Self {
        Self {
            current: fingerprint(method, path, body),
            before_0031: raw_fingerprint(method, path, old_body),
        }
    }

    fn matches(&self, stored: &[u8]) -> bool {
        stored == self.current || stored == self.before_0031
    }
}

/// The fingerprint of nodes from before ADR 0031: method, path and the body's bytes.
fn raw_fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = route_hash(method, path);
    h.update(body);
    h.finalize().to_vec()
}

/// Both fingerprints start with the method and path, each ended by a NUL (neither holds one:
/// the method is a literal, the path is built from parsed ids).
fn route_hash(method: &str, path: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h
}

/// Writes `value` as JSON with every object's members in key order (byte order of the keys)
/// and no whitespace. Numbers keep their parsed form: `100` and `100.0` differ (types matter).
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &(impl serde::Serialize + ?Sized), out: &mut Vec<u8>) {
    // Writing a string or a scalar `Value` into a `Vec` cannot fail: no I/O, no map keys.
    serde_json::to_writer(&mut *out, value).expect("a JSON scalar serialises into memory");
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
    request: Fingerprint,
    work: impl Future<Output = Response> + Send,
) -> Result<Response, Problem> {
    let now = time::OffsetDateTime::now_utc();
    match state
        .idempotency
        .begin(
            &key,
            &request.current,
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
            if request.matches(&request_hash) {
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

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn the_same_parameters_in_another_serialisation_have_one_fingerprint() {
        let a = fingerprint(
            "POST",
            "/p",
            br#"{"amount": 100, "lines": [{"a": 1, "b": [true, null]}]}"#,
        );
        let b = fingerprint(
            "POST",
            "/p",
            b"{ \"lines\" : [ { \"b\":[true,null], \"a\":1 } ],\n \"amount\" : 100 }",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn other_values_types_bodies_or_routes_have_other_fingerprints() {
        let base = fingerprint("POST", "/p", br#"{"amount": 100}"#);
        for (method, path, body) in [
            ("POST", "/p", &br#"{"amount": 101}"#[..]),
            ("POST", "/p", br#"{"amount": "100"}"#),
            ("POST", "/p", br#"{"amount": 100.0}"#),
            ("POST", "/p", br#"{"amount": 100, "note": null}"#),
            ("POST", "/p", br#"[{"amount": 100}]"#),
            ("POST", "/p", b""),
            ("POST", "/q", br#"{"amount": 100}"#),
            ("PUT", "/p", br#"{"amount": 100}"#),
        ] {
            assert_ne!(
                base,
                fingerprint(method, path, body),
                "{method} {path} {body:?}"
            );
        }
        // No body, an empty object and `null` are three different requests.
        let none = fingerprint("POST", "/p", b"");
        assert_ne!(none, fingerprint("POST", "/p", b"{}"));
        assert_ne!(none, fingerprint("POST", "/p", b"null"));
        assert_ne!(
            fingerprint("POST", "/p", b"{}"),
            fingerprint("POST", "/p", b"null")
        );
    }

    #[test]
    fn a_key_stored_before_canonical_fingerprints_still_matches_its_retry() {
        use super::{Fingerprint, raw_fingerprint};
        let body = br#"{"amount": 100}"#;
        let retry = Fingerprint::of("POST", "/p", body, body);
        assert!(
            retry.matches(&raw_fingerprint("POST", "/p", body)),
            "stored by an old node"
        );
        assert!(retry.matches(&fingerprint("POST", "/p", br#"{"amount":100}"#)));
        assert!(!retry.matches(&raw_fingerprint("POST", "/p", br#"{"amount": 101}"#)));
        // Checkout: old nodes hashed no body, whatever was sent.
        let checkout = Fingerprint::of("POST", "/c", b"", b"");
        assert!(checkout.matches(&raw_fingerprint("POST", "/c", b"")));
        assert!(
            !Fingerprint::of("POST", "/c", b"{}", b"").matches(&fingerprint("POST", "/c", b""))
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_compared_byte_for_byte() {
        assert_eq!(
            fingerprint("POST", "/p", b"{oops"),
            fingerprint("POST", "/p", b"{oops")
        );
        assert_ne!(
            fingerprint("POST", "/p", b"{oops"),
            fingerprint("POST", "/p", b"{oops ")
        );
    }
}
