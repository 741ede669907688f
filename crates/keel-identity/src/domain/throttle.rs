//! Brute-force limits: exact counts over an exact sliding window (docs/architecture.md, "Exact values") on password
//! logins (5 failures per account and 20 per client address and shop within 900 s), on an
//! account's second factor and re-authentication (5 failures per 900 s), and on password-reset
//! requests (3 per account and 20 per address and shop within 3600 s).
//!
//! Keys are SHA-256 digests of `account:<tenant>:<email>` and `ip:<scope>:<address>`, so the
//! table holds no personal data. Unknown emails are throttled like known ones: the lockout must not reveal
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

    /// One client address within one scope (a shop and side, or a kind of request), so an
    /// attacker's failures at one shop cannot lock out anyone at another. IPv6 clients count
    /// by their /64 ([`keel_kernel::net::client_key`]).
    pub fn address(scope: &str, addr: std::net::IpAddr) -> Self {
        Self::digest(&format!(
            "ip:{scope}:{}",
            keel_kernel::net::client_key(addr)
        ))
    }

    /// A staff login's address key: per shop (the slug as typed, normalised, whether or not the
    /// shop exists).
    pub fn staff_login_address(tenant_slug: &str, addr: std::net::IpAddr) -> Self {
        Self::address(
            &format!("login:staff:{}", tenant_slug.trim().to_lowercase()),
            addr,
        )
    }

    /// One account's second factor and re-authentication (MFA codes, backup codes, the
    /// current password when changing credentials): one count for all of them, so a guess at
    /// one check is a guess at all.
    pub fn factor(tenant: keel_kernel::TenantId, account: crate::domain::staff::Account) -> Self {
        Self::digest(&format!("factor:{tenant}:{account}"))
    }

    /// Password-reset requests for one account, as typed (unknown accounts count too, so the
    /// limit reveals nothing). `scope` names the shop and side.
    pub fn reset_account(scope: &str, email: &str) -> Self {
        Self::digest(&format!("reset:{scope}:{}", email.trim().to_lowercase()))
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
        assert_eq!(
            ThrottleKey::address("s", v4),
            ThrottleKey::address("s", mapped)
        );
        assert_ne!(
            ThrottleKey::staff_login_address("acme", v4),
            ThrottleKey::staff_login_address("globex", v4),
            "one shop's failures never count at another"
        );
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
            "2001:db8:0:1::a".parse().expect("ip"),
            "2001:db8:0:1:ffff::b".parse().expect("ip"),
        );
        assert_eq!(ThrottleKey::address("s", a), ThrottleKey::address("s", b));
        assert!(!format!("{:?}", ThrottleKey::address("s", v4)).contains("192"));
    }
}
