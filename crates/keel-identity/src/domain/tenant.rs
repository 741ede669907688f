//! Tenant domain types. Parse, don't validate: a [`TenantSlug`] cannot hold a bad slug.

use std::fmt;

use keel_kernel::{StoreError, TenantId};
use serde::Serialize;
use time::OffsetDateTime;

/// Why a slug was refused. Each reason is a sentence a merchant can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must be between 3 and 63 characters")]
    Length,
    #[error("may contain only lowercase letters a-z, digits and hyphens")]
    Charset,
    #[error("must start with a letter")]
    Start,
    #[error("must not end with a hyphen or contain two hyphens in a row")]
    Hyphens,
}

/// A tenant's URL-safe handle, e.g. `acme` or `acme-eu`: 3 to 63 characters of `[a-z0-9-]`,
/// starting with a letter, no trailing or doubled hyphen (so it is also a valid DNS label).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        if !(3..=63).contains(&s.len()) {
            return Err(SlugError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(SlugError::Charset);
        }
        if !s.as_bytes()[0].is_ascii_lowercase() {
            return Err(SlugError::Start);
        }
        if s.ends_with('-') || s.contains("--") {
            return Err(SlugError::Hyphens);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Why a tenant name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be blank")]
    Blank,
    #[error("must be at most 200 characters")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
}

/// A tenant's display name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError::Blank);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(NameError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A merchant on this Keel installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: TenantName,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What an operator asks for when creating a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub name: TenantName,
}

/// What can go wrong with tenants, in the context's own words (not HTTP's).
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant slug `{0}` is already taken")]
    SlugTaken(TenantSlug),
    #[error("tenant not found")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for TenantError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_label_slugs() {
        for ok in ["acme", "acme-eu", "a1b", "shop-2026", &"a".repeat(63)] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_slugs_with_a_reason() {
        let cases = [
            ("ab", SlugError::Length),
            (&"a".repeat(64) as &str, SlugError::Length),
            ("Acme", SlugError::Charset),
            ("acme shop", SlugError::Charset),
            ("acmé", SlugError::Charset),
            ("acme_eu", SlugError::Charset),
            ("1acme", SlugError::Start),
            ("-acme", SlugError::Start),
            ("acme-", SlugError::Hyphens),
            ("ac--me", SlugError::Hyphens),
        ];
        for (input, reason) in cases {
            assert_eq!(TenantSlug::parse(input), Err(reason), "{input}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            TenantName::parse("  Acme Inc. ").map(|n| n.0),
            Ok("Acme Inc.".into())
        );
        assert_eq!(TenantName::parse("   "), Err(NameError::Blank));
        assert_eq!(
            TenantName::parse(&"é".repeat(200)).map(|n| n.0.chars().count()),
            Ok(200)
        );
        assert_eq!(TenantName::parse(&"é".repeat(201)), Err(NameError::TooLong));
        assert_eq!(TenantName::parse("Acme\u{7}"), Err(NameError::Control));
    }
}
