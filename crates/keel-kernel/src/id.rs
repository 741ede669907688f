//! Typed, prefixed ids over UUIDv7.
//!
//! On the wire an id reads `ten_06f3pk1r6j8b4d5qk8ay3hqm2c`: a fixed prefix naming the
//! resource, then the 128-bit UUID in lowercase Crockford base32 (26 characters). UUIDv7
//! starts with a millisecond timestamp, so ids sort by creation time, which keyset pagination
//! relies on. The prefix stops an order id from being accepted where a tenant id is expected;
//! the storage form (a plain UUID) stays inside the adapters.

use uuid::Uuid;

/// Crockford's base32 alphabet (no i, l, o, u), lowercase.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// 128 bits in 5-bit groups: 26 characters, the first carrying only 3 bits.
const ENCODED_LEN: usize = 26;

/// Why a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix { expected: &'static str },
    #[error("the id body must be {ENCODED_LEN} base32 characters")]
    Malformed,
}

/// Each byte's 5-bit value in [`ALPHABET`] (either case), or [`INVALID`]. Ids are decoded
/// on every request and every stored row; a table keeps that one load per character.
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut v = 0;
    while v < ALPHABET.len() {
        let c = ALPHABET[v];
        // `v < 32`, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let value = v as u8;
        table[c as usize] = value;
        table[c.to_ascii_uppercase() as usize] = value;
        v += 1;
    }
    table
};
const INVALID: u8 = 0xff;

/// 128 bits as 26 Crockford base32 characters (ASCII bytes).
fn encoded(uuid: Uuid) -> [u8; ENCODED_LEN] {
    let mut n = uuid.as_u128();
    let mut out = [0u8; ENCODED_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(n & 0x1f).expect("5 bits fit in usize")];
        n >>= 5;
    }
    out
}

/// The encoded characters as text; the alphabet is ASCII, so they always are.
fn as_text(out: &[u8; ENCODED_LEN]) -> &str {
    std::str::from_utf8(out).expect("the alphabet is ASCII")
}

/// Encodes 128 bits as 26 Crockford base32 characters.
pub fn encode_base32(uuid: Uuid) -> String {
    as_text(&encoded(uuid)).to_owned()
}

/// Writes `prefix_` and the 26 characters without building a `String` first: every id in
/// every response body goes through here.
pub fn write_prefixed(
    f: &mut std::fmt::Formatter<'_>,
    prefix: &str,
    uuid: Uuid,
) -> std::fmt::Result {
    f.write_str(prefix)?;
    f.write_str("_")?;
    f.write_str(as_text(&encoded(uuid)))
}

/// Decodes exactly 26 Crockford base32 characters (case-insensitive) into 128 bits.
pub fn decode_base32(s: &str) -> Result<Uuid, IdError> {
    if s.len() != ENCODED_LEN {
        return Err(IdError::Malformed);
    }
    let mut n: u128 = 0;
    for (i, c) in s.bytes().enumerate() {
        let v = DECODE[usize::from(c)];
        // The first character carries the top 3 bits only; anything larger would overflow.
        if v == INVALID || (i == 0 && v > 7) {
            return Err(IdError::Malformed);
        }
        n = (n << 5) | u128::from(v);
    }
    Ok(Uuid::from_u128(n))
}

/// Defines a typed id with a wire prefix. The type wraps a [`Uuid`]; `new()` makes a UUIDv7.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// The wire prefix, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id (UUIDv7).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Rebuilds an id from its storage form. Adapters only.
            pub const fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The storage form. Adapters only.
            pub const fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::id::write_prefixed(f, $prefix, self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let body = s
                    .strip_prefix($prefix)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .ok_or($crate::id::IdError::WrongPrefix { expected: $prefix })?;
                $crate::id::decode_base32(body).map(Self)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A merchant: the unit of isolation. Every row of every context carries one.
    TenantId,
    "ten"
);

define_id!(
    /// A customer of one tenant. Here rather than in identity, which owns customers, because
    /// carts and orders name their customer without depending on the identity context.
    CustomerId,
    "cus"
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    define_id!(OrderIdForTest, "ord");

    #[test]
    fn displays_with_prefix_and_26_base32_chars() {
        let id = TenantId::new();
        let s = id.to_string();
        assert!(s.starts_with("ten_"));
        assert_eq!(s.len(), 4 + ENCODED_LEN);
        assert_eq!(s.parse::<TenantId>(), Ok(id));
    }

    #[test]
    fn rejects_another_kind_of_id() {
        let raw = Uuid::now_v7();
        assert_eq!(OrderIdForTest::from_uuid(raw).as_uuid(), raw);
        assert_eq!(OrderIdForTest::PREFIX, "ord");
        let order = OrderIdForTest::new().to_string();
        assert_eq!(
            order.parse::<TenantId>(),
            Err(IdError::WrongPrefix { expected: "ten" })
        );
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in [
            "ten_",
            "ten_abc",
            "ten_8zzzzzzzzzzzzzzzzzzzzzzzzz",
            "ten_0000000000000000000000000u",
            "ten0000000000000000000000000000",
        ] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn later_ids_sort_after_earlier_ones_in_storage_and_wire_form() {
        let a = TenantId::new();
        let b = TenantId::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn serde_uses_the_wire_form() {
        let id = TenantId::new();
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(
            serde_json::from_str::<TenantId>(&json).expect("deserialize"),
            id
        );
        assert!(serde_json::from_str::<TenantId>("\"evt_0000000000000000000000000\"").is_err());
    }

    proptest! {
        #[test]
        fn base32_round_trips_every_uuid(n in any::<u128>()) {
            let u = Uuid::from_u128(n);
            prop_assert_eq!(decode_base32(&encode_base32(u)), Ok(u));
            prop_assert_eq!(decode_base32(&encode_base32(u).to_ascii_uppercase()), Ok(u));
            let id = TenantId::from_uuid(u);
            prop_assert_eq!(id.to_string(), format!("ten_{}", encode_base32(u)));
        }

        /// The table decodes exactly what a search of the alphabet (either case) accepts:
        /// Crockford's i, l, o and u, punctuation and non-ASCII bytes are refused.
        #[test]
        fn decoding_agrees_with_a_search_of_the_alphabet(s in "[0-9a-zA-Z_\\-é ]{26}") {
            let expected: Option<u128> = s.bytes().enumerate().try_fold(0u128, |n, (i, c)| {
                let v = ALPHABET.iter().position(|&a| a == c.to_ascii_lowercase())?;
                (i > 0 || v <= 7).then(|| (n << 5) | u128::try_from(v).expect("below 32"))
            });
            let expected = if s.len() == ENCODED_LEN { expected } else { None };
            prop_assert_eq!(decode_base32(&s).ok(), expected.map(Uuid::from_u128));
        }
    }
}
