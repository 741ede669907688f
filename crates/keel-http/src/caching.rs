//! HTTP caching and optimistic concurrency (RFC 9110 §8.8.3, §13.1): strong `ETag`s on
//! single-resource reads, `If-None-Match` → 304, `If-Match` → 412 when stale.
//!
//! Admin resources carry a version that moves on every change to anything in their
//! representation, so their ETag is `"v<version>"` and `If-Match` maps straight onto the
//! optimistic-concurrency check of the write. Storefront representations also depend on stock
//! and the requested currency, so their ETag is a digest of the body itself.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::problem::{Problem, ProblemKind};

/// The strong ETag of a versioned resource.
pub fn version_etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"v{version}\""))
        .expect("digits and quotes are a valid header value")
}

/// A strong ETag from the representation's bytes.
pub fn body_etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let tag = URL_SAFE_NO_PAD.encode(&digest[..16]);
    HeaderValue::from_str(&format!("\"{tag}\""))
        .expect("base64url and quotes are a valid header value")
}

/// The entity tags of a conditional header, `*` as `None`.
fn tags(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        for tag in text.split(',') {
            out.push(tag.trim().to_owned());
        }
    }
    Some(out)
}

/// `If-Match`: the version the client last saw. Absent: no precondition. `*`: any current
/// representation. A tag that names no version of ours (weak, malformed, foreign) can never
/// match, so it is a version no resource has (`0`) and the write answers 412.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::IF_MATCH) {
            return Ok(Self(None));
        }
        let tags = tags(&parts.headers, header::IF_MATCH).ok_or_else(|| {
            Problem::new(
                ProblemKind::BAD_REQUEST,
                "`If-Match` is not a list of entity tags.",
            )
        })?;
        if tags.iter().any(|t| t == "*") {
            return Ok(Self(None));
        }
        // Strong comparison: only `"v<digits>"` can name a version.
        let version = tags
            .iter()
            .find_map(|t| {
                t.strip_prefix("\"v")?
                    .strip_suffix('"')?
                    .parse::<i64>()
                    .ok()
            })
            .filter(|v| *v >= 1)
            .unwrap_or(0);
        Ok(Self(Some(version)))
    }
}

/// `If-None-Match` of a read, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfNoneMatch(Option<Vec<String>>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

impl IfNoneMatch {
    /// The request's `If-None-Match`; absent or unreadable matches nothing.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        if !headers.contains_key(header::IF_NONE_MATCH) {
            return Self(None);
        }
        Self(tags(headers, header::IF_NONE_MATCH))
    }

    /// Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`; `*` matches anything.
    pub fn matches(&self, etag: &HeaderValue) -> bool {
        let Some(tags) = &self.0 else {
            return false;
        };
        let current = etag.to_str().unwrap_or_default();
        tags.iter()
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == current)
    }
}

/// A JSON representation with its ETag, or 304 when the client already has it. `cache` is
/// the `Cache-Control` to send (the middleware's `no-store` applies when `None`).
pub fn conditional_json(
    body: &impl serde::Serialize,
    etag: HeaderValue,
    if_none_match: &IfNoneMatch,
    cache: Option<HeaderValue>,
    vary: Option<&'static str>,
) -> Response {
    let mut res = if if_none_match.matches(&etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    if let Some(c) = cache {
        h.insert(header::CACHE_CONTROL, c);
    }
    if let Some(v) = vary {
        h.insert(header::VARY, HeaderValue::from_static(v));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn if_match(values: &[&str]) -> IfMatch {
        let mut req = axum::http::Request::builder();
        for v in values {
            req = req.header(header::IF_MATCH, *v);
        }
        let (mut parts, ()) = req.body(()).expect("request").into_parts();
        IfMatch::from_request_parts(&mut parts, &())
            .await
            .expect("parsed")
    }

    #[tokio::test]
    async fn if_match_names_a_version_or_one_that_never_matches() {
        assert_eq!(if_match(&[]).await, IfMatch(None));
        assert_eq!(if_match(&["*"]).await, IfMatch(None));
        assert_eq!(if_match(&["\"v7\""]).await, IfMatch(Some(7)));
        assert_eq!(if_match(&["\"x\", \"v3\""]).await, IfMatch(Some(3)));
        assert_eq!(
            if_match(&["W/\"v7\""]).await,
            IfMatch(Some(0)),
            "weak tags never match"
        );
        assert_eq!(if_match(&["\"v-1\""]).await, IfMatch(Some(0)));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let etag = version_etag(4);
        let m = |t: &str| IfNoneMatch(Some(vec![t.to_owned()])).matches(&etag);
        assert!(m("\"v4\""));
        assert!(m("W/\"v4\""));
        assert!(m("*"));
        assert!(!m("\"v5\""));
        assert!(!IfNoneMatch(None).matches(&etag));
        assert_ne!(body_etag(b"a"), body_etag(b"b"));
        assert_eq!(body_etag(b"a"), body_etag(b"a"));
    }
}
