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
    /// Every `POST` where a client proves who it is (`/v1/auth/…`, `/v1/store/auth/…`,
    /// customer sign-up), per client address.
    pub auth: Limit,
    /// Every limited request of one client address, whatever keys it presents.
    pub client: Limit,
}

const SHARDS: usize = 16;

/// One shard's arrival times, locked.
type ShardGuard<'a> = std::sync::MutexGuard<'a, HashMap<Key, i64>>;

/// A limit's key: its parts hashed (SHA-256, the first 16 bytes), so a key's size is fixed
/// whatever a client sends, no publishable key or token is kept as it came, and a key costs
/// no allocation.
pub type Key = [u8; 16];

/// Arrival times by key, in memory: a fixed number of shards, each with an exact share of
/// the key budget. A full shard forgets keys whose time has passed (they are as good as new)
/// and, if none has, the one that would refill first.
#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Vec<Mutex<HashMap<Key, i64>>>,
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

    fn shard(&self, key: &Key) -> usize {
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    /// Decides one request for `key` at `now_ms`.
    pub fn check(&self, key: Key, limit: Limit, now_ms: i64) -> Decision {
        self.check_all(&[(key, limit)], now_ms)[0]
    }

    /// Decides one request held to several limits, all or nothing: every key is charged only
    /// when every limit admits it (a refused request takes nothing from any of them). The
    /// shards involved are locked together, in index order, so concurrent requests cannot
    /// interleave between the decision and the charge.
    pub fn check_all(&self, keys: &[(Key, Limit)], now_ms: i64) -> Vec<Decision> {
        let mut shards: Vec<usize> = keys.iter().map(|(k, _)| self.shard(k)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: Vec<(usize, ShardGuard<'_>)> = shards
            .iter()
            .map(|&i| {
                (
                    i,
                    self.shards[i]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                )
            })
            .collect();
        let mut decisions = Vec::with_capacity(keys.len());
        let mut next = Vec::with_capacity(keys.len());
        for (key, limit) in keys {
            let shard = self.shard(key);
            let map = &guards
                .iter()
                .find(|(i, _)| *i == shard)
                .expect("every key's shard is locked")
                .1;
            let (d, tat) = decide(*limit, map.get(key).copied(), now_ms);
            decisions.push(d);
            next.push((shard, *key, tat));
        }
        if decisions.iter().all(|d| d.allowed) {
            for (shard, key, tat) in next {
                let cap = self.caps[shard];
                let map = &mut guards
                    .iter_mut()
                    .find(|(i, _)| *i == shard)
                    .expect("every key's shard is locked")
                    .1;
                if !map.contains_key(&key) && map.len() >= cap {
                    map.retain(|_, t| *t > now_ms);
                    if map.len() >= cap
                        && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
                    {
                        map.remove(&oldest);
                    }
                }
                if cap > 0 {
                    map.insert(key, tat);
                }
            }
        }
        decisions
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

/// GCRA in one Redis script over every limit of a request, on Redis's clock (one clock for
/// every node): the same decision as `keel_kernel::ratelimit::decide` for each key, all
/// charged only when all admit (a refused request takes nothing), each key expiring when its
/// bucket is full again. One round trip per request.
/// Integers only (Lua numbers are exact below 2^53; milliseconds since 1970 are ~2^41).
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local nexts = {}
local refused = false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * (tonumber(ARGV[2 * i]) - 1)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local ahead = tat - now
  if ahead > tolerance then
    refused = true
    table.insert(out, 0); table.insert(out, 0); table.insert(out, ahead); table.insert(out, ahead - tolerance)
  else
    local nxt = tat + interval
    local ahead2 = nxt - now
    local remaining = 0
    if ahead2 <= tolerance then remaining = math.floor((tolerance - ahead2) / interval) + 1 end
    nexts[i] = {nxt, ahead2}
    table.insert(out, 1); table.insert(out, remaining); table.insert(out, ahead2); table.insert(out, 0)
  end
end
if not refused then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], nexts[i][1], 'PX', nexts[i][2])
  end
end
return out
";

/// Limit state shared by every node through Redis.
pub struct RedisLimits {
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    errors: AtomicU64,
    failing: AtomicBool,
    /// Until when (ms since 1970) decisions skip Redis after a failure.
    skip_until_ms: std::sync::atomic::AtomicI64,
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
            skip_until_ms: std::sync::atomic::AtomicI64::new(0),
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

    /// The shared decisions, or `None` when Redis did not answer in time, or failed less
    /// than `timeout × 20` ago (the caller decides in memory; a Redis that does not answer is
    /// not waited for on every request).
    async fn check_all(&self, keys: &[(Key, Limit)], now_ms: i64) -> Option<Vec<Decision>> {
        if now_ms < self.skip_until_ms.load(Ordering::Acquire) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let answer = match self.conn.get() {
            Some(conn) => {
                let mut conn = conn.clone();
                let mut call = self.script.prepare_invoke();
                for (key, limit) in keys {
                    call.key(redis_key(key));
                    call.arg(limit.interval_ms()).arg(limit.burst());
                }
                tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let decisions: Option<Vec<Decision>> = answer.and_then(|v| {
            (v.len() == 4 * keys.len()).then(|| {
                v.chunks(4)
                    .map(|c| Decision {
                        allowed: c[0] == 1,
                        remaining: u32::try_from(c[1]).unwrap_or(0),
                        reset_ms: u64::try_from(c[2]).unwrap_or(0),
                        retry_after_ms: u64::try_from(c[3]).unwrap_or(0),
                    })
                    .collect()
            })
        });
        if let Some(d) = decisions {
            if self.failing.swap(false, Ordering::AcqRel) {
                tracing::info!("Redis answers again: rate limits are shared again");
            }
            return Some(d);
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let pause = i64::try_from(self.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(REDIS_PAUSE_TIMEOUTS);
        self.skip_until_ms
            .store(now_ms.saturating_add(pause), Ordering::Release);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                "Redis did not answer a rate-limit decision in time: this node decides alone until it does"
            );
        }
        None
    }
}

/// After Redis fails a decision, it is passed over for this many timeouts' worth of time
/// (20 × 50 ms = 1 s by default): a Redis that does not answer costs one timeout per second,
/// not one per request.
const REDIS_PAUSE_TIMEOUTS: i64 = 20;

/// The node's limits and their state.
#[derive(Debug)]
pub struct EdgeLimits {
    settings: LimitSettings,
    memory: MemoryLimiter,
    redis: Option<Arc<RedisLimits>>,
    /// The wall clock read once at start, then time measured monotonically from it: a clock
    /// stepped back (NTP) must not refuse every active key for the length of the step.
    started: std::time::Instant,
    started_ms: i64,
}

impl EdgeLimits {
    pub fn new(
        settings: LimitSettings,
        redis: Option<Arc<RedisLimits>>,
        clock: &dyn Clock,
    ) -> Self {
        Self {
            memory: MemoryLimiter::new(settings.memory_keys),
            settings,
            redis,
            started: std::time::Instant::now(),
            started_ms: i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
        }
    }

    /// Milliseconds since 1970, as of the start plus monotonic time since.
    fn now_ms(&self) -> i64 {
        self.started_ms
            .saturating_add(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// Decisions Redis did not answer in time (each taken in memory instead).
    pub fn backend_errors(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.errors.load(Ordering::Relaxed))
    }

    /// Decides a request's limits together (all or nothing), in Redis when it answers, else
    /// in this node's memory.
    async fn check_all(&self, keys: &[(Key, Limit)]) -> Vec<Decision> {
        let now_ms = self.now_ms();
        if let Some(redis) = &self.redis
            && let Some(d) = redis.check_all(keys, now_ms).await
        {
            return d;
        }
        self.memory.check_all(keys, now_ms)
    }
}

/// One limit a request is held to: the policy's name, the limit, and the key it counts on.
struct Rule {
    policy: &'static str,
    limit: Limit,
    key: Key,
}

/// What a request presents before authentication: the shop as the storefront names it, the
/// credential (the bearer token as authentication reads it, or the cart's secret), the client
/// address as Keel counts it.
struct Caller<'a> {
    shop: &'a str,
    credential: &'a str,
    cart_secret: &'a str,
    /// The client address's octets (IPv6 by /64).
    client: &'a [u8],
}

/// Routes where a client proves who it is (staff and customers): the auth class.
fn is_auth_route(method: &Method, route: &str) -> bool {
    *method == Method::POST
        && (route.starts_with("/v1/auth/")
            || route.starts_with("/v1/store/auth/")
            || route == "/v1/store/customers")
}

/// The rules of a request, by its route template: the client address's ceiling over every
/// limited route (whatever keys it presents), its class's limit (storefront reads or writes
/// per shop and client address, staff reads or writes per credential, auth per client
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
        key: key_of(&[policy.as_bytes(), who.shop.as_bytes(), who.client]),
    };
    let per_credential = |policy: &'static str, limit: Limit| Rule {
        policy,
        limit,
        // Without a credential, the client address (authentication refuses it next).
        key: if who.credential.is_empty() {
            key_of(&[policy.as_bytes(), who.client])
        } else {
            key_of(&[policy.as_bytes(), who.credential.as_bytes()])
        },
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    let mut rules = Vec::new();
    if is_auth_route(method, route) {
        rules.push(Rule {
            policy: "auth",
            limit: settings.auth,
            key: key_of(&[b"auth", who.client]),
        });
    } else if route.starts_with("/v1/store/") {
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
    }
    if rules.is_empty() {
        return rules;
    }
    // Whatever keys it presents (made-up shops or tokens make fresh buckets above), one
    // client address is held to this.
    rules.insert(
        0,
        Rule {
            policy: "client",
            limit: settings.client,
            key: key_of(&[b"client", who.client]),
        },
    );
    if *method == Method::POST {
        match route {
            "/v1/store/carts" => rules.push(per_address("cart_create", settings.cart_create)),
            "/v1/store/carts/{id}/checkout" => {
                rules.push(per_address("checkout", settings.checkout));
            }
            "/v1/store/carts/{id}/promotions" => {
                // The cart as its id reads canonically (ids are case-insensitive and the path
                // percent-decoded: any spelling is the same cart), counted with the credential
                // that may use it: a stranger without the cart's secret spends a bucket of
                // their own, never the shopper's.
                let raw = path.split('/').nth(4).unwrap_or_default();
                let cart = percent_decode(raw)
                    .parse::<keel_orders::cart::CartId>()
                    .map_or_else(|_| raw.to_owned(), |id| id.to_string());
                let holder = if who.cart_secret.is_empty() {
                    who.credential
                } else {
                    who.cart_secret
                };
                rules.push(per_address(
                    "promotion_address",
                    settings.promotion_per_address,
                ));
                rules.push(Rule {
                    policy: "promotion_cart",
                    limit: settings.promotion_per_cart,
                    key: key_of(&[
                        b"promotion_cart",
                        who.shop.as_bytes(),
                        cart.as_bytes(),
                        holder.as_bytes(),
                    ]),
                });
            }
            _ => {}
        }
    }
    rules
}

/// A path segment percent-decoded (as the router hands it to the handler).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                (bytes[i + 1] as char).to_digit(16),
                (bytes[i + 2] as char).to_digit(16),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key of `parts` (see [`Key`]).
fn key_of(parts: &[&[u8]]) -> Key {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let mut key = [0; 16];
    key.copy_from_slice(&h.finalize()[..16]);
    key
}

/// A key as Redis stores it: `keel:rl:` and the key in hex.
fn redis_key(key: &Key) -> String {
    let mut s = String::with_capacity(8 + 32);
    s.push_str("keel:rl:");
    for b in key {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
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
    let client_ip =
        keel_kernel::net::client_key(state.client_addr.client_addr(peer.ip(), req.headers()));
    let client_octets = match client_ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    // The shop as the storefront names it; an unknown key is refused by authentication
    // after the limits (guessing keys is held by the client address's ceiling).
    let shop = req
        .headers()
        .get("keel-publishable-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let credential = crate::auth::bearer_token(req.headers())
        .unwrap_or_default()
        .to_owned();
    let cart_secret = req
        .headers()
        .get("keel-cart-secret")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let who = Caller {
        shop: &shop,
        credential: &credential,
        cart_secret: &cart_secret,
        client: &client_octets,
    };
    let rules = rules(&edge.settings, req.method(), &route, &who, req.uri().path());
    if rules.is_empty() {
        return next.run(req).await;
    }
    let keys: Vec<(Key, Limit)> = rules.iter().map(|r| (r.key, r.limit)).collect();
    let decided = edge.check_all(&keys).await;
    let decisions: Vec<(&Rule, Decision)> = rules.iter().zip(decided).collect();
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
            assert!(
                m.check(key_of(&[format!("k{i}").as_bytes()]), limit(60_000, 5), 0)
                    .allowed
            );
        }
        assert!(m.len() <= 100, "{}", m.len());
    }

    #[test]
    fn a_refused_request_takes_nothing_and_keys_are_independent() {
        let m = MemoryLimiter::new(1_000);
        let l = limit(1_000, 2);
        assert!(m.check(key_of(&["a".as_bytes()]), l, 0).allowed);
        assert!(m.check(key_of(&["a".as_bytes()]), l, 0).allowed);
        assert!(!m.check(key_of(&["a".as_bytes()]), l, 0).allowed);
        assert!(!m.check(key_of(&["a".as_bytes()]), l, 500).allowed);
        assert!(
            m.check(key_of(&["b".as_bytes()]), l, 0).allowed,
            "another key has its own bucket"
        );
        assert!(m.check(key_of(&["a".as_bytes()]), l, 1_000).allowed);
    }

    #[test]
    fn several_limits_are_charged_all_or_nothing() {
        let m = MemoryLimiter::new(1_000);
        let (wide, narrow) = (limit(60_000, 5), limit(60_000, 1));
        let (w, n) = (key_of(&[b"wide"]), key_of(&[b"narrow"]));
        let first = m.check_all(&[(w, wide), (n, narrow)], 0);
        assert!(first.iter().all(|d| d.allowed));
        let refused = m.check_all(&[(w, wide), (n, narrow)], 0);
        assert!(!refused[1].allowed);
        // The refusal took nothing from the wide limit: 4 of its 5 are left.
        assert_eq!(m.check(w, wide, 0).remaining, 3);
    }

    #[test]
    fn a_cart_id_reads_the_same_whatever_its_spelling() {
        let id = keel_orders::cart::CartId::new().to_string();
        let encoded: String = id.bytes().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "%{b:02X}");
            s
        });
        let lower_hex: String = id.bytes().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "%{b:02x}");
            s
        });
        for spelling in [&encoded, &lower_hex] {
            assert_eq!(
                percent_decode(spelling)
                    .parse::<keel_orders::cart::CartId>()
                    .expect("a cart id")
                    .to_string(),
                id
            );
        }
    }

    #[test]
    fn the_headers_name_each_policy_with_its_burst_window_remaining_and_reset() {
        let rule = Rule {
            policy: "checkout",
            limit: limit(3_000, 20),
            key: [0; 16],
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
