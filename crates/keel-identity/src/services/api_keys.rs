//! API key use cases: create (shown once), list, revoke, rotate with an exact overlap, and
//! authenticate a presented key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::NewEvent,
    page::{Page, PageRequest},
};
use time::{Duration, OffsetDateTime};
use tracing::instrument;

use crate::{
    domain::access::Permission,
    domain::api_key::{self, ApiKey, ApiKeyId, KeyKind, Origin, PresentedKey},
    ports::ApiKeyStore,
    services::auth::{AuthError, StaffPrincipal},
};

/// A key just created or rotated: the stored form and the plaintext (shown once).
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub plaintext: String,
}

/// A request authenticated by a secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrincipal {
    pub tenant_id: TenantId,
    pub key_id: ApiKeyId,
    pub scopes: Vec<Permission>,
}

/// How often `last_used_at` is written for a key in use: an exact interval, so a busy key
/// costs one write per interval, not one per request.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// At most this many publishable keys are cached per node; past it the cache starts afresh.
/// Only keys that exist are cached (an unknown lookup is never stored), so the bound is about
/// the shops served, not about what clients send.
const PUBLISHABLE_CACHE_ENTRIES: usize = 10_000;

/// Publishable keys as this node last read them, by lookup, with the time of the read.
/// Every storefront request presents one, so reading it from the store each time was a
/// statement (a round trip on PostgreSQL) per request. A cached key is still checked in full
/// on every use (its hash, its expiry, its revocation as read); what the cache can miss is a
/// revocation or rotation made through *another* node, for at most the configured time.
/// Changes made through this node drop the entry at once.
#[derive(Debug, Default)]
struct PublishableCache {
    ttl: Duration,
    /// Shared, never deep-copied on a hit: a storefront request reads its key on every call.
    entries: Mutex<HashMap<String, (Arc<ApiKey>, OffsetDateTime)>>,
    /// Moved by every forget: a read that started before a forget is not stored after it
    /// (it may hold the key as it was before a revocation).
    generation: std::sync::atomic::AtomicU64,
}

impl PublishableCache {
    fn get(&self, lookup: &str, now: OffsetDateTime) -> Option<Arc<ApiKey>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(lookup)
            .filter(|(_, read_at)| now < *read_at + self.ttl)
            .map(|(key, _)| key.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores a key read at `read_at`, unless something was forgotten since the read began
    /// (`generation`, from [`Self::generation`] before the read).
    fn put(&self, key: &ApiKey, read_at: OffsetDateTime, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that forgets take: no forget can slip between the check
        // and the insert.
        if self.generation() != generation {
            return;
        }
        if entries.len() >= PUBLISHABLE_CACHE_ENTRIES && !entries.contains_key(&key.lookup) {
            entries.clear();
        }
        entries.insert(key.lookup.clone(), (Arc::new(key.clone()), read_at));
    }

    /// Keeps the touch in the cached copy (without extending its time), so a cached key is
    /// touched once per interval, as an uncached one is.
    fn touched(&self, key: &ApiKey) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, _)) = entries.get_mut(&key.lookup) {
            Arc::make_mut(cached).last_used_at = key.last_used_at;
        }
    }

    fn forget(&self, id: ApiKeyId) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.retain(|_, (key, _)| key.id != id);
    }

    fn forget_tenant(&self, tenant: TenantId) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.retain(|_, (key, _)| key.tenant_id != tenant);
    }
}

/// API key administration and authentication.
#[derive(Debug, Clone)]
pub struct ApiKeyService {
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
    /// How long a rotated key keeps working.
    overlap: Duration,
    publishable: Arc<PublishableCache>,
}

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, AuthError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| AuthError::Internal(e.to_string()))
}

impl ApiKeyService {
    pub fn new(store: Arc<dyn ApiKeyStore>, clock: Arc<dyn Clock>, overlap: Duration) -> Self {
        Self {
            store,
            clock,
            overlap,
            publishable: Arc::default(),
        }
    }

    /// Caches publishable keys for exactly `ttl` after each read (zero: no cache). A
    /// revocation or rotation made through another node reaches this one within `ttl`.
    #[must_use]
    pub fn with_publishable_cache(mut self, ttl: Duration) -> Self {
        self.publishable = Arc::new(PublishableCache {
            ttl,
            entries: Mutex::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        });
        self
    }

