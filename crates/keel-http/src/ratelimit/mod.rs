//! Rate limits at the edge (issue 23, ADR 0035), evaluated in one place before any handler:
//! GCRA decisions (`keel_kernel::ratelimit`) on this node's memory, keyed by what the route
//! knows of its caller. Every limited answer carries the IETF `RateLimit-Policy` and
//! `RateLimit` headers; a refusal is `429 rate_limited` with `Retry-After` and does nothing.
//!
//! Every limited request is held first to its client address's ceiling (IPv6 by /64, behind
//! trusted proxies the forwarded one), every auth request to the auth limit per address; then,
//! with the credential authenticated once: every storefront request per shop and client
//! address, every staff request per staff member or secret key (reads and writes apart), the
//! abuse-prone writes on top (cart creation, checkout, promotion-code attempts, those also per
//! cart), and every request of a shop together; each at the shop's own limit within the
//! operator's ceiling.
//!
//! State lives in this node's memory, or, with `KEEL_REDIS_URL`, in Redis: one atomic script
//! per decision on Redis's own clock, so every node shares exact limits. A Redis that does not
//! answer within the exact timeout is passed over for this node's memory for that decision
//! (counted in `keel_ratelimit_backend_errors_total`, logged when it starts and stops
//! failing); readiness does not depend on it.

mod memory;
mod middleware;
mod rules;

pub use memory::{Key, MemoryLimiter, RedisLimits};
pub use middleware::{Edge, ShopsInFlight, limit};

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
    TenantId,
    clock::Clock,
    ratelimit::{Decision, Limit, LimitScope, Policy, TenantLimitStore, TenantLimits, decide},
};

use crate::{
    AppState,
    problem::{Problem, ProblemKind},
};

use rules::Rule;

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
    /// Every storefront and staff request of one shop, whoever makes it.
    pub shop: Limit,
}

impl LimitSettings {
    /// The configured default of a policy a shop may have its own of.
    pub const fn default_for(&self, policy: Policy) -> Limit {
        match policy {
            Policy::StoreRead => self.store_read,
            Policy::StoreWrite => self.store_write,
            Policy::CartCreate => self.cart_create,
            Policy::Checkout => self.checkout,
            Policy::PromotionAddress => self.promotion_per_address,
            Policy::PromotionCart => self.promotion_per_cart,
            Policy::AdminRead => self.admin_read,
            Policy::AdminWrite => self.admin_write,
            Policy::Shop => self.shop,
        }
    }
}

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
    /// Each shop's own limits, read at most once per [`TENANT_LIMITS_TTL`] per shop.
    store: Arc<dyn TenantLimitStore>,
    tenants: Mutex<HashMap<TenantId, (std::time::Instant, Arc<TenantLimits>)>>,
}

/// How long a node uses a shop's limits as read: an operator's or owner's change holds on
/// every node within this (at once on the node that made it).
pub const TENANT_LIMITS_TTL: Duration = Duration::from_secs(1);
/// Shops whose limits a node holds at most (the oldest read leaves first).
const TENANT_LIMITS_CACHED: usize = 10_000;

