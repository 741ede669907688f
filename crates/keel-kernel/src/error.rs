//! The one error type of every storage port, whatever the backend.
//!
//! Adapters translate their driver errors into these variants; contexts translate them into
//! their own errors (a `Conflict` on `tenants_slug_key` becomes "slug taken"). Nothing here
//! depends on a driver, so a port can never leak `sqlx::Error`.

use std::error::Error as StdError;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a storage port can report, independent of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row for this tenant and id. Another tenant's row is also `NotFound`, by design.
    #[error("not found")]
    NotFound,
    /// A named uniqueness or integrity constraint refused the write. `constraint` is the
    /// canonical constraint name, identical on every backend (e.g. `tenants_slug_key`).
    #[error("conflict on constraint {constraint}")]
    Conflict { constraint: String },
    /// The shop has as many of these as its quota allows (`quota` names it, as
    /// [`crate::quota::Quota::name`]); nothing was written.
    #[error("quota exceeded: {quota}")]
    QuotaExceeded { quota: String },
    /// The backend cannot be reached or has no capacity right now (pool timeout, I/O error,
    /// database locked). Callers may retry; HTTP answers 503.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug, a corrupt row, an unexpected driver error. HTTP answers 500.
    #[error("store error")]
    Other(#[source] BoxError),
}

impl StoreError {
    /// Wraps any error as [`StoreError::Other`].
    pub fn other(e: impl Into<BoxError>) -> Self {
        Self::Other(e.into())
    }

    /// Wraps any error as [`StoreError::Unavailable`].
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }

    /// The quota refusal a backend raised (`quota_exceeded:<quota>` in its message), if this
    /// message is one.
    pub fn quota_in(message: &str) -> Option<Self> {
        // The whole message, exactly as the triggers raise it: nothing a client wrote can
        // make another error read as a quota.
        let quota = message.trim().strip_prefix("quota_exceeded:")?;
        crate::quota::Quota::parse(quota).map(|q| Self::QuotaExceeded {
            quota: q.name().to_owned(),
        })
    }

    /// True when this is a conflict on the named constraint.
    pub fn is_conflict_on(&self, name: &str) -> bool {
        matches!(self, Self::Conflict { constraint } if constraint == name)
    }
}
