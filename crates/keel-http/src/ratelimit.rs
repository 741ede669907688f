//! Rate limits at the edge (issue 23, ADR 0035), evaluated in one place before any handler:
//! GCRA decisions (`keel_kernel::ratelimit`) on this node's memory, keyed by what the route
//! knows of its caller. Every limited answer carries the IETF `RateLimit-Policy` and
//! `RateLimit` headers; a refusal is `429 rate_limited` with `Retry-After` and does nothing.
//!
//! Every storefront request is limited per shop (its publishable key) and client address
//! (IPv6 by /64, behind trusted proxies the forwarded one), reads and writes apart; every staff
//! request per credential, reads and writes apart; every auth request per client address; and
//! the abuse-prone writes on top: cart creation, checkout, and promotion-code attempts, those
//! also per cart (guessing codes).
//!
//! State lives in this node's memory, or, with `KEEL_REDIS_URL`, in Redis: one atomic script
//! per decision on Redis's own clock, so every node shares exact limits. A Redis that does not
//! answer within the exact timeout is passed over for this node's memory for that decision
//! (counted in `keel_ratelimit_backend_errors_total`, logged when it starts and stops
//! failing); readiness does not depend on it.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, Method, header::HeaderName},
    middleware::Next,
    response::{IntoResponse, Response},
};
use keel_kernel::{
    clock::Clock,
    ratelimit::{Decision, Limit, decide},
};

use crate::{
    AppState,
    problem::{Problem, ProblemKind},
};

/// The limits, exact (configuration `KEEL_LIMITS__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub enabled: bool,
    /// Keys this node remembers at most (the oldest are forgotten first).
    pub memory_keys: usize,
    /// `POST /v1/store/carts`, per shop and client address.
    pub cart_create: Limit,
    /// `POST /v1/store/carts/{id}/checkout`, per shop and client address.
    pub checkout: Limit,
    /// `POST /v1/store/carts/{id}/promotions`, per shop and client address.
    pub promotion_per_address: Limit,
    /// `POST /v1/store/carts/{id}/promotions`, per cart.
    pub promotion_per_cart: Limit,
    /// Every storefront read (`GET /v1/store/…`), per shop and client address.
    pub store_read: Limit,
    /// Every other storefront request, per shop and client address.
    pub store_write: Limit,
    /// Every staff read (`GET /v1/admin/…`, `/v1/me…`), per credential.
    pub admin_read: Limit,
    /// Every other staff request, per credential.
    pub admin_write: Limit,
    /// Every `POST /v1/auth/…` (logins, refreshes, set-ups, resets), per client address.
    pub auth: Limit,
}

const SHARDS: usize = 16;

/// Arrival times by key, in memory: a fixed number of shards, each with an exact share of
/// the key budget. A full shard forgets keys whose time has passed (they are as good as new)
/// and, if none has, the one that would refill first.
#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Vec<Mutex<HashMap<Box<str>, i64>>>,
    caps: Vec<usize>,
    hasher: RandomState,
}

impl MemoryLimiter {
    pub fn new(keys: usize) -> Self {
        // The budget split exactly: the first `keys % SHARDS` shards hold one key more.
        let caps = (0..SHARDS)
            .map(|i| keys / SHARDS + usize::from(i < keys % SHARDS))
            .collect();
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            caps,
            hasher: RandomState::new(),
        }
    }

    /// Decides one request for `key` at `now_ms`.
    pub fn check(&self, key: &str, limit: Limit, now_ms: i64) -> Decision {
        let shard = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let cap = self.caps[shard];
        let mut map = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (decision, tat) = decide(limit, map.get(key).copied(), now_ms);
        if decision.allowed {
            if !map.contains_key(key) && map.len() >= cap {
                map.retain(|_, t| *t > now_ms);
                if map.len() >= cap
                    && let Some(oldest) =
                        map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
            if cap > 0 {
                map.insert(key.into(), tat);
            }
        }
        decision
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// GCRA in one Redis script, on Redis's clock (one clock for every node): the same decision
/// as `keel_kernel::ratelimit::decide`, the key expiring when its bucket is full again.
/// Integers only (Lua numbers are exact below 2^53; milliseconds since 1970 are ~2^41).
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, 0, ahead, ahead - tolerance}
end
local nxt = tat + interval
local ahead2 = nxt - now
local remaining = 0
if ahead2 <= tolerance then remaining = math.floor((tolerance - ahead2) / interval) + 1 end
redis.call('SET', KEYS[1], nxt, 'PX', ahead2)
return {1, remaining, ahead2, 0}
";

/// Limit state shared by every node through Redis.
pub struct RedisLimits {
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    errors: AtomicU64,
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Connects (within one second), else keeps trying in the background: a node starts,
    /// and answers, while Redis is away; until it connects every decision is this node's.
    pub async fn start(url: &str, timeout: Duration) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("KEEL_REDIS_URL: {e}"))?;
        let limits = Arc::new(Self {
            conn: tokio::sync::OnceCell::new(),
            script: redis::Script::new(GCRA_LUA),
            timeout,
            errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        });
        let connect = {
            let limits = limits.clone();
            move || {
                let (client, limits) = (client.clone(), limits.clone());
                async move {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(1)))
                        .set_response_timeout(Some(limits.timeout));
                    match redis::aio::ConnectionManager::new_with_config(client, config).await {
                        Ok(manager) => {
                            let _ = limits.conn.set(manager);
                            tracing::info!("rate limits shared through Redis");
                            true
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Redis is not reachable: rate limits are this node's until it is");
                            false
                        }
                    }
                }
            }
        };
        if !connect().await {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if connect().await {
                        return;
                    }
                }
            });
        }
        Ok(limits)
    }

    /// The shared decision, or `None` when Redis did not answer in time (the caller decides
    /// in memory).
    async fn check(&self, key: &str, limit: Limit) -> Option<Decision> {
        let answer = match self.conn.get() {
            Some(conn) => {
                let mut conn = conn.clone();
                let mut call = self.script.key(format!("keel:rl:{key}"));
                call.arg(limit.interval_ms()).arg(limit.burst());
                tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let decision = answer.and_then(|v| match v.as_slice() {
            [allowed, remaining, reset, retry] => Some(Decision {
                allowed: *allowed == 1,
                remaining: u32::try_from(*remaining).unwrap_or(0),
                reset_ms: u64::try_from(*reset).unwrap_or(0),
                retry_after_ms: u64::try_from(*retry).unwrap_or(0),
            }),
            _ => None,
        });
        if let Some(d) = decision {
            if self.failing.swap(false, Ordering::AcqRel) {
                tracing::info!("Redis answers again: rate limits are shared again");
            }
            return Some(d);
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                "Redis did not answer a rate-limit decision in time: this node decides alone until it does"
            );
        }
        None
    }
}

