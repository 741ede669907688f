//! Exact arithmetic for money (docs/architecture.md, "Exact values"): decimal percentages held as integers, one
//! rounding rule, and largest-remainder allocation. Everything is integer and checked; an
//! overflow is an error, never a wrap.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an exact calculation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExactError {
    #[error("amount out of range")]
    Overflow,
}

/// Millionths of a percent per percent: `"8.875"` is 8 875 000.
const SCALE: i128 = 1_000_000;
/// 100 %, in millionths of a percent.
const HUNDRED: i128 = 100 * SCALE;

/// A percentage from 0 to 100 with at most six decimals, held exactly as millionths of a
/// percent (`"8.875"` = 8 875 000). Parsed from and written as a decimal string, never a float.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Percent(i64);

/// Why a percentage was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a decimal string from \"0\" to \"100\" with at most 6 decimals, e.g. \"8.875\"")]
pub struct PercentError;

impl Percent {
    pub const ZERO: Self = Self(0);

    /// Parses `"8.875"`, `"19"`, `"0.5"`: digits, optionally one `.` and 1 to 6 digits.
    pub fn parse(s: &str) -> Result<Self, PercentError> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 3
            || !digits(whole)
            || frac.len() > 6
            || !digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(PercentError);
        }
        let whole: i64 = whole.parse().map_err(|_| PercentError)?;
        let mut frac_units: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            let exp = u32::try_from(5 - i).map_err(|_| PercentError)?;
            frac_units += i64::from(b - b'0') * 10_i64.pow(exp);
        }
        let v = whole * 1_000_000 + frac_units;
        if v > 100_000_000 {
            return Err(PercentError);
        }
        Ok(Self(v))
    }

    /// Millionths of a percent.
    pub const fn millionths(self) -> i64 {
        self.0
    }

    /// From storage (millionths of a percent), checked against 0..=100 %.
    pub fn from_millionths(v: i64) -> Result<Self, PercentError> {
        if (0..=100_000_000).contains(&v) {
            Ok(Self(v))
        } else {
            Err(PercentError)
        }
    }

    /// `amount × self`, rounded half to even at the minor unit.
    pub fn of(self, amount: i64) -> Result<i64, ExactError> {
        let n = i128::from(amount)
            .checked_mul(i128::from(self.0))
            .ok_or(ExactError::Overflow)?;
        narrow(div_round_half_even(n, HUNDRED))
    }

    /// The tax included in a tax-inclusive `gross` at this rate: `gross × r / (1 + r)`,
    /// rounded half to even at the minor unit.
    pub fn included_in(self, gross: i64) -> Result<i64, ExactError> {
        let n = i128::from(gross)
            .checked_mul(i128::from(self.0))
            .ok_or(ExactError::Overflow)?;
        narrow(div_round_half_even(n, HUNDRED + i128::from(self.0)))
    }
}

/// The canonical decimal form: `"8.875"`, `"19"`, `"0.5"`.
impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Percent({self})")
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn narrow(v: i128) -> Result<i64, ExactError> {
    i64::try_from(v).map_err(|_| ExactError::Overflow)
}

/// `n / d` rounded to the nearest integer, ties to the even neighbour (banker's rounding).
/// `d` must be positive.
pub fn div_round_half_even(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0, "positive divisor");
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    // Compare 2r with d without overflow: r < d, so 2r fits when d fits in half the range,
    // which every divisor here does (at most 2 × 10^8).
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

/// Splits `total` over `weights` in proportion, exactly: each share is the floor of its exact
/// proportion, and the units left over go one each to the largest fractional remainders (ties
/// to the earlier weight). The shares sum to `total`; when `0 <= total <= sum(weights)` and
/// every weight is non-negative, no share exceeds its weight. All-zero weights take nothing
/// (then `total` must be zero).
pub fn allocate(total: i64, weights: &[i64]) -> Result<Vec<i64>, ExactError> {
    let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if sum == 0 {
        return if total == 0 {
            Ok(vec![0; weights.len()])
        } else {
            Err(ExactError::Overflow)
        };
    }
    let total = i128::from(total);
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let n = total
            .checked_mul(i128::from(*w))
            .ok_or(ExactError::Overflow)?;
        shares.push(n.div_euclid(sum));
        remainders.push((n.rem_euclid(sum), i));
    }
    let allocated: i128 = shares.iter().sum();
    let left = usize::try_from(total - allocated).map_err(|_| ExactError::Overflow)?;
    // Largest remainder first; ties to the earlier index.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(left) {
        shares[i] += 1;
    }
    shares.into_iter().map(narrow).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly_and_print_canonically() {
        for (s, m, back) in [
            ("8.875", 8_875_000, "8.875"),
            ("19", 19_000_000, "19"),
            ("0.5", 500_000, "0.5"),
            ("100", 100_000_000, "100"),
            ("0", 0, "0"),
            ("7.250000", 7_250_000, "7.25"),
            ("0.000001", 1, "0.000001"),
        ] {
            let p = Percent::parse(s).expect(s);
            assert_eq!(p.millionths(), m, "{s}");
            assert_eq!(p.to_string(), back);
        }
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "100.000001",
            "1e2",
            "8,875",
            "0.0000001",
            "abc",
            "1000",
        ] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        for (n, d, q) in [
            (5, 2, 2),
            (7, 2, 4),
            (-5, 2, -2),
            (-7, 2, -4),
            (1, 3, 0),
            (2, 3, 1),
            (0, 7, 0),
        ] {
            assert_eq!(div_round_half_even(n, d), q, "{n}/{d}");
        }
    }

    #[test]
    fn tax_of_known_amounts() {
        let ny = Percent::parse("8.875").expect("rate");
        // 19.99 × 8.875 % = 1.7741125 → 1.77
        assert_eq!(ny.of(1999), Ok(177));
        // 40 × 8.875 % = 3.55 exactly
        assert_eq!(
            ny.of(40),
            Ok(4),
            "3.55 rounds half to even at the minor unit → 4"
        );
        assert_eq!(
            Percent::parse("10").expect("r").of(25),
            Ok(2),
            "2.5 → 2 (even)"
        );
        assert_eq!(
            Percent::parse("10").expect("r").of(35),
            Ok(4),
            "3.5 → 4 (even)"
        );
        assert_eq!(ny.of(0), Ok(0), "tax on zero is zero");
        // 2500 JPY incl. 10 %: 2500 × 10 / 110 = 227.27 → 227
        assert_eq!(Percent::parse("10").expect("r").included_in(2500), Ok(227));
        assert_eq!(Percent::parse("100").expect("r").of(i64::MAX), Ok(i64::MAX));
    }

    #[test]
    fn allocation_is_exact_and_bounded() {
        assert_eq!(allocate(100, &[1, 1, 1]), Ok(vec![34, 33, 33]));
        assert_eq!(allocate(10, &[500, 300, 200]), Ok(vec![5, 3, 2]));
        assert_eq!(allocate(0, &[0, 0]), Ok(vec![0, 0]));
        assert!(allocate(1, &[0, 0]).is_err());
        assert_eq!(allocate(7, &[7, 0]), Ok(vec![7, 0]));
        let shares = allocate(999, &[1, 2, 3, 1000]).expect("allocate");
        assert_eq!(shares.iter().sum::<i64>(), 999);
        assert!(shares.iter().zip([1, 2, 3, 1000]).all(|(s, w)| *s <= w));
    }
}
