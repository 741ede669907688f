//! Gateway mode (issue 23, ADR 0038): Keel in front of a legacy shop API, answering the routes
//! it owns and forwarding the rest, so route ownership moves from the legacy API to Keel one
//! prefix at a time by configuration (the strangler fig).
//!
//! A forwarded request keeps Keel's edge: its request id, the client-address rule (behind
//! trusted proxies the forwarded client), the client address's rate limit, the body and time
//! limits; hop-by-hop headers are stripped both ways, `Forwarded` is appended, bodies stream
//! through, and the upstream call goes through the resilience kit's circuit breaker and
//! bulkhead with an exact timeout. A prefix may require Keel's staff authentication first;
//! the principal then reaches the legacy API as signed headers, never Keel's credential. The
//! upstream is the operator's setting, never derived from a request: no SSRF surface.

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use hmac::{Hmac, KeyInit, Mac};
use keel_resilience::{CallError, Dependency, Failure};

use crate::{
    AppState,
    middleware::{REQUEST_ID, RequestId},
    problem::{Problem, ProblemKind},
};

/// The URL type of the upstream setting.
pub use reqwest::Url;

/// Who answers a path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The legacy API, as the client sent it (its own authentication).
    Legacy,
    /// The legacy API, once Keel has authenticated the staff member or secret key; the
    /// principal goes along as signed headers.
    LegacyAuthenticated,
    /// Keel, even where the legacy API has the same paths.
    Keel,
}

/// The operator's gateway settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The legacy API's base (`https://legacy.internal`, optionally with a base path).
    pub upstream: reqwest::Url,
    /// Prefixes and who answers them (the longest matching prefix decides); a path no prefix
    /// names is Keel's when Keel has a route for it, the legacy API's otherwise.
    pub routes: Vec<(String, Owner)>,
    /// The key the principal headers are signed with (`KEEL_GATEWAY__SIGNING_SECRET`).
    pub signing_secret: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub policy: keel_resilience::Policy,
    /// Keel's token issuer: a Bearer JWT it issued is Keel's credential, never forwarded.
    pub keel_issuer: String,
}

/// The gateway: its settings, HTTP client and dependency (breaker, bulkhead).
#[derive(Debug)]
pub struct Gateway {
    settings: GatewaySettings,
    client: reqwest::Client,
    dependency: Dependency,
}