impl EdgeLimits {
    pub fn new(
        settings: LimitSettings,
        redis: Option<Arc<RedisLimits>>,
        store: Arc<dyn TenantLimitStore>,
        clock: &dyn Clock,
    ) -> Self {
        Self {
            memory: MemoryLimiter::new(settings.memory_keys),
            settings,
            redis,
            started: std::time::Instant::now(),
            started_ms: i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX),
            store,
            tenants: Mutex::default(),
        }
    }

    pub const fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// A shop's own limits, read at most once per [`TENANT_LIMITS_TTL`]. When they cannot be
    /// read, the last copy read holds (a ceiling lowered for an abusive shop is not dropped
    /// in a database blip), or the defaults for a shop never read; the failure is logged and
    /// remembered for the same time, so a struggling database is not asked on every request.
    pub async fn tenant(&self, tenant: TenantId) -> Arc<TenantLimits> {
        let now = std::time::Instant::now();
        let stale = {
            let cached = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            match cached.get(&tenant) {
                Some((read, limits)) if now.duration_since(*read) < TENANT_LIMITS_TTL => {
                    return limits.clone();
                }
                Some((_, limits)) => Some(limits.clone()),
                None => None,
            }
        };
        let limits = match self.store.tenant_limits(tenant).await {
            Ok(limits) => Arc::new(limits),
            Err(e) => {
                tracing::warn!(error = %e, tenant_id = %tenant, "cannot read the shop's limits: the last read (or the defaults) hold");
                stale.unwrap_or_default()
            }
        };
        let mut cached = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.len() >= TENANT_LIMITS_CACHED && !cached.contains_key(&tenant) {
            cached.retain(|_, (read, _)| now.duration_since(*read) < TENANT_LIMITS_TTL);
            if cached.len() >= TENANT_LIMITS_CACHED
                && let Some(oldest) = cached
                    .iter()
                    .min_by_key(|(_, (read, _))| *read)
                    .map(|(t, _)| *t)
            {
                cached.remove(&oldest);
            }
        }
        cached.insert(tenant, (now, limits.clone()));
        limits
    }

    /// Checks limit changes of one scope for a shop without making them: each limit must be
    /// exact in every backend (span below 2^52 ms), and an owner's must be one an owner may
    /// set and within its ceiling. The policies that are not, all named.
    pub async fn check_tenant_limits(
        &self,
        tenant: TenantId,
        scope: LimitScope,
        changes: &[(Policy, Option<Limit>)],
    ) -> Result<(), SetLimitsError> {
        let current = self
            .store
            .tenant_limits(tenant)
            .await
            .map_err(SetLimitsError::Store)?;
        let mut refused = Vec::new();
        for (policy, limit) in changes {
            let ceiling = current.ceiling(*policy, self.settings.default_for(*policy));
            let owner = scope == LimitScope::Override;
            if owner && !policy.owner_may_set() {
                refused.push((*policy, LimitRefusal::OperatorOnly));
                continue;
            }
            let Some(limit) = limit else { continue };
            if Limit::bounded(limit.interval_ms(), limit.burst()).is_none()
                || (owner && !limit.within(ceiling))
            {
                refused.push((*policy, LimitRefusal::AboveCeiling(ceiling)));
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(SetLimitsError::Refused(refused))
        }
    }

    /// Sets or removes limits of one scope for a shop, with the events, and forgets this
    /// node's copy (other nodes read it again within [`TENANT_LIMITS_TTL`]). Each limit set
    /// must be within its ceiling (an override) or exact in every backend (any): the policies
    /// that are not, refused whole with nothing changed.
    pub async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        scope: LimitScope,
        changes: &[(Policy, Option<Limit>)],
        events: &[keel_kernel::event::NewEvent],
    ) -> Result<(), SetLimitsError> {
        self.check_tenant_limits(tenant, scope, changes).await?;
        self.store
            .set_tenant_limits(tenant, scope, changes, events)
            .await
            .map_err(SetLimitsError::Store)?;
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tenant);
        Ok(())
    }

    /// Drops this node's copy of a shop's limits: an owner or operator changed them through
    /// another node (ADR 0041).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tenant);
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

/// Why a shop's limits were not set.
#[derive(Debug)]
pub enum SetLimitsError {
    /// These policies' limits may not be set as asked.
    Refused(Vec<(Policy, LimitRefusal)>),
    Store(keel_kernel::StoreError),
}

/// Why one policy's limit may not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// It admits more than the ceiling (shown), or its span is not below 2^52 ms.
    AboveCeiling(Limit),
    /// Only the operator sets it.
    OperatorOnly,
}

#[cfg(test)]
mod tests {
    use super::rules::{headers, key_of, percent_decode};
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
            shared: false,
        };
        let d = Decision {
            allowed: true,
            remaining: 19,
            reset_ms: 3_000,
            retry_after_ms: 0,
        };
        let (policy, state) = headers(&[(rule, d)]);
        assert_eq!(policy, "\"checkout\";q=20;w=60");
        assert_eq!(state, "\"checkout\";r=19;t=3");
    }
}
