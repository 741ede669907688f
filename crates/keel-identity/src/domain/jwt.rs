//! Access tokens: compact JWS (RFC 7515/7519) signed with Ed25519 (`EdDSA`, RFC 8037), and
//! nothing else.
//!
//! The algorithm is fixed by this code, never chosen by the token: a header whose `alg` is not
//! exactly `EdDSA` (`none`, `HS256` with a public key as the HMAC secret, …) is refused before
//! any key is touched. The key is picked by `kid` from the verifier's own key set. Signatures
//! are checked with `verify_strict` (no malleable or small-order encodings). Then every claim
//! is checked: issuer, audience, expiry, issue time, and the presence of `sub`, `tid`, `sid`,
//! `jti`. See docs/adr/0006-eddsa-jwt.md for why this is not a general JWT library.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use keel_kernel::TenantId;
use serde::{Deserialize, Serialize};

/// Longest token accepted; longer input is refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    Staff,
    Customer,
    Api,
}

/// The claims Keel issues and requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user, customer or key id (`usr_…`, `cus_…`, `key_…`).
    pub sub: String,
    pub tid: TenantId,
    pub kind: PrincipalKind,
    /// Space-separated permissions (`orders:read catalog:write`), possibly empty.
    pub scope: String,
    /// The session (refresh-token family) this token belongs to.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused. Deliberately coarse towards clients (all are 401); precise in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
}

/// A private signing key with its id.
pub struct SigningKey {
    pub kid: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate(kid: impl Into<String>) -> Self {
        Self::from_seed(kid, crate::domain::secret::random_bytes::<32>())
    }

    /// Rebuilds a key from its 32-byte seed (as stored).
    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Self {
        Self {
            kid: kid.into(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed, for storage. Handle as a secret.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `claims` into a compact token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: ALG.to_owned(),
            kid: self.kid.clone(),
            typ: Some("JWT".to_owned()),
        };
        let header = serde_json::to_vec(&header).expect("a header of strings serializes");
        let payload = serde_json::to_vec(claims).expect("claims of strings and integers serialize");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// A public verification key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// The JWK form (RFC 8037 `OKP` / `Ed25519`).
    pub fn to_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            "kid": self.kid,
            "alg": ALG,
            "use": "sig",
        })
    }
}

const ALG: &str = "EdDSA";

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Checks tokens against a key set and the expected issuer and audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<PublicKey>,
    /// Exact tolerance, in seconds, for clocks of other nodes being ahead (`iat`).
    pub leeway_seconds: i64,
}

fn part(s: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)
}

impl Verifier {
    /// Verifies `token` at `now` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        verify_with(
            token,
            &self.issuer,
            &self.audience,
            &self.keys,
            self.leeway_seconds,
            now,
        )
    }
}

