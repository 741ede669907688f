//! The installation's JWT signing keys: sealed in storage, cached in memory for an exact
//! time, rotated with an exact overlap (ADR 0007).

use std::sync::{Arc, RwLock};

use keel_kernel::{StoreError, clock::Clock};
use time::{Duration, OffsetDateTime};

use crate::{
    domain::jwt::{Claims, PublicKey, SigningKey, TokenError, verify_with},
    domain::sealed::MasterKey,
    domain::staff::StoredSigningKey,
    ports::SigningKeyStore,
};

struct LoadedKeys {
    signing: Arc<SigningKey>,
    public: Vec<PublicKey>,
    loaded_at: OffsetDateTime,
}

/// The installation's signing keys: sealed in storage, cached in memory for an exact time.
pub struct KeyRing {
    store: Arc<dyn SigningKeyStore>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    overlap: Duration,
    cache_for: Duration,
    cached: RwLock<Option<Arc<LoadedKeys>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

/// A fresh key id, time-ordered: `k_<base32 UUIDv7>`.
fn new_kid() -> String {
    format!("k_{}", keel_kernel::id::encode_base32(uuid::Uuid::now_v7()))
}

/// Below this age a cached key set is not re-read even for an unknown `kid`, so a stream of
/// forged kids cannot turn into a stream of database reads.
const MIN_RELOAD_INTERVAL: Duration = Duration::seconds(1);

impl KeyRing {
    pub fn new(
        store: Arc<dyn SigningKeyStore>,
        master: MasterKey,
        clock: Arc<dyn Clock>,
        overlap: Duration,
        cache_for: Duration,
    ) -> Self {
        Self {
            store,
            master,
            clock,
            overlap,
            cache_for,
            cached: RwLock::new(None),
        }
    }

    fn sealed_context(kid: &str) -> String {
        format!("signing_key:{kid}")
    }

    fn cached(&self) -> Option<Arc<LoadedKeys>> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn load(&self) -> Result<Arc<LoadedKeys>, StoreError> {
        let mut stored = self.store.list_signing_keys().await?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            // First start of the installation (or every key retired): make one.
            self.rotate_stored().await?;
            stored = self.store.list_signing_keys().await?;
        }
        let now = self.clock.now();
        let mut signing = None;
        let mut public = Vec::new();
        for k in &stored {
            let published = k.retired_at.is_none_or(|r| now < r + self.overlap);
            if !published {
                continue;
            }
            let seed = self
                .master
                .open(&Self::sealed_context(&k.kid), &k.sealed_seed)
                .map_err(|e| {
                    StoreError::other(format!(
                        "signing key {}: {e}; is KEEL_SECRET_KEY the one it was sealed with?",
                        k.kid
                    ))
                })?;
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| StoreError::other("signing key seed is not 32 bytes"))?;
            let key = SigningKey::from_seed(k.kid.clone(), seed);
            public.push(key.public());
            // `stored` is newest first: the first unretired key signs.
            if signing.is_none() && k.retired_at.is_none() {
                signing = Some(Arc::new(key));
            }
        }
        let signing = signing.ok_or_else(|| StoreError::other("no current signing key"))?;
        let loaded = Arc::new(LoadedKeys {
            signing,
            public,
            loaded_at: now,
        });
        *self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(loaded.clone());
        Ok(loaded)
    }

    async fn current(&self) -> Result<Arc<LoadedKeys>, StoreError> {
        match self.cached() {
            Some(k) if self.clock.now() < k.loaded_at + self.cache_for => Ok(k),
            _ => self.load().await,
        }
    }

    async fn rotate_stored(&self) -> Result<String, StoreError> {
        let kid = new_kid();
        let key = SigningKey::generate(kid.clone());
        let stored = StoredSigningKey {
            sealed_seed: self.master.seal(&Self::sealed_context(&kid), &key.seed()),
            kid: kid.clone(),
            created_at: self.clock.now(),
            retired_at: None,
        };
        self.store.rotate_signing_key(&stored).await?;
        Ok(kid)
    }

    /// The master key (also seals TOTP secrets).
    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Adds a new signing key; the previous one stays published for the overlap.
    pub async fn rotate(&self) -> Result<String, StoreError> {
        let kid = self.rotate_stored().await?;
        self.load().await?;
        Ok(kid)
    }

    /// Forgets the cached key set: another process rotated it (`keel keys rotate`, ADR 0041),
    /// so the next use reads it afresh and signs with the new key.
    pub fn forget(&self) {
        *self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Signs claims with the current key.
    pub async fn sign(&self, claims: &Claims) -> Result<String, StoreError> {
        Ok(self.current().await?.signing.sign(claims))
    }

    /// The published public keys (JWKS).
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, StoreError> {
        Ok(self.current().await?.public.clone())
    }

    /// Verifies a token for `audience`. An unknown `kid` (a key another node just created)
    /// triggers one re-read of the key set.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Result<Claims, TokenError>, StoreError> {
        let now = self.clock.now();
        let check = |keys: &LoadedKeys| {
            verify_with(
                token,
                issuer,
                audience,
                &keys.public,
                leeway.whole_seconds(),
                now.unix_timestamp(),
            )
        };
        let keys = self.current().await?;
        match check(&keys) {
            Err(TokenError::UnknownKey) if now >= keys.loaded_at + MIN_RELOAD_INTERVAL => {
                let reloaded = self.load().await?;
                Ok(check(&reloaded))
            }
            other => Ok(other),
        }
    }
}
