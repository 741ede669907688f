//! The edge middleware: the client's rules, identification, the shop's rules and places.

use super::rules::{
    Caller, RATELIMIT, RATELIMIT_POLICY, ShopRequest, client_rules, headers, is_auth_route,
    shop_rules,
};
#[allow(clippy::wildcard_imports)]
use super::*;

/// The edge middleware's state: the application and this node's places per shop.
#[derive(Debug, Clone)]
pub struct Edge {
    pub app: AppState,
    pub shops: Arc<ShopsInFlight>,
}

/// Requests in flight per shop on this node, each shop held to an exact cap.
#[derive(Debug)]
pub struct ShopsInFlight {
    cap: usize,
    now: Mutex<HashMap<(TenantId, bool), usize>>,
}

impl ShopsInFlight {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            now: Mutex::default(),
        }
    }

    /// A place for one request of `tenant` (its storefront's, or its staff's: each has `cap`,
    /// so a storefront flood never keeps staff out), or `None` when all are taken.
    fn take(self: &Arc<Self>, tenant: TenantId, staff: bool) -> Option<ShopPlace> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let n = now.entry((tenant, staff)).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(ShopPlace {
            shops: self.clone(),
            key: (tenant, staff),
        })
    }
}

/// A request's place among its shop's in flight, given back however the request ends.
struct ShopPlace {
    shops: Arc<ShopsInFlight>,
    key: (TenantId, bool),
}

impl Drop for ShopPlace {
    fn drop(&mut self) {
        let mut now = self
            .shops
            .now
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = now.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                now.remove(&self.key);
            }
        }
    }
}

/// The middleware, in front of every handler: the client address's rules first (nothing
/// known of the caller yet, nothing spent on it), then the credential authenticated once (the
/// extractors reuse it) and the shop's rules, then the shop's place in flight. A refusal
/// answers 429 (or 503 when the shop has its cap in flight) before the handler runs: nothing
/// is done. An admitted answer carries the headers of every limit decided.
pub async fn limit(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    let state = &edge.app;
    // Gateway mode first: a forwarded route is held to the client address's limit there.
    let mut req = match crate::gateway::forward(state, req).await {
        Ok(forwarded) => return forwarded,
        Err(req) => req,
    };
    let settings = &state.limits.settings;
    // The template shared (an `Arc` inside), not copied per request.
    let Some(matched) = req.extensions().get::<MatchedPath>().cloned() else {
        return next.run(req).await;
    };
    let route = matched.as_str();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    // The client address only when limits are decided (its forwarding rule costs a parse).
    let client_octets = peer.filter(|_| settings.enabled).map(|ip| {
        match keel_kernel::net::client_key(state.client_addr.client_addr(ip, req.headers())) {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        }
    });
    let limiting = client_octets.is_some();
    let client = client_octets.unwrap_or_default();
    let mut decided: Vec<(Rule, Decision)> = Vec::new();
    if limiting {
        let rules = client_rules(settings, req.method(), route, &client);
        if let Some(refusal) = state.limits.decide(rules, &mut decided).await {
            return refusal;
        }
    }
    if let Some(answer) =
        crate::cors::preflight(state, req.method(), req.uri().path(), req.headers()).await
    {
        return answer;
    }
    let identified = crate::auth::identify(state, route, req.headers()).await;
    let tenant = identified.tenant();
    let principal = identified.principal();
    let surface = crate::cors::Surface::of(req.uri().path());
    let origin = crate::cors::origin(req.headers()).map(str::to_owned);
    let granted = origin.as_deref().is_some_and(|o| match surface {
        crate::cors::Surface::Storefront => identified.allows_origin(o),
        crate::cors::Surface::Staff => crate::cors::admin_allows(state, o),
        crate::cors::Surface::None => false,
    });
    req.extensions_mut().insert(identified);
    let known = Known {
        route,
        client: &client,
        limiting,
        tenant,
        principal,
    };
    let mut res = shop_step(&edge, req, next, known, decided).await;
    crate::cors::actual(&mut res, surface, origin.as_deref(), granted);
    res
}

/// What the edge knows of a request once its caller is identified.
struct Known<'a> {
    route: &'a str,
    client: &'a [u8],
    limiting: bool,
    tenant: Option<TenantId>,
    principal: Option<uuid::Uuid>,
}

