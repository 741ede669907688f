//! Passwords: the policy a new password must meet, and argon2id hashing.
//!
//! argon2id with m = 19456 KiB, t = 2, p = 1 and a fresh 16-byte salt per hash (DESIGN.md §4,
//! OWASP's baseline). Hashing costs tens of milliseconds of CPU: callers run it on a blocking
//! thread. When an account does not exist, [`PasswordHasher::verify_dummy`] spends the same
//! work so response timing does not reveal which emails exist.

use std::{fmt, sync::OnceLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};

/// Limits of the password policy: exact values.
pub const MIN_CHARS: usize = 12;
pub const MAX_BYTES: usize = 1024;
/// Lowest acceptable zxcvbn score (0-4): 3 means more than 10^8 guesses to crack.
pub const MIN_SCORE: u8 = 3;

/// Why a new password was refused. Never includes the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("must not contain the email address or the shop's name")]
    ContainsIdentity,
    #[error("is too easy to guess; use a longer passphrase")]
    TooWeak,
}

/// A password that passed the policy. Its `Debug` never shows it.
pub struct NewPassword(String);

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

impl NewPassword {
    /// Checks `raw` against the policy, for an account with `email` in a shop called `shop`.
    pub fn parse(raw: &str, email: &str, shop: &str) -> Result<Self, PasswordPolicyError> {
        if raw.len() > MAX_BYTES {
            return Err(PasswordPolicyError::TooLong);
        }
        if raw.chars().count() < MIN_CHARS {
            return Err(PasswordPolicyError::TooShort);
        }
        let lower = raw.to_lowercase();
        let local = email.split('@').next().unwrap_or_default().to_lowercase();
        let identity = [email.to_lowercase(), local, shop.to_lowercase()];
        // Fragments shorter than 4 characters ("al", "acme" is 4) would refuse too much.
        if identity
            .iter()
            .any(|part| part.chars().count() >= 4 && lower.contains(part.as_str()))
        {
            return Err(PasswordPolicyError::ContainsIdentity);
        }
        let inputs: Vec<&str> = identity.iter().map(String::as_str).collect();
        if u8::from(zxcvbn::zxcvbn(raw, &inputs).score()) < MIN_SCORE {
            return Err(PasswordPolicyError::TooWeak);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A stored password hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash(String);

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredHash(<redacted>)")
    }
}

impl StoredHash {
    /// Wraps a hash read from storage; refuses anything that is not a PHC string.
    pub fn from_stored(s: String) -> Result<Self, String> {
        PasswordHash::new(&s).map_err(|e| e.to_string())?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why hashing failed (only a broken RNG or parameters; never the password's fault).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// argon2id with Keel's fixed parameters.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHasher(argon2id m=19456 t=2 p=1)")
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        let params = Params::new(19_456, 2, 1, None).expect("constant argon2 parameters are valid");
        Self {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        }
    }
}

impl PasswordHasher {
    /// Hashes with a fresh random salt.
    pub fn hash(&self, password: &NewPassword) -> Result<StoredHash, HashError> {
        self.argon
            .hash_password(password.0.as_bytes())
            .map(|h| StoredHash(h.to_string()))
            .map_err(|e| HashError(e.to_string()))
    }

    /// True when `candidate` matches. Any parse or parameter problem is a mismatch.
    pub fn verify(&self, candidate: &str, hash: &StoredHash) -> bool {
        if candidate.len() > MAX_BYTES {
            return false;
        }
        PasswordHash::new(&hash.0)
            .is_ok_and(|h| self.argon.verify_password(candidate.as_bytes(), &h).is_ok())
    }

    /// Spends the work of one verification against a fixed hash, for unknown accounts.
    pub fn verify_dummy(&self, candidate: &str) {
        static DUMMY: OnceLock<Option<StoredHash>> = OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            let pw = NewPassword("a-dummy-password-nobody-has-4711".to_owned());
            Self::default().hash(&pw).ok()
        });
        if let Some(h) = dummy {
            let _ = self.verify(candidate, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "correct horse battery staple 1916";

    #[test]
    fn policy_bounds_are_exact() {
        assert_eq!(
            NewPassword::parse("short1!A", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            NewPassword::parse(&"x".repeat(1_025), "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooLong)
        );
        assert!(NewPassword::parse(STRONG, "alice@shop.test", "Acme").is_ok());
    }

    #[test]
    fn weak_and_identity_passwords_are_refused() {
        assert_eq!(
            NewPassword::parse("password1234", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooWeak)
        );
        assert_eq!(
            NewPassword::parse("aaaaaaaaaaaa", "a@b.test", "Shop").err(),
            Some(PasswordPolicyError::TooWeak)
        );
        assert_eq!(
            NewPassword::parse("xq-Alice-vb7-ridge-hollow", "alice@shop.test", "Acme").err(),
            Some(PasswordPolicyError::ContainsIdentity)
        );
        assert_eq!(
            NewPassword::parse("wild acmecorp meadow 88", "bob@shop.test", "AcmeCorp").err(),
            Some(PasswordPolicyError::ContainsIdentity)
        );
    }

    #[test]
    fn hashes_are_argon2id_with_the_fixed_parameters_and_verify() {
        let hasher = PasswordHasher::default();
        let pw = NewPassword::parse(STRONG, "alice@shop.test", "Acme").expect("strong");
        let h = hasher.hash(&pw).expect("hash");
        assert!(
            h.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            h.as_str()
        );
        assert!(hasher.verify(STRONG, &h));
        assert!(!hasher.verify("correct horse battery staple 1917", &h));
        let again = hasher.hash(&pw).expect("hash");
        assert_ne!(h, again, "a fresh salt per hash");
        assert!(StoredHash::from_stored("not a hash".into()).is_err());
        assert!(!format!("{pw:?} {h:?}").contains("horse"));
    }
}