    /// Drops every cached publishable key of `tenant`: a staff write through another node
    /// may have revoked or rotated one (ADR 0041), so the next use reads it afresh.
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.publishable.forget_tenant(tenant);
    }

    fn new_key(
        tenant: TenantId,
        kind: KeyKind,
        name: String,
        scopes: Vec<Permission>,
        allowed_origins: Vec<Origin>,
        created_at: OffsetDateTime,
        expires_at: Option<OffsetDateTime>,
    ) -> IssuedKey {
        let material = api_key::generate(kind);
        IssuedKey {
            key: ApiKey {
                id: ApiKeyId::new(),
                tenant_id: tenant,
                kind,
                name,
                lookup: material.lookup,
                secret_hash: material.hash,
                scopes,
                allowed_origins,
                created_at,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            },
            plaintext: material.plaintext,
        }
    }

    /// Creates a key. Publishable keys carry no scopes: they only open public store routes.
    #[instrument(skip_all, fields(tenant_id = %actor.tenant_id))]
    pub async fn create(
        &self,
        actor: &StaffPrincipal,
        kind: KeyKind,
        name: String,
        scopes: Vec<Permission>,
        allowed_origins: Vec<Origin>,
        expires_in: Option<Duration>,
    ) -> Result<IssuedKey, AuthError> {
        let now = self.clock.now();
        let issued = Self::new_key(
            actor.tenant_id,
            kind,
            name,
            scopes,
            allowed_origins,
            now,
            expires_in.map(|d| now + d),
        );
        let e = event(
            actor.tenant_id,
            "security.api_key_created",
            &serde_json::json!({"key_id": issued.key.id, "kind": kind.as_str(), "by": actor.user_id}),
            now,
        )?;
        self.store.create_api_key(&issued.key, &[e]).await?;
        tracing::info!(security = true, tenant_id = %actor.tenant_id, key_id = %issued.key.id, "API key created");
        Ok(issued)
    }

    pub async fn list(
        &self,
        actor: &StaffPrincipal,
        page: PageRequest,
    ) -> Result<Page<ApiKey>, AuthError> {
        Ok(self.store.list_api_keys(actor.tenant_id, page).await?)
    }

    /// Revokes a key at once.
    pub async fn revoke(&self, actor: &StaffPrincipal, id: ApiKeyId) -> Result<(), AuthError> {
        let now = self.clock.now();
        let e = event(
            actor.tenant_id,
            "security.api_key_revoked",
            &serde_json::json!({"key_id": id, "by": actor.user_id}),
            now,
        )?;
        self.store
            .revoke_api_key(actor.tenant_id, id, now, &[e])
            .await?;
        self.publishable.forget(id);
        tracing::info!(security = true, tenant_id = %actor.tenant_id, key_id = %id, "API key revoked");
        Ok(())
    }

    /// Issues a replacement with the same kind, name, scopes and expiry; the old key keeps
    /// working for exactly the configured overlap (or less, if it expired sooner).
    pub async fn rotate(
        &self,
        actor: &StaffPrincipal,
        id: ApiKeyId,
    ) -> Result<(IssuedKey, OffsetDateTime), AuthError> {
        let now = self.clock.now();
        let old = self.store.get_api_key(actor.tenant_id, id).await?;
        if !old.is_active(now) {
            return Err(AuthError::NotFound);
        }
        let issued = Self::new_key(
            actor.tenant_id,
            old.kind,
            old.name.clone(),
            old.scopes.clone(),
            old.allowed_origins.clone(),
            now,
            old.expires_at,
        );
        let cap = now + self.overlap;
        let old_until = old.expires_at.map_or(cap, |e| e.min(cap));
        let e = event(
            actor.tenant_id,
            "security.api_key_rotated",
            &serde_json::json!({"key_id": id, "new_key_id": issued.key.id, "by": actor.user_id}),
            now,
        )?;
        self.store
            .rotate_api_key(actor.tenant_id, id, cap, &issued.key, &[e])
            .await?;
        self.publishable.forget(id);
        tracing::info!(security = true, tenant_id = %actor.tenant_id, key_id = %id, "API key rotated");
        Ok((issued, old_until))
    }

    async fn active_key(&self, presented: &str, kind: KeyKind) -> Result<ApiKey, AuthError> {
        let now = self.clock.now();
        let presented = PresentedKey::parse(presented)
            .filter(|p| p.kind == kind)
            .ok_or(AuthError::Unauthenticated)?;
        // Only publishable keys are cached: a secret key's revocation answers at once on
        // every node.
        let cached = match kind {
            KeyKind::Publishable => self
                .publishable
                .get(&presented.lookup, now)
                .map(|k| ApiKey::clone(&k)),
            KeyKind::Secret => None,
        };
        let generation = self.publishable.generation();
        let mut key = match cached {
            Some(k) => k,
            None => match self.store.find_api_key(&presented.lookup).await {
                Ok(k) => {
                    if kind == KeyKind::Publishable {
                        self.publishable.put(&k, now, generation);
                    }
                    k
                }
                Err(StoreError::NotFound) => return Err(AuthError::Unauthenticated),
                Err(e) => return Err(e.into()),
            },
        };
        if !key.matches(&presented) || !key.is_active(now) {
            return Err(AuthError::Unauthenticated);
        }
        if key.last_used_at.is_none_or(|t| now >= t + TOUCH_EVERY) {
            self.store.touch_api_key(key.tenant_id, key.id, now).await?;
            key.last_used_at = Some(now);
            if kind == KeyKind::Publishable {
                self.publishable.touched(&key);
            }
        }
        Ok(key)
    }

    /// Whether any active publishable key of any shop allows `origin` (a CORS preflight
    /// carries no key, so it can only be answered for origins some storefront allows).
    pub async fn origin_allowed(&self, origin: &Origin) -> Result<bool, AuthError> {
        Ok(self
            .store
            .publishable_origin_allowed(origin, self.clock.now())
            .await?)
    }

    /// Authenticates a publishable key: the key as stored (its shop and allowed origins),
    /// shared with the cache (every storefront request asks, so a cached key that needs no
    /// touch is answered without a copy).
    pub async fn authenticate_publishable_key(
        &self,
        presented: &str,
    ) -> Result<Arc<ApiKey>, AuthError> {
        let now = self.clock.now();
        if let Some(parsed) =
            PresentedKey::parse(presented).filter(|p| p.kind == KeyKind::Publishable)
            && let Some(key) = self.publishable.get(&parsed.lookup, now)
            && key.matches(&parsed)
            && key.is_active(now)
            && key.last_used_at.is_some_and(|t| now < t + TOUCH_EVERY)
        {
            return Ok(key);
        }
        Ok(Arc::new(
            self.active_key(presented, KeyKind::Publishable).await?,
        ))
    }

    /// Authenticates a secret key.
    pub async fn authenticate_secret(&self, presented: &str) -> Result<KeyPrincipal, AuthError> {
        let key = self.active_key(presented, KeyKind::Secret).await?;
        Ok(KeyPrincipal {
            tenant_id: key.tenant_id,
            key_id: key.id,
            scopes: key.scopes,
        })
    }

    /// Authenticates a publishable key; the answer is the tenant whose store it opens.
    pub async fn authenticate_publishable(&self, presented: &str) -> Result<TenantId, AuthError> {
        Ok(self
            .active_key(presented, KeyKind::Publishable)
            .await?
            .tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn key(tenant: TenantId) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant,
            kind: KeyKind::Publishable,
            name: "storefront".into(),
            lookup: format!("lookup-{}", uuid::Uuid::now_v7().simple()),
            secret_hash: [0; 32],
            scopes: Vec::new(),
            allowed_origins: Vec::new(),
            created_at: datetime!(2026-12-07 00:00 UTC),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        }
    }

    /// A read that began before a forget (another node revoked the shop's key meanwhile)
    /// is not stored after it: the next use reads the key afresh.
    #[test]
    fn a_read_older_than_a_forget_is_not_cached() {
        let cache = PublishableCache {
            ttl: Duration::seconds(60),
            ..PublishableCache::default()
        };
        let (tenant, now) = (TenantId::new(), datetime!(2026-12-07 12:00 UTC));
        let k = key(tenant);
        let before = cache.generation();
        cache.forget_tenant(tenant);
        cache.put(&k, now, before);
        assert!(
            cache.get(&k.lookup, now).is_none(),
            "the stale read is dropped"
        );
        cache.put(&k, now, cache.generation());
        assert!(
            cache.get(&k.lookup, now).is_some(),
            "a read after the forget is kept"
        );
        cache.forget_tenant(tenant);
        assert!(cache.get(&k.lookup, now).is_none());
    }
}
