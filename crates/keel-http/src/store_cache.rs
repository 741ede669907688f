//! The storefront read cache (ADR 0014): this node keeps the `200` answers of the public
//! product reads for at most their own `max-age`, so a browsing storefront is answered from
//! memory instead of the database.
//!
//! Why this is safe:
//! - The answers already say `Cache-Control: public, max-age=N` with `Vary:
//!   Keel-Publishable-Key`: any shared cache in front of Keel may serve them for `N` seconds.
//!   This cache keeps them no longer, keys them by the exact publishable key and
//!   path-and-query, and sends `Age`, so the staleness a client can see stays within `N` even
//!   behind another cache.
//! - A tenant's successful write through this node (any `POST`/`PUT`/`PATCH`/`DELETE` that a
//!   principal of that tenant made, such as a product edit, a checkout reserving stock or a
//!   key revocation) moves that tenant's *generation*; an entry is served only while its
//!   generation is current, so this node reads its own writes at once.
//! - The generation is taken when the request is authenticated, before the handler reads, so
//!   an answer computed from data older than a write can never be stored as current.
//! - Writes elsewhere (another node, the CLI, the maintenance job) show within `N` seconds,
//!   exactly as through a CDN.
//!
//! Bounded by an exact byte budget (`KEEL_STORE_CACHE_BYTES`, bodies plus keys); the oldest
//! entries leave first when it is full. A budget of 0 or a `max-age` of 0 turns it off.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use keel_kernel::TenantId;

use crate::{caching::IfNoneMatch, headers::PUBLISHABLE_KEY, problem::Problem};

/// The route templates whose answers are cached: public, per publishable key.
const CACHED_ROUTES: [&str; 2] = ["/v1/store/products", "/v1/store/products/{id_or_handle}"];

/// What a cached answer is found by: the publishable key exactly as presented, and the
/// path and query exactly as requested.
type Key = (HeaderValue, String);

#[derive(Debug)]
struct Entry {
    tenant: TenantId,
    generation: u64,
    stored: Instant,
    seq: u64,
    size: usize,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Insertion order, for eviction. A record whose `seq` no longer matches its key's entry
    /// is left over from a replaced entry and is skipped (and compacted away).
    order: VecDeque<(Key, u64)>,
    generations: HashMap<TenantId, u64>,
    bytes: usize,
    seq: u64,
}

impl Inner {
    fn generation(&self, tenant: TenantId) -> u64 {
        self.generations.get(&tenant).copied().unwrap_or(0)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

impl CacheStats {
    /// Appends the Prometheus text exposition of these counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP keel_store_cache_hits_total Storefront reads answered from this node's cache.\n\
             # TYPE keel_store_cache_hits_total counter\n\
             keel_store_cache_hits_total {}\n\
             # HELP keel_store_cache_misses_total Cacheable storefront reads the cache could not answer.\n\
             # TYPE keel_store_cache_misses_total counter\n\
             keel_store_cache_misses_total {}\n\
             # HELP keel_store_cache_entries Answers held by the storefront cache.\n\
             # TYPE keel_store_cache_entries gauge\n\
             keel_store_cache_entries {}\n\
             # HELP keel_store_cache_bytes Bytes of bodies and keys held by the storefront cache.\n\
             # TYPE keel_store_cache_bytes gauge\n\
             keel_store_cache_bytes {}\n",
            self.hits, self.misses, self.entries, self.bytes
        );
    }
}

