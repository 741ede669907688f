//! CORS (the Fetch standard's CORS protocol; issue 23, ADR 0036): which browser pages may call
//! Keel and read its answers.
//!
//! - **Storefront** (`/v1/store/…`): each publishable key lists its exact origins. An answer
//!   grants (`Access-Control-Allow-Origin: <origin>`) only when the request's key allows the
//!   request's `Origin`; never credentials (a storefront call carries no cookie). A preflight
//!   carries no key (browsers send no custom header in it), so it is granted for an origin
//!   some active publishable key allows; the actual answer is then granted only by the key
//!   the request presents.
//! - **Staff** (`/v1/admin/…`, `/v1/me…`, `/v1/auth/…`): no CORS header at all unless the
//!   operator lists the admin console's origins (`KEEL_CORS__ADMIN_ORIGINS`); those get a
//!   grant with credentials (the cookie session).
//! - Never `*`, never a reflected origin that is not listed: an origin is compared exactly.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use keel_identity::domain::api_key::Origin;

use crate::AppState;

/// The operator's CORS settings.
#[derive(Debug)]
pub struct CorsSettings {
    /// The admin console's exact origins (`KEEL_CORS__ADMIN_ORIGINS`); empty: staff routes
    /// send no CORS header.
    pub admin_origins: Vec<Origin>,
    /// How long a browser may keep a preflight's answer (`KEEL_CORS__MAX_AGE_S`).
    pub max_age_s: u64,
    /// Preflight answers per origin (whether any publishable key allows it), for at most
    /// [`ORIGIN_TTL`].
    origins: Mutex<HashMap<Origin, (Instant, bool)>>,
}

/// How long a node reuses "does any publishable key allow this origin": a key's origins
/// changed elsewhere show in preflights within this.
const ORIGIN_TTL: Duration = Duration::from_secs(1);
/// Origins remembered at most (the cache starts afresh past it).
const ORIGINS_CACHED: usize = 10_000;

/// The request headers a browser page may send (lower case, as preflights list them).
const ALLOWED_HEADERS: [&str; 9] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "keel-cart-secret",
    "keel-publishable-key",
    "x-csrf-token",
    "x-request-id",
];
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// The answer headers a page may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str =
    "ETag, Location, Retry-After, RateLimit, RateLimit-Policy, X-Request-Id, Idempotent-Replayed";

impl CorsSettings {
    pub fn new(admin_origins: Vec<Origin>, max_age_s: u64) -> Self {
        Self {
            admin_origins,
            max_age_s,
            origins: Mutex::default(),
        }
    }

    pub fn admin_allows(&self, origin: &str) -> bool {
        self.admin_origins.iter().any(|o| o.as_str() == origin)
    }

    /// Whether any active publishable key allows `origin` (a failure to read grants nothing).
    async fn storefront_allows(&self, state: &AppState, origin: &Origin) -> bool {
        let now = Instant::now();
        if let Some((at, allowed)) = self
            .origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(origin)
            && now.duration_since(*at) < ORIGIN_TTL
        {
            return *allowed;
        }
        let allowed = state.keys.origin_allowed(origin).await.unwrap_or(false);
        let mut cached = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.len() >= ORIGINS_CACHED {
            // Expired answers leave first; a cache still full keeps what it has (the
            // storefronts' origins stay answered from memory) and this answer is not kept.
            cached.retain(|_, (at, _)| now.duration_since(*at) < ORIGIN_TTL);
        }
        if cached.len() < ORIGINS_CACHED {
            cached.insert(origin.clone(), (now, allowed));
        }
        allowed
    }
}

/// Which CORS rules a path falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Storefront,
    Staff,
    None,
}

impl Surface {
    pub fn of(path: &str) -> Self {
        if path.starts_with("/v1/store/") {
            Self::Storefront
        } else if crate::auth::is_staff_route(path) || path.starts_with("/v1/auth/") {
            Self::Staff
        } else {
            Self::None
        }
    }
}

/// The request's `Origin`, when it has exactly one readable.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Answers CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) at
/// once: a grant for an allowed origin asking for allowed headers, otherwise `204` with no
/// grant (the browser then refuses the call). `None` for every other request. Part of the
/// edge middleware (`ratelimit::limit`), after the client address's limits, for routed paths
/// only (a path no route has is a 404 without a grant, and costs no lookup).
pub async fn preflight(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = origin(headers)?.to_owned();
    let surface = Surface::of(path);
    let settings = &state.cors;
    let granted = match surface {
        Surface::Storefront => match Origin::parse(&origin) {
            Ok(o) => settings.storefront_allows(state, &o).await,
            Err(_) => false,
        },
        Surface::Staff => settings.admin_allows(&origin),
        Surface::None => false,
    };
    let headers_ok = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .map_or(Some(()), |v| {
            v.to_str().ok().and_then(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| ALLOWED_HEADERS.contains(&h.as_str()))
                    .then_some(())
            })
        })
        .is_some();
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    if granted && headers_ok {
        grant(h, &origin, surface == Surface::Staff);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, Keel-Cart-Secret, Keel-Publishable-Key, X-CSRF-Token, X-Request-Id",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(settings.max_age_s),
        );
    }
    Some(res)
}

/// The grant itself: the exact origin (never `*`), and credentials for the admin console.
fn grant(h: &mut HeaderMap, origin: &str, credentials: bool) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        if credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// Adds CORS to an actual answer: `Vary: Origin` on every storefront and staff answer (a
/// shared cache must not hand one origin's grant to another), and the grant when `allowed`.
pub fn actual(res: &mut Response, surface: Surface, origin: Option<&str>, allowed: bool) {
    if surface == Surface::None {
        return;
    }
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (Some(origin), true) = (origin, allowed) {
        grant(h, origin, surface == Surface::Staff);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

/// Whether the operator's admin console origin list holds `origin`.
pub fn admin_allows(state: &AppState, origin: &str) -> bool {
    state.cors.admin_allows(origin)
}