/// The node's limits and their state.
#[derive(Debug)]
pub struct EdgeLimits {
    settings: LimitSettings,
    memory: MemoryLimiter,
    redis: Option<Arc<RedisLimits>>,
    clock: Arc<dyn Clock>,
}

impl EdgeLimits {
    pub fn new(
        settings: LimitSettings,
        redis: Option<Arc<RedisLimits>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            memory: MemoryLimiter::new(settings.memory_keys),
            settings,
            redis,
            clock,
        }
    }

    /// Decisions Redis did not answer in time (each taken in memory instead).
    pub fn backend_errors(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.errors.load(Ordering::Relaxed))
    }

    async fn check(&self, key: &str, limit: Limit) -> Decision {
        if let Some(redis) = &self.redis
            && let Some(d) = redis.check(key, limit).await
        {
            return d;
        }
        let now_ms =
            i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        self.memory.check(key, limit, now_ms)
    }
}

/// One limit a request is held to: the policy's name, the limit, and the key it counts on.
struct Rule {
    policy: &'static str,
    limit: Limit,
    key: String,
}

/// What a request presents before authentication: the shop as the storefront names it, the
/// credential of a staff request, the client address as Keel counts it.
struct Caller<'a> {
    shop: &'a str,
    credential: &'a str,
    client: &'a str,
}

/// The rules of a request, by its route template: its class's limit (storefront reads or
/// writes per shop and client address, staff reads or writes per credential, auth per client
/// address), and the abuse-prone routes' own.
fn rules(
    settings: &LimitSettings,
    method: &Method,
    route: &str,
    who: &Caller<'_>,
    path: &str,
) -> Vec<Rule> {
    let per_address = |policy: &'static str, limit: Limit| Rule {
        policy,
        limit,
        key: key_of(&[policy, who.shop, who.client]),
    };
    let per_credential = |policy: &'static str, limit: Limit| Rule {
        policy,
        limit,
        // Without a credential, the client address (authentication refuses it next).
        key: if who.credential.is_empty() {
            key_of(&[policy, who.client])
        } else {
            key_of(&[policy, who.credential])
        },
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    let mut rules = Vec::new();
    if route.starts_with("/v1/store/") {
        rules.push(if read {
            per_address("store_read", settings.store_read)
        } else {
            per_address("store_write", settings.store_write)
        });
    } else if route.starts_with("/v1/admin/") || route == "/v1/me" || route.starts_with("/v1/me/") {
        rules.push(if read {
            per_credential("admin_read", settings.admin_read)
        } else {
            per_credential("admin_write", settings.admin_write)
        });
    } else if route.starts_with("/v1/auth/") && *method == Method::POST {
        rules.push(Rule {
            policy: "auth",
            limit: settings.auth,
            key: key_of(&["auth", who.client]),
        });
    }
    if *method == Method::POST {
        match route {
            "/v1/store/carts" => rules.push(per_address("cart_create", settings.cart_create)),
            "/v1/store/carts/{id}/checkout" => {
                rules.push(per_address("checkout", settings.checkout));
            }
            "/v1/store/carts/{id}/promotions" => {
                // The cart's id, as the path names it (`/v1/store/carts/<id>/promotions`).
                let cart = path.split('/').nth(4).unwrap_or_default();
                rules.push(per_address(
                    "promotion_address",
                    settings.promotion_per_address,
                ));
                rules.push(Rule {
                    policy: "promotion_cart",
                    limit: settings.promotion_per_cart,
                    key: key_of(&["promotion_cart", who.shop, cart]),
                });
            }
            _ => {}
        }
    }
    rules
}

