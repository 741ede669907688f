//! Exact money: integer minor units plus an ISO 4217 currency.
//!
//! `Money { minor: 1999, currency: USD }` is $19.99. There is no floating point anywhere in
//! this module (docs/architecture.md, "Exact values"): arithmetic is checked `i64`, mixing currencies is an error, and
//! overflow is an error, never a wrap. On the wire money is `{"amount": 1999, "currency": "USD"}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency that Keel accepts, with its minor-unit exponent
/// (JPY 0, USD 2, KWD 3, CLF 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// Active ISO 4217 currencies with a defined minor unit (the list of 2026; withdrawn codes
/// such as HRK, SLL, BGN and ANG and the precious-metal/testing codes are not accepted).
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an active ISO 4217 currency code")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// Every code [`Currency::parse`] accepts, in alphabetical order.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    /// Parses an upper-case ISO 4217 alphabetic code. Lower case is refused rather than
    /// guessed, so the stored form is always canonical.
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, exponent)| Self { code, exponent })
            .ok_or_else(|| UnknownCurrency(code.chars().take(8).collect()))
    }

    /// The three-letter code, e.g. `"USD"`.
    pub const fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point in the major unit: USD 2, JPY 0, KWD 3.
    pub const fn exponent(self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a money calculation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range")]
    Overflow,
}