/// The shop's rules, its place in flight, and the handler, once the caller is identified.
async fn shop_step(
    edge: &Edge,
    mut req: Request,
    next: Next,
    known: Known<'_>,
    mut decided: Vec<(Rule, Decision)>,
) -> Response {
    let state = &edge.app;
    let settings = &state.limits.settings;
    let Known {
        route,
        client,
        limiting,
        tenant,
        principal,
    } = known;
    if limiting
        && let Some(tenant) = tenant
        && !is_auth_route(req.method(), route)
    {
        let shop = state.limits.tenant(tenant).await;
        let credential = crate::auth::bearer_token(req.headers()).unwrap_or_default();
        let cart_secret = req
            .headers()
            .get("keel-cart-secret")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let rules = shop_rules(
            settings,
            &shop,
            &ShopRequest {
                tenant,
                principal,
                method: req.method(),
                route,
                path: req.uri().path(),
            },
            &Caller {
                credential,
                cart_secret,
                client,
            },
        );
        if let Some(refusal) = state.limits.decide(rules, &mut decided).await {
            return refusal;
        }
    }
    // The body is read before a place is taken: a client sending its body slowly holds its
    // connection (capped per address, ADR 0028), never one of the shop's places.
    if tenant.is_some() && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        req = match buffered(req).await {
            Ok(req) => req,
            Err(problem) => return problem.into_response(),
        };
    }
    let _place = match tenant.map(|t| edge.shops.take(t, principal.is_some())) {
        Some(None) => {
            return Problem::new(
                ProblemKind::OVERLOADED,
                "This node is serving as many requests of this shop as it may at once; retry after the pause.",
            )
            .with_header(axum::http::header::RETRY_AFTER, "1")
            .into_response();
        }
        Some(Some(place)) => Some(place),
        None => None,
    };
    let mut response = next.run(req).await;
    if !decided.is_empty() {
        let (policy, remaining) = headers(&decided);
        response
            .headers_mut()
            .insert(RATELIMIT_POLICY.clone(), policy);
        response.headers_mut().insert(RATELIMIT.clone(), remaining);
    }
    response
}

/// The request with its body read into memory (within the body limit, which the layer
/// outside enforces, and the request's time limit).
async fn buffered(req: Request) -> Result<Request, Problem> {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Err(e) => Err(crate::extract::unreadable_body(&e)),
    }
}

impl EdgeLimits {
    /// The client address's ceiling alone, for a request no Keel route answers (gateway
    /// mode): `None` when admitted, the 429 otherwise.
    pub async fn admit_client(&self, client: std::net::IpAddr) -> Option<Response> {
        if !self.settings.enabled {
            return None;
        }
        let octets = match keel_kernel::net::client_key(client) {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let rule = Rule {
            policy: "client",
            limit: self.settings.client,
            key: super::rules::key_of(&[b"client", &octets]),
            shared: false,
        };
        let mut decided = Vec::new();
        self.decide(vec![rule], &mut decided).await
    }

    /// Decides `rules` together (all or nothing) and appends them to `decided`; a refusal
    /// answers the 429, with the headers of every limit decided so far.
    async fn decide(
        &self,
        rules: Vec<Rule>,
        decided: &mut Vec<(Rule, Decision)>,
    ) -> Option<Response> {
        if rules.is_empty() {
            return None;
        }
        let keys: Vec<(Key, Limit)> = rules.iter().map(|r| (r.key, r.limit)).collect();
        let decisions = self.check_all(&keys).await;
        let refused = decisions.iter().find(|d| !d.allowed).copied();
        decided.extend(rules.into_iter().zip(decisions));
        let refused = refused?;
        let (policy, remaining) = headers(decided);
        let secs = refused.retry_after_ms.div_ceil(1000).max(1);
        let retry =
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1"));
        Some(
            Problem::new(
                ProblemKind::RATE_LIMITED,
                "Too many requests of this kind from this client; nothing was done. Retry after the pause.",
            )
            .with_header_value(axum::http::header::RETRY_AFTER, retry)
            .with_header_value(RATELIMIT_POLICY.clone(), policy)
            .with_header_value(RATELIMIT.clone(), remaining)
            .into_response(),
        )
    }
}