/// The cache of one node. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct StoreCache {
    ttl: Duration,
    budget_bytes: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl StoreCache {
    /// `max_age_s`: the storefront's `max-age`, also the longest an entry is served.
    /// `budget_bytes`: the most bytes of bodies and keys held. Either 0 turns the cache off.
    pub fn new(max_age_s: u64, budget_bytes: usize) -> Self {
        Self {
            ttl: Duration::from_secs(max_age_s),
            budget_bytes,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.budget_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tenant's current generation.
    pub fn generation(&self, tenant: TenantId) -> u64 {
        self.lock().generation(tenant)
    }

    /// A write of `tenant` succeeded: what was cached for it is no longer current.
    pub fn invalidate(&self, tenant: TenantId) {
        *self.lock().generations.entry(tenant).or_insert(0) += 1;
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            entries: inner.entries.len(),
            bytes: inner.bytes,
        }
    }

    /// A current entry: its tenant, age, headers and body.
    fn get(&self, key: &Key, now: Instant) -> Option<(TenantId, Duration, HeaderMap, Bytes)> {
        let inner = self.lock();
        let e = inner.entries.get(key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= self.ttl || inner.generation(e.tenant) != e.generation {
            return None;
        }
        Some((e.tenant, age, e.headers.clone(), e.body.clone()))
    }

    /// Stores an answer computed at `generation` of `tenant`, unless a write has moved the
    /// generation since (the answer may predate it) or it alone exceeds the budget.
    fn put(
        &self,
        key: Key,
        tenant: TenantId,
        generation: u64,
        stored: Instant,
        headers: HeaderMap,
        body: Bytes,
    ) {
        let size = body.len() + key.0.len() + key.1.len();
        if size > self.budget_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.generation(tenant) != generation {
            return;
        }
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.size;
        }
        while inner.bytes + size > self.budget_bytes {
            let Some((k, seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&k).is_some_and(|e| e.seq == seq)
                && let Some(e) = inner.entries.remove(&k)
            {
                inner.bytes -= e.size;
            }
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.order.push_back((key.clone(), seq));
        inner.bytes += size;
        inner.entries.insert(
            key,
            Entry {
                tenant,
                generation,
                stored,
                seq,
                size,
                headers,
                body,
            },
        );
        // Replaced entries leave records behind; keep the queue within twice the live ones.
        if inner.order.len() > 2 * inner.entries.len() + 16 {
            let Inner { order, entries, .. } = &mut *inner;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

/// The tenant a request acted for, with that tenant's cache generation when it was
/// authenticated and whether the principal was staff or a secret key (whose writes may change
/// keys, pricing setup or limits). Put in every request by [`track`]; filled by
/// authentication.
#[derive(Debug, Clone)]
pub struct TenantSlot {
    cell: Arc<OnceLock<(TenantId, u64, bool)>>,
    cache: Arc<StoreCache>,
}

impl TenantSlot {
    fn get(&self) -> Option<(TenantId, u64, bool)> {
        self.cell.get().copied()
    }
}

/// Authentication found the request's tenant (`admin`: through a staff member or secret
/// key): the request span names it, and the cache learns whose data the handler will read or
/// write.
pub fn note_tenant(parts: &Parts, tenant: TenantId, admin: bool) {
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    if let Some(slot) = parts.extensions.get::<TenantSlot>() {
        // First principal wins: a customer extractor authenticates the storefront first.
        let _ = slot
            .cell
            .set((tenant, slot.cache.generation(tenant), admin));
    }
}

/// The state of [`track`]: the node's cache, and where it announces writes to the others.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub cache: Arc<StoreCache>,
    pub changes: Arc<dyn keel_kernel::changes::ChangeFeed>,
}

/// Outer middleware: gives the request a [`TenantSlot`] and, after a successful write by a
/// principal of a tenant, moves that tenant's generation here and announces the change to
/// the other nodes (so their copies go at once, not at their time bounds).
pub async fn track(
    State(Tracker { cache, changes }): State<Tracker>,
    mut req: Request,
    next: Next,
) -> Response {
    let write = crate::middleware::is_write(req.method());
    let slot = TenantSlot {
        cell: Arc::new(OnceLock::new()),
        cache: cache.clone(),
    };
    req.extensions_mut().insert(slot.clone());
    let res = next.run(req).await;
    // A POST that wrote nothing (a GraphQL query) changes no copy anywhere.
    if write
        && res.status().is_success()
        && res
            .extensions()
            .get::<crate::middleware::ReadOnly>()
            .is_none()
        && let Some((tenant, _, setup)) = slot.get()
    {
        cache.invalidate(tenant);
        changes.announce(keel_kernel::changes::Change::Shop { tenant, setup });
    }
    res
}

/// Inner middleware: answers the cached routes from memory when it can, and keeps their
/// `200` answers otherwise.
pub async fn serve(State(cache): State<Arc<StoreCache>>, req: Request, next: Next) -> Response {
    let cacheable = cache.enabled()
        && req.method() == Method::GET
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| CACHED_ROUTES.contains(&p.as_str()));
    let credential = req.headers().get(PUBLISHABLE_KEY).cloned();
    let (true, Some(credential)) = (cacheable, credential) else {
        return next.run(req).await;
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str())
        .to_owned();
    let key = (credential, target);
    let now = Instant::now();
    // A cached answer is served only to a credential this node accepts now, for the same
    // shop (the edge authenticated it, with the key cache's exact bound and the cluster's
    // invalidations): a revoked key is refused as soon as the node knows, whatever the
    // answer's age.
    let accepted = req
        .extensions()
        .get::<crate::auth::Identified>()
        .and_then(crate::auth::Identified::tenant);
    if let Some((tenant, age, headers, body)) = cache.get(&key, now)
        && accepted == Some(tenant)
    {
        cache.hits.fetch_add(1, Relaxed);
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        return cached_response(
            &IfNoneMatch::from_headers(req.headers()),
            age,
            headers,
            body,
        );
    }
    cache.misses.fetch_add(1, Relaxed);
    let slot = req.extensions().get::<TenantSlot>().cloned();
    let res = next.run(req).await;
    let noted = slot.as_ref().and_then(TenantSlot::get);
    let (StatusCode::OK, Some((tenant, generation, _))) = (res.status(), noted) else {
        return res;
    };
    let (parts, body) = res.into_parts();
    // The handler built the body in memory already; this only collects it.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    cache.put(
        key,
        tenant,
        generation,
        now,
        parts.headers.clone(),
        bytes.clone(),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// A stored answer, or 304 when the client holds it already; `Age` in whole seconds
/// (RFC 9111 §5.1), so caches behind us count the time it spent here.
fn cached_response(
    if_none_match: &IfNoneMatch,
    age: Duration,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let not_modified = headers
        .get(header::ETAG)
        .is_some_and(|etag| if_none_match.matches(etag));
    let mut res = if not_modified {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
            if let Some(v) = headers.get(&name) {
                res.headers_mut().insert(name, v.clone());
            }
        }
        res
    } else {
        let mut res = Response::new(Body::from(body));
        *res.headers_mut() = headers;
        res
    };
    res.headers_mut()
        .insert(header::AGE, HeaderValue::from(age.as_secs()));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Key {
        (HeaderValue::from_static("pk_test"), path.to_owned())
    }

    fn tenant() -> TenantId {
        TenantId::new()
    }

    #[test]
    fn an_entry_is_served_only_while_younger_than_max_age_and_current() {
        let max_age_s = 60;
        let cache = StoreCache::new(max_age_s, 1_000);
        let t = tenant();
        let at = Instant::now();
        cache.put(
            key("/a"),
            t,
            0,
            at,
            HeaderMap::new(),
            Bytes::from_static(b"x"),
        );
        assert!(
            cache
                .get(&key("/a"), at + Duration::from_secs(max_age_s - 1))
                .is_some()
        );
        assert!(
            cache
                .get(&key("/a"), at + Duration::from_secs(max_age_s))
                .is_none()
        );
        cache.invalidate(t);
        assert!(cache.get(&key("/a"), at).is_none());
    }

    #[test]
    fn an_answer_read_before_a_write_is_not_stored() {
        let cache = StoreCache::new(60, 1_000);
        let t = tenant();
        let generation = cache.generation(t);
        cache.invalidate(t);
        let at = Instant::now();
        cache.put(key("/a"), t, generation, at, HeaderMap::new(), Bytes::new());
        assert!(cache.get(&key("/a"), at).is_none());
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn another_tenants_write_leaves_an_entry_current() {
        let cache = StoreCache::new(60, 1_000);
        let (t, other) = (tenant(), tenant());
        let at = Instant::now();
        cache.put(key("/a"), t, 0, at, HeaderMap::new(), Bytes::new());
        cache.invalidate(other);
        assert!(cache.get(&key("/a"), at).is_some());
    }

    #[test]
    fn the_byte_budget_is_exact_and_the_oldest_entry_leaves_first() {
        // Each entry: 10 body bytes + 7 key bytes + 2 path bytes = 19.
        let cache = StoreCache::new(60, 57);
        let t = tenant();
        let at = Instant::now();
        let body = Bytes::from_static(b"0123456789");
        for p in ["/a", "/b", "/c"] {
            cache.put(key(p), t, 0, at, HeaderMap::new(), body.clone());
        }
        assert_eq!(cache.stats().bytes, 57);
        cache.put(key("/d"), t, 0, at, HeaderMap::new(), body.clone());
        assert_eq!(cache.stats().bytes, 57);
        assert!(cache.get(&key("/a"), at).is_none());
        for p in ["/b", "/c", "/d"] {
            assert!(cache.get(&key(p), at).is_some(), "{p} kept");
        }
        // Larger than the whole budget: never stored.
        cache.put(
            key("/e"),
            t,
            0,
            at,
            HeaderMap::new(),
            Bytes::from(vec![0; 58]),
        );
        assert!(cache.get(&key("/e"), at).is_none());
        assert_eq!(cache.stats().entries, 3);
    }

    #[test]
    fn replacing_one_entry_forever_keeps_the_eviction_queue_bounded() {
        let cache = StoreCache::new(60, 1_000);
        let t = tenant();
        let at = Instant::now();
        for _ in 0..10_000 {
            cache.put(
                key("/a"),
                t,
                0,
                at,
                HeaderMap::new(),
                Bytes::from_static(b"x"),
            );
        }
        let inner = cache.lock();
        assert_eq!(inner.entries.len(), 1);
        assert!(inner.order.len() <= 2 + 16, "{} records", inner.order.len());
        assert_eq!(inner.bytes, 1 + 7 + 2);
    }

    #[test]
    fn a_zero_max_age_or_budget_turns_the_cache_off() {
        assert!(!StoreCache::new(0, 1_000).enabled());
        assert!(!StoreCache::new(60, 0).enabled());
        assert!(StoreCache::new(60, 1).enabled());
    }
}
