//! Secrets at rest (JWT signing seeds, TOTP secrets) are sealed with AES-256-GCM under one
//! master key from the configuration (`KEEL_SECRET_KEY`, or a key file the embedded mode
//! creates). Each sealed value is bound to its row by associated data (`"signing_key:<kid>"`),
//! so a sealed blob copied into another row does not open.
//!
//! Wire form: version byte `1`, 12-byte random nonce, ciphertext with its 16-byte tag.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, Payload},
};

use crate::domain::secret::random_bytes;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The master key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Why sealed data did not open: wrong master key, wrong row, or corrupt bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed secret cannot be opened (wrong master key or corrupt data)")]
pub struct OpenError;

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Self {
        Self(random_bytes::<32>())
    }

    /// A key for another purpose, derived from this one (HMAC-SHA256 of the purpose's label):
    /// knowing a derived key reveals neither the master key nor another purpose's key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("a 32-byte key fits AES-256")
    }

    /// Seals `plaintext` bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens what [`MasterKey::seal`] produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError)?;
        if version != VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal("signing_key:k1", b"seed bytes");
        assert_eq!(
            key.open("signing_key:k1", &sealed),
            Ok(b"seed bytes".to_vec())
        );
        assert_eq!(key.open("signing_key:k2", &sealed), Err(OpenError));
        assert_eq!(
            MasterKey::generate().open("signing_key:k1", &sealed),
            Err(OpenError)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("signing_key:k1", &tampered), Err(OpenError));
        assert_ne!(
            key.seal("c", b"x"),
            key.seal("c", b"x"),
            "fresh nonce per seal"
        );
        assert_eq!(key.open("c", &[]), Err(OpenError));
    }
}
