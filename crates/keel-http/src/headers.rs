//! Keel's own request headers, named once for the extractors and the caches that read them.

use axum::http::HeaderName;

/// The header that carries a publishable key.
pub const PUBLISHABLE_KEY: HeaderName = HeaderName::from_static("keel-publishable-key");
