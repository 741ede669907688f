//! The provider's signed webhooks: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`
//! where each `v1` is HMAC-SHA256, keyed with the endpoint's signing secret (`whsec_...`, its
//! bytes as they are), over `<t>.<raw body>`.
//!
//! A request is accepted only when one of its `v1` values matches one of the shop's secrets
//! (several of each are allowed, for rotation), compared in constant time, and its timestamp
//! lies within an exact tolerance of now, either way (default 300 s): a replay of an old
//! delivery is refused even with a good signature. Nothing of an unverified request is
//! stored or parsed beyond this header.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

/// Why a webhook was refused (all answer 400; the reason is logged, never the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The parts of a `Stripe-Signature` header that matter: its one timestamp and its `v1`
/// signatures (other schemes, such as Stripe's test-mode `v0`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse(header: &str) -> Result<Header, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            // Digits only, as sent: the signed string is rebuilt from the number.
            "t" if timestamp.is_none()
                && !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "t" => return Err(SignatureError::Malformed),
            "v1" => signatures.push(hex32(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    match (timestamp, signatures.is_empty()) {
        (Some(timestamp), false) => Ok(Header {
            timestamp,
            signatures,
        }),
        _ => Err(SignatureError::Malformed),
    }
}

/// 64 hex digits as 32 bytes.
fn hex32(s: &str) -> Option<[u8; 32]> {
    let digits = s.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The signature of `payload` at `timestamp` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, payload: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Checks a delivery: its header, its raw body, the shop's secrets, the time now and the
/// exact tolerance. Answers the signed timestamp.
pub fn verify(
    header: &str,
    payload: &[u8],
    secrets: &[&[u8]],
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<OffsetDateTime, SignatureError> {
    let header = parse(header)?;
    let signed_at = OffsetDateTime::from_unix_timestamp(header.timestamp)
        .map_err(|_| SignatureError::Malformed)?;
    if (now - signed_at).abs() > tolerance {
        return Err(SignatureError::Stale);
    }
    // Every pair is compared, so the time taken does not tell which secret or value matched.
    let mut matched = subtle::Choice::from(0);
    // An empty secret would let anyone sign: it never matches.
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let expected = sign(secret, header.timestamp, payload);
        for given in &header.signatures {
            matched |= expected.ct_eq(given);
        }
    }
    if bool::from(matched) {
        Ok(signed_at)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A `Stripe-Signature` header for `payload` (the test suites' and the simulators' side).
pub fn header(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
    let mut out = format!("t={timestamp},v1=");
    for b in sign(secret, timestamp, payload) {
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("a nibble"));
        out.push(char::from_digit(u32::from(b & 0xf), 16).expect("a nibble"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const TOLERANCE: Duration = Duration::seconds(300);

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).expect("time")
    }

    #[test]
    fn a_known_vector_matches_hmac_sha256_over_timestamp_dot_body() {
        // HMAC-SHA256(key = "whsec_test_secret", "1700000000.{body}"), computed independently
        // with Python's hmac module.
        let header = header(SECRET, 1_700_000_000, BODY);
        assert_eq!(
            header,
            "t=1700000000,v1=22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31"
        );
    }

    #[test]
    fn a_fresh_delivery_signed_with_the_secret_is_accepted() {
        let h = header(SECRET, 1_700_000_000, BODY);
        assert_eq!(
            verify(&h, BODY, &[SECRET], at(1_700_000_100), TOLERANCE),
            Ok(at(1_700_000_000))
        );
    }

    #[test]
    fn a_body_changed_after_signing_or_another_secret_is_refused() {
        let h = header(SECRET, 1_700_000_000, BODY);
        let changed = br#"{"id":"evt_1","type":"payment_intent.succeeded" }"#;
        assert_eq!(
            verify(&h, changed, &[SECRET], at(1_700_000_000), TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &h,
                BODY,
                &[b"whsec_other".as_slice()],
                at(1_700_000_000),
                TOLERANCE
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_tolerance_is_exact_either_way() {
        let h = header(SECRET, 1_700_000_000, BODY);
        for now in [1_700_000_300, 1_699_999_700] {
            assert!(
                verify(&h, BODY, &[SECRET], at(now), TOLERANCE).is_ok(),
                "{now}"
            );
        }
        for now in [1_700_000_301, 1_699_999_699] {
            assert_eq!(
                verify(&h, BODY, &[SECRET], at(now), TOLERANCE),
                Err(SignatureError::Stale),
                "{now}"
            );
        }
    }

    #[test]
    fn an_empty_secret_never_verifies_a_signature_made_with_it() {
        let h = header(b"", 1_700_000_000, BODY);
        assert_eq!(
            verify(&h, BODY, &[b"".as_slice()], at(1_700_000_000), TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_v1_under_any_of_the_shops_secrets_is_accepted_during_a_rotation() {
        let old = b"whsec_old".as_slice();
        let new = b"whsec_new".as_slice();
        let sig_new = header(new, 1_700_000_000, BODY);
        let v1_new = sig_new.split_once(",v1=").expect("v1").1;
        let h = format!(
            "{},v1={v1_new},v0=ignored",
            header(old, 1_700_000_000, BODY)
        );
        assert!(verify(&h, BODY, &[new], at(1_700_000_000), TOLERANCE).is_ok());
        assert!(verify(&h, BODY, &[old], at(1_700_000_000), TOLERANCE).is_ok());
        let only_new = header(new, 1_700_000_000, BODY);
        assert!(verify(&only_new, BODY, &[old, new], at(1_700_000_000), TOLERANCE).is_ok());
    }

    #[test]
    fn malformed_headers_are_refused_before_any_signature_is_computed() {
        for h in [
            "",
            "v1=00",
            "t=1700000000",
            "t=abc,v1=3b8f0a9fd6ee3a8e3e4f53e43a1a1bd0d4b2f0d47c2a02c7b0f1d07d1c13b6b5",
            "t=1,t=2,v1=3b8f0a9fd6ee3a8e3e4f53e43a1a1bd0d4b2f0d47c2a02c7b0f1d07d1c13b6b5",
            "t=1700000000,v1=zz8f0a9fd6ee3a8e3e4f53e43a1a1bd0d4b2f0d47c2a02c7b0f1d07d1c13b6b5",
            "t=1700000000,v1=3b8f",
            "t=+1700000000,v1=22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31",
        ] {
            assert_eq!(
                verify(h, BODY, &[SECRET], at(1_700_000_000), TOLERANCE),
                Err(SignatureError::Malformed),
                "{h}"
            );
        }
    }
}
