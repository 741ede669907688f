//! API keys: secret keys (`sk_…`) for servers, with explicit scopes, and publishable keys
//! (`pk_…`) that only unlock a tenant's public store routes.
//!
//! A key reads `sk_<lookup>_<secret>`: `lookup` (16 base32 characters, 80 random bits) finds
//! the row, `secret` (256 random bits) proves possession. Only the SHA-256 of the whole key is
//! stored, compared in constant time. Keys never carry identity-management scopes
//! (`users:manage`, `api_keys:manage`, `settings:manage`): a leaked key cannot mint keys or
//! staff accounts.

use std::fmt;

use keel_kernel::{TenantId, define_id};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::{domain::access::Permission, domain::secret::random_bytes};

define_id!(
    /// An API key.
    ApiKeyId,
    "key"
);

/// Scopes an API key may hold.
pub const KEY_SCOPES: [Permission; 7] = [
    Permission::OrdersRead,
    Permission::OrdersWrite,
    Permission::CatalogRead,
    Permission::CatalogWrite,
    Permission::CustomersRead,
    Permission::WebhooksManage,
    Permission::AuditRead,
];

/// Browser origins one publishable key may allow at most.
pub const MAX_ORIGINS: usize = 20;

/// A browser origin, exactly (RFC 6454 serialisation): `https://host` or `https://host:port`,
/// lower case, no path, no wildcard. Plain `http` only for a loopback host (development).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin(String);

impl Origin {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        const WHY: &str = "must be an exact origin such as https://shop.example.com (scheme, host and optional port; no path or wildcard)";
        let (scheme, rest) = s.split_once("://").ok_or(WHY)?;
        // No IPv6 literal (`[`…`]`): a host holds no `:`, so the first one starts the port.
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        // Digits only, and never the scheme's default port: a browser's `Origin` omits it,
        // so an entry naming it would never match.
        let default_port = if scheme == "https" { "443" } else { "80" };
        let port_ok = port.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && !p.starts_with('0')
                && p != default_port
                && p.parse::<u16>().is_ok_and(|n| n > 0)
        });
        let loopback = host == "localhost" || host == "127.0.0.1";
        let scheme_ok = scheme == "https" || (scheme == "http" && loopback);
        if !(host_ok && port_ok && scheme_ok) {
            return Err(WHY);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod origin_tests {
    use super::Origin;

    #[test]
    fn only_exact_origins_parse() {
        for ok in [
            "https://shop.example.com",
            "https://shop.example.com:8443",
            "http://localhost:3000",
            "http://127.0.0.1:5173",
        ] {
            assert_eq!(Origin::parse(ok).map(|o| o.to_string()), Ok(ok.to_owned()));
        }
        for bad in [
            "*",
            "https://*.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/path",
            "http://shop.example.com",
            "https://Shop.example.com",
            "https://user@shop.example.com",
            "https://shop.example.com:0",
            "https://shop.example.com:65536",
            "https://shop.example.com:08443",
            "https://[::1]",
            "null",
            "https://",
            "https://-a.example.com",
            "https://shop..example.com",
            "https://shop.example.com?x",
            "https://shop.example.com#x",
            "ftp://shop.example.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Secret or publishable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Publishable,
}

impl KeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Secret => "sk",
            Self::Publishable => "pk",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Publishable => "publishable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Secret, Self::Publishable]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// An API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub kind: KeyKind,
    pub name: String,
    /// The public part that finds the row; shown in listings so keys can be told apart.
    pub lookup: String,
    pub secret_hash: [u8; 32],
    pub scopes: Vec<Permission>,
    /// Publishable keys: the exact browser origins allowed to read the storefront's answers
    /// (CORS). Empty: no browser origin is granted.
    pub allowed_origins: Vec<Origin>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKey {
    /// Usable at `now`: not revoked and not expired.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// True when `presented` is this key (constant-time).
    pub fn matches(&self, presented: &PresentedKey) -> bool {
        presented.kind == self.kind && bool::from(presented.hash.ct_eq(&self.secret_hash))
    }
}

/// A freshly generated key: the plaintext, shown once.
pub struct NewKeyMaterial {
    pub plaintext: String,
    pub lookup: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for NewKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKeyMaterial")
            .field("lookup", &self.lookup)
            .finish_non_exhaustive()
    }
}

const LOOKUP_LEN: usize = 16;
const SECRET_LEN: usize = 43;

fn lookup_chars() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let bytes = random_bytes::<10>();
    let mut n = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&bytes);
        b
    });
    let mut out = [0u8; LOOKUP_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(n & 0x1f).expect("5 bits fit")];
        n >>= 5;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Generates a key of `kind`.