impl Gateway {
    pub fn new(settings: GatewaySettings) -> Result<Self, String> {
        let signs = settings
            .routes
            .iter()
            .any(|(_, o)| *o == Owner::LegacyAuthenticated);
        if signs
            && settings
                .signing_secret
                .as_ref()
                .is_none_or(|s| s.len() < 32)
        {
            return Err("a `legacy-auth` route needs a signing secret of at least 32 bytes".into());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // A stalled answer body fails instead of holding its connection for ever.
            .read_timeout(settings.policy.attempt_timeout)
            // The legacy API's redirects are the client's to follow, not Keel's.
            .redirect(reqwest::redirect::Policy::none())
            // The upstream is reached directly: no proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|e| format!("the gateway's HTTP client: {e}"))?;
        let dependency = Dependency::new("gateway", settings.policy.clone());
        Ok(Self {
            settings,
            client,
            dependency,
        })
    }

    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    /// Who answers `path`: the longest configured prefix (matched on whole segments), else
    /// Keel for a route it has, else the legacy API. Keel's probes and metrics are Keel's.
    pub fn owner(&self, path: &str, keel_route: bool) -> Owner {
        if matches!(path, "/livez" | "/readyz" | "/metrics") {
            return Owner::Keel;
        }
        self.settings
            .routes
            .iter()
            .filter(|(prefix, _)| covers(prefix, path))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(
                if keel_route {
                    Owner::Keel
                } else {
                    Owner::Legacy
                },
                |(_, owner)| *owner,
            )
    }
}

/// Whether a request target may be forwarded as it is: an origin-form path (`/…`) without
/// dot segments, backslashes or percent-encoded `/`, `\` or `.`, which the legacy API (or
/// a URL parser on the way) could resolve to another path than the one ownership was
/// decided on.
fn forwardable(uri: &axum::http::Uri) -> bool {
    let path = uri.path();
    let lower = path.to_ascii_lowercase();
    path.starts_with('/')
        && !path.contains('\\')
        && !["%2f", "%5c", "%2e"].iter().any(|e| lower.contains(e))
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Whether `prefix` covers `path` on whole segments (`/legacy` covers `/legacy` and
/// `/legacy/x`, not `/legacyx`).
fn covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded either way,
/// with those a `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The principal headers a client sent are never trusted: only Keel signs them.
const PRINCIPAL: &str = "keel-principal";
const PRINCIPAL_TIMESTAMP: &str = "keel-principal-timestamp";
const PRINCIPAL_SIGNATURE: &str = "keel-principal-signature";

/// Keel's own cookies stay with Keel.
fn without_keel_cookies(headers: &mut HeaderMap) {
    let kept: Vec<&str> = crate::browser::cookie_pairs(headers)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or_default();
            !(name.starts_with("keel_")
                || name.starts_with("__Secure-keel_")
                || name.starts_with("__Host-keel_"))
        })
        .collect();
    let kept = HeaderValue::from_str(&kept.join("; "))
        .ok()
        .filter(|v| !v.is_empty());
    headers.remove(header::COOKIE);
    if let Some(v) = kept {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether the request's `Authorization` carries a Keel credential: a secret or publishable
/// key, or a JWT Keel issued (its payload's `iss`, read without verifying: this only decides
/// what is not forwarded).
fn is_keel_credential(headers: &HeaderMap, issuer: &str) -> bool {
    let Some(token) = crate::auth::bearer_token(headers) else {
        return false;
    };
    if token.starts_with("sk_") || token.starts_with("pk_") {
        return true;
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|claims| claims["iss"] == issuer)
}

/// `for=…` of a `Forwarded` element (RFC 7239: IPv6 quoted in brackets).
fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("for={a}"),
        IpAddr::V6(a) => format!("for=\"[{a}]\""),
    }
}

/// The principal line: `kind=staff;tenant=…;id=…;role=…` or `kind=key;tenant=…;id=…;scopes=…`.
fn principal_line(p: &crate::auth::AdminPrincipal) -> String {
    match &p.actor {
        crate::auth::AdminActor::Staff(s) => format!(
            "kind=staff;tenant={};id={};role={}",
            p.tenant_id, s.user_id, s.role
        ),
        crate::auth::AdminActor::Key(k) => format!(
            "kind=key;tenant={};id={};scopes={}",
            p.tenant_id,
            k.key_id,
            k.scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// `v1=<hex HMAC-SHA256(secret, timestamp "\n" request id "\n" method "\n" path and query
/// "\n" principal)>`: the legacy API checks it with the shared secret, and a signature made
/// for one request, or one older than its tolerance, proves nothing for another.
pub fn sign(
    secret: &[u8],
    timestamp: i64,
    request_id: &str,
    method: &str,
    target: &str,
    principal: &str,
) -> String {
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    for part in [
        timestamp.to_string().as_str(),
        request_id,
        method,
        target,
        principal,
    ] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    format!("v1={hex}")
}

/// The middleware: forwards what the legacy API answers, after Keel's edge has admitted it;
/// everything else goes on to Keel.
///
/// Part of the edge middleware (`ratelimit::limit`, one layer rather than several: every
/// layer costs each request a boxed service and future). `Err` gives the request back for
/// Keel to answer.
pub async fn forward(state: &AppState, req: Request) -> Result<Response, Request> {
    let Some(gateway) = state.gateway.clone() else {
        return Err(req);
    };
    let keel_route = req.extensions().get::<MatchedPath>().is_some();
    let owner = gateway.owner(req.uri().path(), keel_route);
    if owner == Owner::Keel {
        return Err(req);
    }
    // Who owns a path is decided on the path as sent; the legacy API must see that same
    // path, so nothing it could read differently (dot segments, encoded slashes or dots,
    // backslashes) is forwarded.
    if !forwardable(req.uri()) {
        return Ok(Problem::new(
            ProblemKind::BAD_REQUEST,
            "This path cannot be forwarded (dot segments, encoded `/`, `\\` or `.` are refused).",
        )
        .into_response());
    }
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return Err(req);
    };
    let client = state.client_addr.client_addr(peer.ip(), req.headers());
    if let Some(refusal) = state.limits.admit_client(client).await {
        return Ok(refusal);
    }
    let principal = if owner == Owner::LegacyAuthenticated {
        match crate::auth::admin_for_gateway(state, req.headers()).await {
            Ok(p) => Some(p),
            Err(problem) => return Ok(problem.into_response()),
        }
    } else {
        None
    };
    Ok(
        match send(state, &gateway, req, client, principal.as_ref()).await {
            Ok(res) => res,
            Err(problem) => problem.into_response(),
        },
    )
}

async fn send(
    state: &AppState,
    gateway: &Gateway,
    req: Request,
    client: IpAddr,
    principal: Option<&crate::auth::AdminPrincipal>,
) -> Result<Response, Problem> {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let base = &gateway.settings.upstream;
    let url = format!("{}{}", base.as_str().trim_end_matches('/'), target);
    let url = reqwest::Url::parse(&url)
        .map_err(|_| Problem::new(ProblemKind::BAD_REQUEST, "The path cannot be forwarded."))?;
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let headers = upstream_headers(state, gateway, &parts, client, principal, &request_id);
    // A body streams through once: the call is never retried.
    let mut body = Some(reqwest::Body::wrap_stream(body.into_data_stream()));
    let method = parts.method.clone();
    let answer = gateway
        .dependency
        .call(false, || {
            let request = gateway
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .body(
                    body.take()
                        .unwrap_or_else(|| reqwest::Body::from(Vec::new())),
                );
            async move {
                // Any answer, a 5xx included, is the legacy API's to pass on as it is; only
                // no answer (refused, broken, timed out) counts against its circuit.
                match request.send().await {
                    Ok(res) => Ok(res),
                    // The client's body failed (over the limit, cut short): the request was
                    // wrong, not the legacy API, whose circuit is not charged for it.
                    Err(e) if crate::extract::over_body_limit(&e) => Err(Failure::Rejected(413)),
                    Err(e) if e.is_body() => Err(Failure::Rejected(400)),
                    Err(e) if e.is_timeout() => Err(Failure::Timeout),
                    Err(e) => Err(Failure::Connect(crate::problem::error_chain(&e))),
                }
            }
        })
        .await;
    answer.map(back).map_err(|e| problem_for(&e))
}

/// The headers the legacy API gets: the client's, without hop-by-hop ones, Keel's cookies,
/// made-up principal headers or (from an untrusted peer) forwarding claims; with Keel's
/// request id, a `Forwarded` element for the client, and the principal signed.
fn upstream_headers(
    state: &AppState,
    gateway: &Gateway,
    parts: &axum::http::request::Parts,
    client: IpAddr,
    principal: Option<&crate::auth::AdminPrincipal>,
    request_id: &str,
) -> HeaderMap {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    without_keel_cookies(&mut headers);
    for name in [
        PRINCIPAL,
        PRINCIPAL_TIMESTAMP,
        PRINCIPAL_SIGNATURE,
        // Keel's own credentials and tokens stay with Keel.
        "keel-publishable-key",
        "keel-cart-secret",
        "x-csrf-token",
        // Headers some frameworks let override the path, method or origin: Keel decided
        // those, and `Forwarded` says who the client is.
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-real-ip",
    ] {
        headers.remove(name);
    }
    if is_keel_credential(&headers, &gateway.settings.keel_issuer) {
        headers.remove(header::AUTHORIZATION);
    }
    headers.remove(header::HOST);
    // The client's own forwarding claims count only from a trusted proxy (ADR 0028).
    let trusted = state.client_addr.trusts(peer_of(parts));
    if !trusted {
        headers.remove(header::FORWARDED);
        headers.remove("x-forwarded-for");
    }
    let proto = if state.browser.tls { "https" } else { "http" };
    // The Host a client sent goes into the element only if it is a plain host[:port]: a
    // quote or separator would let a client write elements of its own.
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    let element = if host_ok {
        format!("{};proto={proto};host=\"{host}\"", forwarded_for(client))
    } else {
        format!("{};proto={proto}", forwarded_for(client))
    };
    headers.append(
        header::FORWARDED,
        HeaderValue::from_str(&element).unwrap_or(HeaderValue::from_static("for=unknown")),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    if let Some(p) = principal {
        // Keel's credential stays with Keel; the legacy API gets the principal, signed.
        headers.remove(header::AUTHORIZATION);
        let secret = gateway
            .settings
            .signing_secret
            .as_deref()
            .unwrap_or_default();
        let line = principal_line(p);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(
            secret,
            now,
            request_id,
            parts.method.as_str(),
            target,
            &line,
        );
        for (name, value) in [
            (PRINCIPAL, line),
            (PRINCIPAL_TIMESTAMP, now.to_string()),
            (PRINCIPAL_SIGNATURE, signature),
        ] {
            // Ids, roles and scopes are ASCII: this never fails, and if it did the
            // principal would be missing, which the legacy API refuses.
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
    headers
}

/// The problem a failed upstream call answers.
fn problem_for(e: &CallError) -> Problem {
    match e {
        CallError::Open { retry_after } => Problem::new(
            ProblemKind::SERVICE_UNAVAILABLE,
            "The legacy API is failing (its circuit is open); nothing was sent. Retry after the pause.",
        )
        .with_header_value(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        ),
        CallError::Busy => Problem::new(
            ProblemKind::OVERLOADED,
            "The gateway is forwarding as many requests as it may; retry after the pause.",
        )
        .with_header(header::RETRY_AFTER, "1"),
        CallError::Failed(Failure::Timeout) => Problem::new(
            ProblemKind::UPSTREAM_TIMEOUT,
            "The legacy API did not answer in time.",
        ),
        CallError::Failed(Failure::Rejected(413)) => crate::extract::body_too_large(),
        CallError::Failed(Failure::Rejected(_)) => {
            Problem::new(ProblemKind::BAD_REQUEST, "The body could not be read.")
        }
        CallError::Failed(_) => Problem::new(
            ProblemKind::UPSTREAM_UNAVAILABLE,
            "The legacy API could not be reached.",
        ),
    }
}

fn peer_of(parts: &axum::http::request::Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Marks an answer as the legacy API's: passed on as it is (no problem rewriting).
#[derive(Debug, Clone, Copy)]
pub struct Passthrough;

/// The legacy API's answer, streamed back without its hop-by-hop headers.
fn back(res: reqwest::Response) -> Response {
    let status = res.status();
    let mut headers = res.headers().clone();
    strip_hop_by_hop(&mut headers);
    let mut out = Response::new(Body::from_stream(res.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.extensions_mut().insert(Passthrough);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        assert!(covers("/legacy", "/legacy"));
        assert!(covers("/legacy", "/legacy/x"));
        assert!(covers("/legacy/", "/legacy/x"));
        assert!(!covers("/legacy", "/legacyx"));
        assert!(covers("/", "/anything"));
    }

    #[test]
    fn only_paths_read_the_same_everywhere_are_forwarded() {
        for ok in ["/legacy/a", "/a%20b", "/"] {
            assert!(forwardable(&ok.parse().expect("uri")), "{ok}");
        }
        for bad in [
            "/x/../admin",
            "/x/./a",
            "/x/%2e%2e/admin",
            "/x/.%2E/a",
            "/x%2fadmin",
            "/x%5Cadmin",
            "*",
        ] {
            assert!(!forwardable(&bad.parse().expect("uri")), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-end-to-end", "kept"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn a_signature_binds_every_part() {
        let base = sign(b"secret", 1, "rid", "GET", "/a?b=1", "kind=staff");
        for other in [
            sign(b"other", 1, "rid", "GET", "/a?b=1", "kind=staff"),
            sign(b"secret", 2, "rid", "GET", "/a?b=1", "kind=staff"),
            sign(b"secret", 1, "rie", "GET", "/a?b=1", "kind=staff"),
            sign(b"secret", 1, "rid", "PUT", "/a?b=1", "kind=staff"),
            sign(b"secret", 1, "rid", "GET", "/a?b=2", "kind=staff"),
            sign(b"secret", 1, "rid", "GET", "/a?b=1", "kind=key"),
        ] {
            assert_ne!(base, other);
        }
        assert!(base.starts_with("v1=") && base.len() == 3 + 64);
    }
}
