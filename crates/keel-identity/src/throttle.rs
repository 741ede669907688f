//! Brute-force limits on password login: exact counts over an exact sliding window
//! (DESIGN.md §3), e.g. 5 failures per account and 20 per client IP within 900 s.
//!
//! Keys are SHA-256 digests of `account:<tenant>:<email>` and `ip:<address>`, so the table holds
//! no personal data. Unknown emails are throttled like known ones: the lockout must not reveal
//! which accounts exist.

use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// A throttled subject, hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThrottleKey(pub [u8; 32]);

impl std::fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThrottleKey(<hashed>)")
    }
}

impl ThrottleKey {
    /// One account: the shop slug and email as typed (normalised), whether or not they exist.
    pub fn account(tenant_slug: &str, email: &str) -> Self {
        Self::digest(&format!(
            "account:{}:{}",
            tenant_slug.trim().to_lowercase(),
            email.trim().to_lowercase()
        ))
    }

    /// One client address.
    pub fn ip(addr: std::net::IpAddr) -> Self {
        // IPv4-mapped IPv6 and plain IPv4 are the same client.
        let canonical = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            v4 @ std::net::IpAddr::V4(_) => v4,
        };
        Self::digest(&format!("ip:{canonical}"))
    }

    fn digest(s: &str) -> Self {
        Self(Sha256::digest(s.as_bytes()).into())
    }
}

/// One limit: at most `max` attempts per `window` for `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub key: ThrottleKey,
    pub max: u32,
    pub window: Duration,
}

/// When a limit that is reached opens again: `times` are the key's attempt times inside the
/// window (ascending). With `n >= max` attempts, the window admits a new one once the attempt at
/// position `n - max` has left it. `None` when below the limit.
pub fn locked_until(
    times: &[OffsetDateTime],
    max: u32,
    window: Duration,
) -> Option<OffsetDateTime> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if max == 0 {
        return times.first().map(|t| *t + window);
    }
    if times.len() < max {
        return None;
    }
    Some(times[times.len() - max] + window)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_reached_limit_opens_when_the_oldest_counted_attempt_leaves_the_window() {
        let t0 = datetime!(2026-11-21 10:00 UTC);
        let w = Duration::seconds(900);
        let times: Vec<_> = (0..5).map(|i| t0 + Duration::seconds(i * 10)).collect();
        assert_eq!(locked_until(&times[..4], 5, w), None);
        assert_eq!(locked_until(&times, 5, w), Some(t0 + w));
        let mut six = times.clone();
        six.push(t0 + Duration::seconds(60));
        assert_eq!(
            locked_until(&six, 5, w),
            Some(t0 + Duration::seconds(10) + w)
        );
    }

    #[test]
    fn keys_hide_their_subject_and_normalise() {
        assert_eq!(
            ThrottleKey::account("acme", " Alice@Shop.Test"),
            ThrottleKey::account("ACME", "alice@shop.test")
        );
        assert_ne!(
            ThrottleKey::account("acme", "alice@shop.test"),
            ThrottleKey::account("globex", "alice@shop.test")
        );
        let v4: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(ThrottleKey::ip(v4), ThrottleKey::ip(mapped));
        assert!(!format!("{:?}", ThrottleKey::ip(v4)).contains("192"));
    }
}
