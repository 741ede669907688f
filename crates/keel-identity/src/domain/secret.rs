//! Opaque secrets handed to clients once (refresh tokens, setup and invite tokens, reset
//! tokens): 256 random bits, base64url, with a short kind prefix. Only their SHA-256 is stored;
//! with 256 bits of entropy a plain hash is enough (no salt or stretching needed) and makes
//! lookup by hash possible.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// 32 random bytes encode to 43 base64url characters.
const BODY_LEN: usize = 43;

/// The SHA-256 of a secret: what storage keeps and looks up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

/// A freshly generated secret: the plaintext (shown once) and its hash (stored).
pub struct Secret {
    plaintext: String,
    pub hash: SecretHash,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Fills `buf` from the operating system's CSPRNG. Failing to get randomness is not
/// recoverable for a security component, so this is treated as an invariant.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system provides randomness");
    buf
}

fn hash_of(s: &str) -> SecretHash {
    SecretHash(Sha256::digest(s.as_bytes()).into())
}

impl Secret {
    /// A new secret `<prefix>_<43 base64url chars>`.
    pub fn generate(prefix: &'static str) -> Self {
        let plaintext = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let hash = hash_of(&plaintext);
        Self { plaintext, hash }
    }

    /// The value to give the client, once.
    pub fn expose(&self) -> &str {
        &self.plaintext
    }

    /// Hashes a presented secret of the given kind; anything of the wrong shape is `None`
    /// (so garbage never reaches a query).
    pub fn hash_presented(prefix: &str, presented: &str) -> Option<SecretHash> {
        let body = presented.strip_prefix(prefix)?.strip_prefix('_')?;
        let well_formed = body.len() == BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| hash_of(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_verify_by_hash_and_only_with_their_prefix() {
        let s = Secret::generate("rt");
        assert!(s.expose().starts_with("rt_"));
        assert_eq!(s.expose().len(), 3 + BODY_LEN);
        assert_eq!(Secret::hash_presented("rt", s.expose()), Some(s.hash));
        assert_eq!(Secret::hash_presented("st", s.expose()), None);
        assert_eq!(Secret::hash_presented("rt", "rt_short"), None);
        assert_ne!(Secret::generate("rt").hash, s.hash);
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
