//! TOTP (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 6 digits, 30 s steps, a window of one step
//! either side, and each step accepted at most once per account (the caller stores the last
//! accepted step and passes it back).
//!
//! Also the 10 single-use backup codes: 60 random bits each, shown once, stored as SHA-256.

use std::fmt::{self, Write as _};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::secret::random_bytes;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted on either side of the current one (clock skew).
pub const SKEW_STEPS: i64 = 1;
/// Backup codes issued per enrolment.
pub const BACKUP_CODES: usize = 10;

/// A shared TOTP secret: 160 bits (the HMAC-SHA-1 block-friendly size RFC 4226 recommends).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret([u8; 20]);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// RFC 4648 base32 alphabet (what authenticator apps expect), no padding.
const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl TotpSecret {
    pub fn generate() -> Self {
        Self(random_bytes::<20>())
    }

    pub fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// RFC 4648 base32 (160 bits = exactly 32 characters, no padding).
    pub fn to_base32(&self) -> String {
        let mut out = String::with_capacity(32);
        for chunk in self.0.chunks(5) {
            let mut n: u64 = 0;
            for &b in chunk {
                n = (n << 8) | u64::from(b);
            }
            for i in (0..8).rev() {
                let idx = usize::try_from((n >> (i * 5)) & 0x1f).expect("5 bits fit");
                out.push(char::from(B32[idx]));
            }
        }
        out
    }

    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let issuer = percent_encode(issuer);
        format!(
            "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            percent_encode(account),
            self.to_base32()
        )
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// RFC 4226 HOTP value for `counter`, truncated to `digits` decimal digits.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226 §5.3).
    let offset = usize::from(digest[19] & 0x0f);
    let bin = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    bin % 10u32.pow(digits)
}

/// The step containing `unix_seconds`.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The code for `unix_seconds`, zero-padded.
pub fn code_at(secret: &TotpSecret, unix_seconds: i64) -> String {
    let step = u64::try_from(step_at(unix_seconds)).unwrap_or(0);
    format!(
        "{:0width$}",
        hotp(&secret.0, step, DIGITS),
        width = DIGITS as usize
    )
}

/// Checks `code` at `unix_seconds`. Returns the matched step, which the caller must store as
/// the account's last used step; steps at or before `last_used_step` are refused (replay).
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    unix_seconds: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_seconds);
    let mut matched = None;
    // Check every step in the window (no early exit) so timing does not reveal which matched.
    for step in (now - SKEW_STEPS)..=(now + SKEW_STEPS) {
        let Ok(counter) = u64::try_from(step) else {
            continue;
        };
        let expected = format!(
            "{:0width$}",
            hotp(&secret.0, counter, DIGITS),
            width = DIGITS as usize
        );
        let fresh = last_used_step.is_none_or(|last| step > last);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// A backup code as shown once: `xxxx-xxxx-xxxx` (60 random bits, lowercase Crockford base32).
pub fn generate_backup_codes() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..BACKUP_CODES)
        .map(|_| {
            let bytes = random_bytes::<8>();
            let n = u64::from_be_bytes(bytes) >> 4; // 60 bits
            let chars: String = (0..12)
                .rev()
                .map(|i| {
                    char::from(
                        ALPHABET[usize::try_from((n >> (i * 5)) & 0x1f).expect("5 bits fit")],
                    )
                })
                .collect();
            format!("{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12])
        })
        .collect()
}

/// The stored form of a backup code: SHA-256 of its canonical form (lowercase, no dashes or
/// spaces), so `ABCD EFGH JKMN` typed by a user matches `abcd-efgh-jkmn`.
pub fn hash_backup_code(code: &str) -> [u8; 32] {
    let canonical: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Sha256::digest(canonical.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits, key "12345678901234567890").
    #[test]
    fn rfc_6238_test_vectors() {
        let key = b"12345678901234567890";
        for (t, expected) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000_i64, 65_353_130),
        ] {
            let step = u64::try_from(step_at(t)).expect("positive");
            assert_eq!(hotp(key, step, 8), expected, "T = {t}");
        }
    }

    /// RFC 4226 Appendix D: HOTP values for counters 0..9.
    #[test]
    fn rfc_4226_test_vectors() {
        let key = b"12345678901234567890";
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(key, counter as u64, 6), *want, "counter {counter}");
        }
    }

    #[test]
    fn an_independent_implementation_agrees() {
        let secret = TotpSecret::generate();
        let other = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(*secret.as_bytes())
            .build()
            .expect("valid TOTP parameters");
        for t in [0_u64, 59, 1_700_000_000, 1_800_000_015] {
            let theirs = other.generate(t).to_string();
            assert_eq!(
                code_at(&secret, i64::try_from(t).expect("fits")),
                theirs,
                "t = {t}"
            );
        }
        let parsed = totp_rs::Secret::try_from_base32(secret.to_base32()).expect("valid base32");
        assert_eq!(parsed.as_ref(), secret.as_bytes().as_slice());
    }

    #[test]
    fn window_is_one_step_either_side_and_each_step_is_accepted_once() {
        let secret = TotpSecret::generate();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        let step = step_at(now);
        assert_eq!(verify(&secret, &code, now, None), Some(step));
        assert_eq!(
            verify(&secret, &code, now + 30, None),
            Some(step),
            "previous step accepted"
        );
        assert_eq!(
            verify(&secret, &code, now - 30, None),
            Some(step),
            "next step accepted"
        );
        assert_eq!(
            verify(&secret, &code, now + 60, None),
            None,
            "two steps away refused"
        );
        assert_eq!(
            verify(&secret, &code, now, Some(step)),
            None,
            "replay refused"
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now + 30), now + 30, Some(step)),
            Some(step + 1)
        );
        assert_eq!(verify(&secret, "12345", now, None), None);
        assert_eq!(verify(&secret, "abcdef", now, None), None);
    }

    #[test]
    fn otpauth_uri_carries_the_parameters() {
        let secret = TotpSecret::from_bytes([0u8; 20]);
        assert_eq!(secret.to_base32(), "A".repeat(32));
        assert_eq!(
            secret.otpauth_uri("Keel Acme", "alice@shop.test"),
            format!(
                "otpauth://totp/Keel%20Acme:alice%40shop.test?secret={}&issuer=Keel%20Acme&algorithm=SHA1&digits=6&period=30",
                "A".repeat(32)
            )
        );
    }

    #[test]
    fn backup_codes_are_ten_distinct_and_hash_canonically() {
        let codes = generate_backup_codes();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 14 && c.as_bytes()[4] == b'-')
        );
        let c = &codes[0];
        assert_eq!(
            hash_backup_code(c),
            hash_backup_code(&c.replace('-', " ").to_uppercase())
        );
        assert_ne!(hash_backup_code(c), hash_backup_code(&codes[1]));
    }
}