/// A limit's key: its parts hashed (SHA-256, 16 bytes in hex), so a key's size is fixed
/// whatever a client sends, and no publishable key is stored as it came.
fn key_of(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..16]
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) for the
/// decisions made: `"<policy>";q=<burst>;w=<seconds>` and `"<policy>";r=<remaining>;t=<s>`.
fn headers(decisions: &[(&Rule, Decision)]) -> (HeaderValue, HeaderValue) {
    let policy = decisions
        .iter()
        .map(|(r, _)| {
            format!(
                "\"{}\";q={};w={}",
                r.policy,
                r.limit.burst(),
                r.limit.window_s()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let state = decisions
        .iter()
        .map(|(r, d)| {
            format!(
                "\"{}\";r={};t={}",
                r.policy,
                d.remaining,
                d.reset_ms.div_ceil(1000)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Policy names are fixed ASCII and the numbers digits: always a valid header value.
    (
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static("")),
    )
}

/// The middleware: decides every rule of the request; a refusal answers 429 before the
/// handler runs (nothing is done), an admission runs it and adds the headers.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let edge = &state.limits;
    if !edge.settings.enabled {
        return next.run(req).await;
    }
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    let client =
        keel_kernel::net::client_key(state.client_addr.client_addr(peer.ip(), req.headers()))
            .to_string();
    // The shop as the storefront names it; an unknown key is refused by authentication
    // after the limit (so guessing keys is limited too).
    let shop = req
        .headers()
        .get("keel-publishable-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let credential = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let who = Caller {
        shop: &shop,
        credential: &credential,
        client: &client,
    };
    let rules = rules(&edge.settings, req.method(), &route, &who, req.uri().path());
    if rules.is_empty() {
        return next.run(req).await;
    }
    let mut decisions = Vec::with_capacity(rules.len());
    for rule in &rules {
        let d = edge.check(&rule.key, rule.limit).await;
        decisions.push((rule, d));
        if !d.allowed {
            break;
        }
    }
    let (policy, remaining) = headers(&decisions);
    if let Some((_, refused)) = decisions.iter().find(|(_, d)| !d.allowed) {
        let secs = refused.retry_after_ms.div_ceil(1000).max(1);
        let retry =
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1"));
        return Problem::new(
            ProblemKind::RATE_LIMITED,
            "Too many requests of this kind from this client; nothing was done. Retry after the pause.",
        )
        .with_header_value(axum::http::header::RETRY_AFTER, retry)
        .with_header_value(RATELIMIT_POLICY.clone(), policy)
        .with_header_value(RATELIMIT.clone(), remaining)
        .into_response();
    }
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .insert(RATELIMIT_POLICY.clone(), policy);
    response.headers_mut().insert(RATELIMIT.clone(), remaining);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(interval_ms: u64, burst: u32) -> Limit {
        Limit::new(interval_ms, burst).expect("limit")
    }

    #[test]
    fn the_key_budget_is_split_exactly_and_never_exceeded() {
        let m = MemoryLimiter::new(100);
        assert_eq!(m.caps.iter().sum::<usize>(), 100);
        // Keys whose time has not passed: the budget still holds.
        for i in 0..1_000 {
            assert!(m.check(&format!("k{i}"), limit(60_000, 5), 0).allowed);
        }
        assert!(m.len() <= 100, "{}", m.len());
    }

    #[test]
    fn a_refused_request_takes_nothing_and_keys_are_independent() {
        let m = MemoryLimiter::new(1_000);
        let l = limit(1_000, 2);
        assert!(m.check("a", l, 0).allowed);
        assert!(m.check("a", l, 0).allowed);
        assert!(!m.check("a", l, 0).allowed);
        assert!(!m.check("a", l, 500).allowed);
        assert!(m.check("b", l, 0).allowed, "another key has its own bucket");
        assert!(m.check("a", l, 1_000).allowed);
    }

    #[test]
    fn the_headers_name_each_policy_with_its_burst_window_remaining_and_reset() {
        let rule = Rule {
            policy: "checkout",
            limit: limit(3_000, 20),
            key: String::new(),
        };
        let d = Decision {
            allowed: true,
            remaining: 19,
            reset_ms: 3_000,
            retry_after_ms: 0,
        };
        let (policy, state) = headers(&[(&rule, d)]);
        assert_eq!(policy, "\"checkout\";q=20;w=60");
        assert_eq!(state, "\"checkout\";r=19;t=3");
    }
}