pub fn generate(kind: KeyKind) -> NewKeyMaterial {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let lookup = lookup_chars();
    let plaintext = format!(
        "{}_{lookup}_{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    );
    let hash = Sha256::digest(plaintext.as_bytes()).into();
    NewKeyMaterial {
        plaintext,
        lookup,
        hash,
    }
}

/// A key as presented by a client, parsed and hashed; never kept in plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub kind: KeyKind,
    pub lookup: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("kind", &self.kind)
            .field("lookup", &self.lookup)
            .finish_non_exhaustive()
    }
}

impl PresentedKey {
    /// Parses `sk_…` or `pk_…`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_once('_')?;
        let kind = [KeyKind::Secret, KeyKind::Publishable]
            .into_iter()
            .find(|k| k.prefix() == prefix)?;
        let (lookup, secret) = rest.split_once('_')?;
        let ok = lookup.len() == LOOKUP_LEN
            && lookup
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && secret.len() == SECRET_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self {
            kind,
            lookup: lookup.to_owned(),
            hash: Sha256::digest(s.as_bytes()).into(),
        })
    }
}

/// Parses requested scopes: known permissions that keys may hold, without duplicates.
pub fn parse_scopes(requested: &[String]) -> Result<Vec<Permission>, String> {
    let mut out = Vec::new();
    for s in requested {
        let p = Permission::parse(s).ok_or_else(|| format!("`{s}` is not a permission"))?;
        if !KEY_SCOPES.contains(&p) {
            return Err(format!("`{s}` cannot be granted to an API key"));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_match_only_themselves() {
        let k = generate(KeyKind::Secret);
        assert!(k.plaintext.starts_with("sk_"));
        assert_eq!(k.plaintext.len(), 3 + LOOKUP_LEN + 1 + SECRET_LEN);
        let p = PresentedKey::parse(&k.plaintext).expect("parses");
        assert_eq!(
            (p.kind, p.lookup.as_str(), p.hash),
            (KeyKind::Secret, k.lookup.as_str(), k.hash)
        );
        let mut tampered = k.plaintext.clone();
        tampered.pop();
        tampered.push(if k.plaintext.ends_with('A') { 'B' } else { 'A' });
        assert_ne!(
            PresentedKey::parse(&tampered).expect("same shape").hash,
            k.hash
        );
        assert!(PresentedKey::parse("sk_short_x").is_none());
        assert!(PresentedKey::parse(&k.plaintext.replacen("sk_", "xk_", 1)).is_none());
        assert!(!format!("{k:?}").contains(&k.plaintext));
        assert_eq!(
            PresentedKey::parse(&generate(KeyKind::Publishable).plaintext).map(|p| p.kind),
            Some(KeyKind::Publishable)
        );
    }

    #[test]
    fn keys_cannot_hold_identity_scopes() {
        assert_eq!(
            parse_scopes(&["orders:read".into(), "orders:read".into()]),
            Ok(vec![Permission::OrdersRead])
        );
        assert!(parse_scopes(&["api_keys:manage".into()]).is_err());
        assert!(parse_scopes(&["users:manage".into()]).is_err());
        assert!(parse_scopes(&["orders:*".into()]).is_err());
    }
}