/// An exact amount: integer minor units of one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(rename = "amount")]
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` units of `currency`: `Money::new(1999, usd)` is $19.99.
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub const fn currency(self) -> Currency {
        self.currency
    }

    /// True when the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.minor < 0
    }

    fn same_currency(self, rhs: Self) -> Result<(), MoneyError> {
        if self.currency == rhs.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: rhs.currency,
            })
        }
    }

    /// `self + rhs`; errors on mixed currencies or overflow.
    pub fn checked_add(self, rhs: Self) -> Result<Self, MoneyError> {
        self.same_currency(rhs)?;
        let minor = self
            .minor
            .checked_add(rhs.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    /// `self - rhs`; errors on mixed currencies or overflow.
    pub fn checked_sub(self, rhs: Self) -> Result<Self, MoneyError> {
        self.same_currency(rhs)?;
        let minor = self
            .minor
            .checked_sub(rhs.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    /// `self × quantity` (a unit price times a line quantity); errors on overflow.
    pub fn checked_mul(self, quantity: i64) -> Result<Self, MoneyError> {
        let minor = self
            .minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    /// `-self`; errors on overflow (`i64::MIN` has no negation).
    pub fn checked_neg(self) -> Result<Self, MoneyError> {
        let minor = self.minor.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    /// Sums amounts that must all be in `currency`; an empty sum is zero.
    pub fn checked_sum(
        currency: Currency,
        items: impl IntoIterator<Item = Self>,
    ) -> Result<Self, MoneyError> {
        items
            .into_iter()
            .try_fold(Self::zero(currency), Self::checked_add)
    }
}

/// `19.99 USD`, `500 JPY`, `-0.050 KWD`: exact, from integers only.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        let exp = u32::from(self.currency.exponent);
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        let width = usize::from(self.currency.exponent);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency
        )
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD is active")
    }
    fn eur() -> Currency {
        Currency::parse("EUR").expect("EUR is active")
    }

    #[test]
    fn currencies_know_their_exponents() {
        for (code, exp) in [("JPY", 0), ("USD", 2), ("KWD", 3), ("CLF", 4), ("EUR", 2)] {
            assert_eq!(Currency::parse(code).expect(code).exponent(), exp, "{code}");
        }
    }

    #[test]
    fn unknown_lowercase_and_withdrawn_codes_are_refused() {
        for code in ["usd", "XXX", "HRK", "US", "USDD", "", "XAU"] {
            assert!(Currency::parse(code).is_err(), "{code} should be refused");
        }
    }

    #[test]
    fn currency_table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn displays_exactly_from_minor_units() {
        let jpy = Currency::parse("JPY").expect("JPY");
        let kwd = Currency::parse("KWD").expect("KWD");
        assert_eq!(Money::new(1999, usd()).to_string(), "19.99 USD");
        assert_eq!(Money::new(5, usd()).to_string(), "0.05 USD");
        assert_eq!(Money::new(-5, usd()).to_string(), "-0.05 USD");
        assert_eq!(Money::new(500, jpy).to_string(), "500 JPY");
        assert_eq!(Money::new(-50, kwd).to_string(), "-0.050 KWD");
        assert_eq!(
            Money::new(i64::MIN, usd()).to_string(),
            "-92233720368547758.08 USD"
        );
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let err = Money::new(1, usd()).checked_add(Money::new(1, eur()));
        assert_eq!(
            err,
            Err(MoneyError::CurrencyMismatch {
                left: usd(),
                right: eur()
            })
        );
        assert!(
            Money::new(1, usd())
                .checked_sub(Money::new(1, eur()))
                .is_err()
        );
        assert!(Money::checked_sum(usd(), [Money::new(1, usd()), Money::new(1, eur())]).is_err());
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let max = Money::new(i64::MAX, usd());
        assert_eq!(
            max.checked_add(Money::new(1, usd())),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, usd()).checked_neg(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
    }

    #[test]
    fn wire_form_is_amount_and_currency() {
        let json = serde_json::to_value(Money::new(1999, usd())).expect("serialize");
        assert_eq!(json, serde_json::json!({"amount": 1999, "currency": "USD"}));
        let back: Money = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, Money::new(1999, usd()));
        assert!(serde_json::from_str::<Money>(r#"{"amount": 19.99, "currency": "USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "ABC"}"#).is_err());
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(CURRENCIES).prop_map(|(c, _)| Currency::parse(c).expect("listed"))
    }

    proptest! {
        #[test]
        fn add_matches_wide_integer_arithmetic(a in any::<i64>(), b in any::<i64>(), c in currency()) {
            let wide = i128::from(a) + i128::from(b);
            let got = Money::new(a, c).checked_add(Money::new(b, c));
            if let Ok(v) = i64::try_from(wide) { prop_assert_eq!(got, Ok(Money::new(v, c))) } else { prop_assert_eq!(got, Err(MoneyError::Overflow)) }
        }

        #[test]
        fn sub_matches_wide_integer_arithmetic(a in any::<i64>(), b in any::<i64>(), c in currency()) {
            let wide = i128::from(a) - i128::from(b);
            let got = Money::new(a, c).checked_sub(Money::new(b, c));
            if let Ok(v) = i64::try_from(wide) { prop_assert_eq!(got, Ok(Money::new(v, c))) } else { prop_assert_eq!(got, Err(MoneyError::Overflow)) }
        }

        #[test]
        fn mul_matches_wide_integer_arithmetic(a in any::<i64>(), q in -1_000_000i64..1_000_000, c in currency()) {
            let wide = i128::from(a) * i128::from(q);
            let got = Money::new(a, c).checked_mul(q);
            if let Ok(v) = i64::try_from(wide) { prop_assert_eq!(got, Ok(Money::new(v, c))) } else { prop_assert_eq!(got, Err(MoneyError::Overflow)) }
        }

        #[test]
        fn add_is_commutative_and_sub_undoes_it(a in -(1i64 << 60)..(1i64 << 60), b in -(1i64 << 60)..(1i64 << 60)) {
            let (x, y) = (Money::new(a, usd()), Money::new(b, usd()));
            let sum = x.checked_add(y).expect("in range");
            prop_assert_eq!(Ok(sum), y.checked_add(x));
            prop_assert_eq!(sum.checked_sub(y), Ok(x));
        }

        #[test]
        fn sum_equals_fold_of_adds(xs in prop::collection::vec(-(1i64 << 40)..(1i64 << 40), 0..50)) {
            let total: i64 = xs.iter().sum();
            let got = Money::checked_sum(usd(), xs.iter().map(|&m| Money::new(m, usd())));
            prop_assert_eq!(got, Ok(Money::new(total, usd())));
        }

        #[test]
        fn display_round_trips_through_integer_parsing(a in any::<i64>(), c in currency()) {
            let s = Money::new(a, c).to_string();
            let number = s.split(' ').next().expect("amount part");
            let digits: String = number.chars().filter(|ch| *ch != '.').collect();
            prop_assert_eq!(digits.parse::<i128>().expect("digits"), i128::from(a));
            let frac_len = number.split('.').nth(1).map_or(0, str::len);
            prop_assert_eq!(frac_len, usize::from(c.exponent()));
        }
    }
}
