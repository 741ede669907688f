//! Exact money on the wire: `MinorUnits` is an integer number of the currency's minor units,
//! sent as a JSON integer while it is exactly representable in a double (|n| < 2^53) and as a
//! string otherwise; accepted as an integer or a string of digits, never as a float.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value};

/// The largest magnitude a JSON number carries exactly in every client (2^53 - 1).
const EXACT_IN_DOUBLE: i64 = 9_007_199_254_740_991;

/// An amount in minor units (cents, yen): an integer, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinorUnits(pub i64);

#[Scalar(name = "MinorUnits")]
impl ScalarType for MinorUnits {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n
                .as_i64()
                .filter(|_| n.is_i64() || n.is_u64())
                .map(Self)
                .ok_or_else(|| {
                    InputValueError::custom(
                        "an amount is a whole number of minor units, never a fraction",
                    )
                }),
            Value::String(s) => {
                let digits = s.strip_prefix('-').unwrap_or(s);
                if digits.is_empty()
                    || digits.len() > 19
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(InputValueError::custom(
                        "an amount string is an integer such as \"1999\"",
                    ));
                }
                s.parse()
                    .map(Self)
                    .map_err(|_| InputValueError::custom("the amount is out of range"))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        if self.0.abs() <= EXACT_IN_DOUBLE {
            Value::Number(self.0.into())
        } else {
            Value::String(self.0.to_string())
        }
    }
}

/// An exact amount of money.
#[derive(Debug, Clone, SimpleObject)]
pub struct Money {
    #[graphql(complexity = 0)]
    pub amount: MinorUnits,
    /// ISO 4217, upper case: `USD`, `JPY`.
    #[graphql(complexity = 0)]
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: &str) -> Self {
        Self {
            amount: MinorUnits(amount),
            currency: currency.to_owned(),
        }
    }
}

impl From<keel_kernel::money::Money> for Money {
    fn from(m: keel_kernel::money::Money) -> Self {
        Self::new(m.minor(), m.currency().code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_integers_on_the_wire_and_strings_past_two_to_the_53() {
        assert_eq!(MinorUnits(1999).to_value(), Value::Number(1999.into()));
        assert_eq!(
            MinorUnits(EXACT_IN_DOUBLE + 1).to_value(),
            Value::String("9007199254740992".into())
        );
        assert_eq!(
            MinorUnits::parse(Value::String("9007199254740993".into())).ok(),
            Some(MinorUnits(9_007_199_254_740_993))
        );
        assert_eq!(
            MinorUnits::parse(Value::Number(42.into())).ok(),
            Some(MinorUnits(42))
        );
    }

    #[test]
    fn fractions_and_garbage_are_refused() {
        let float = Value::from_json(serde_json::json!(19.99)).expect("value");
        assert!(MinorUnits::parse(float).is_err());
        for s in ["19.99", "1e3", "", "-", "12a"] {
            assert!(MinorUnits::parse(Value::String(s.into())).is_err(), "{s}");
        }
    }
}