/// [`Verifier::verify`] over a borrowed key set (the request path verifies against the cached
/// keys without copying them).
pub fn verify_with(
    token: &str,
    issuer: &str,
    audience: &str,
    keys: &[PublicKey],
    leeway_seconds: i64,
    now: i64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    // Only the fields we know; `crit` or anything else we would have to honour is refused.
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&part(h)?).map_err(|_| TokenError::Malformed)?;
    if header.get("alg").and_then(serde_json::Value::as_str) != Some(ALG) {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header
        .keys()
        .any(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
    {
        return Err(TokenError::Malformed);
    }
    if header.get("typ").is_some_and(|t| t.as_str() != Some("JWT")) {
        return Err(TokenError::Malformed);
    }
    let kid = header
        .get("kid")
        .and_then(serde_json::Value::as_str)
        .ok_or(TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKey)?;
    let sig: [u8; 64] = part(s)?.try_into().map_err(|_| TokenError::Malformed)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    key.key
        .verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&part(p)?).map_err(|_| TokenError::Malformed)?;
    if claims.iss != issuer {
        return Err(TokenError::WrongIssuer);
    }
    if claims.aud != audience {
        return Err(TokenError::WrongAudience);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.iat > now + leeway_seconds || claims.iat > claims.exp {
        return Err(TokenError::IssuedInFuture);
    }
    if claims.sub.is_empty() || claims.sid.is_empty() || claims.jti.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            iss: "https://keel.test".into(),
            aud: "keel-admin".into(),
            sub: "usr_1".into(),
            tid: TenantId::new(),
            kind: PrincipalKind::Staff,
            scope: "orders:read".into(),
            sid: "ses_1".into(),
            jti: "jti_1".into(),
            iat: NOW,
            exp: NOW + 900,
        }
    }

    fn verifier(keys: Vec<PublicKey>) -> Verifier {
        Verifier {
            issuer: "https://keel.test".into(),
            audience: "keel-admin".into(),
            keys,
            leeway_seconds: 0,
        }
    }

    fn forge(header: &serde_json::Value, claims: &Claims, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("json")),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn a_signed_token_verifies_with_every_claim_intact() {
        let key = SigningKey::generate("k1");
        let c = claims();
        assert_eq!(
            verifier(vec![key.public()]).verify(&key.sign(&c), NOW),
            Ok(c)
        );
    }

    #[test]
    fn tampered_payload_or_signature_is_refused() {
        let key = SigningKey::generate("k1");
        let token = key.sign(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut c = claims();
        c.scope = "orders:read orders:write".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("json"));
        assert_eq!(
            verifier(vec![key.public()]).verify(&parts.join("."), NOW),
            Err(TokenError::BadSignature)
        );
        let other = SigningKey::generate("k1");
        assert_eq!(
            verifier(vec![other.public()]).verify(&token, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry_issuer_audience_and_issue_time_are_checked() {
        let key = SigningKey::generate("k1");
        let v = verifier(vec![key.public()]);
        let token = key.sign(&claims());
        assert_eq!(
            v.verify(&token, NOW + 899).map(|c| c.jti),
            Ok("jti_1".into())
        );
        assert_eq!(v.verify(&token, NOW + 900), Err(TokenError::Expired));
        let mut wrong_aud = v.clone();
        wrong_aud.audience = "keel-store".into();
        assert_eq!(
            wrong_aud.verify(&token, NOW),
            Err(TokenError::WrongAudience)
        );
        let mut wrong_iss = v.clone();
        wrong_iss.issuer = "https://evil.test".into();
        assert_eq!(wrong_iss.verify(&token, NOW), Err(TokenError::WrongIssuer));
        assert_eq!(v.verify(&token, NOW - 1), Err(TokenError::IssuedInFuture));
    }

    #[test]
    fn alg_none_and_hs256_with_the_public_key_are_refused() {
        let key = SigningKey::generate("k1");
        let v = verifier(vec![key.public()]);
        let none = forge(
            &serde_json::json!({"alg": "none", "kid": "k1"}),
            &claims(),
            b"",
        );
        assert_eq!(v.verify(&none, NOW), Err(TokenError::UnsupportedAlgorithm));
        // The classic confusion attack: HMAC keyed with the (public) verification key.
        let header = serde_json::json!({"alg": "HS256", "kid": "k1", "typ": "JWT"});
        let unsigned = forge(&header, &claims(), b"");
        let input = &unsigned[..unsigned.len() - 1];
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.public().key.to_bytes())
            .expect("any key");
        mac.update(input.as_bytes());
        let hs = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(v.verify(&hs, NOW), Err(TokenError::UnsupportedAlgorithm));
        let lower = forge(
            &serde_json::json!({"alg": "eddsa", "kid": "k1"}),
            &claims(),
            &[0; 64],
        );
        assert_eq!(v.verify(&lower, NOW), Err(TokenError::UnsupportedAlgorithm));
    }

    #[test]
    fn unknown_kids_extra_header_fields_and_garbage_are_refused() {
        let key = SigningKey::generate("k1");
        let v = verifier(vec![key.public()]);
        let k2 = SigningKey::generate("k2");
        assert_eq!(
            v.verify(&k2.sign(&claims()), NOW),
            Err(TokenError::UnknownKey)
        );
        let crit = forge(
            &serde_json::json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"]}),
            &claims(),
            &[0; 64],
        );
        assert_eq!(v.verify(&crit, NOW), Err(TokenError::Malformed));
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(5000)] {
            assert!(v.verify(garbage, NOW).is_err(), "{garbage:.20}");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_while_the_old_key_is_published() {
        let old = SigningKey::generate("k1");
        let new = SigningKey::generate("k2");
        let token = old.sign(&claims());
        assert!(
            verifier(vec![new.public(), old.public()])
                .verify(&token, NOW)
                .is_ok()
        );
        assert_eq!(
            verifier(vec![new.public()]).verify(&token, NOW),
            Err(TokenError::UnknownKey)
        );
        let restored = SigningKey::from_seed("k1", old.seed());
        assert_eq!(restored.public(), old.public());
    }

    #[test]
    fn jwk_has_the_rfc_8037_members() {
        let jwk = SigningKey::from_seed("k1", [7; 32]).public().to_jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().expect("x"))
                .expect("b64")
                .len(),
            32
        );
    }
}
