//! Amounts in Stripe's units. Stripe's "smallest unit" is not always ISO 4217's minor unit:
//! it counts some currencies in other units than ISO does (ISK in hundredths though ISO has
//! none, MGA in whole ariary though ISO has two decimals), and asks three-decimal amounts to
//! end in 0 (https://docs.stripe.com/currencies, "Zero-decimal currencies", "Three-decimal
//! currencies", "Special cases"). An amount is converted only when the conversion is exact;
//! any other is refused before a request is made, never rounded.

use keel_kernel::money::Currency;

/// Counted in whole units by Stripe.
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// Counted in thousandths, the last digit 0.
const THREE_DECIMAL: &[&str] = &["BHD", "JOD", "KWD", "OMR", "TND"];

/// Stripe's exponent for `currency` (every other currency, ISK included, counts hundredths).
fn exponent(currency: Currency) -> u32 {
    if ZERO_DECIMAL.contains(&currency.code()) {
        0
    } else if THREE_DECIMAL.contains(&currency.code()) {
        3
    } else {
        2
    }
}

/// Keel's minor units as Stripe's amount, if exact (and, for three-decimal currencies, a
/// multiple of ten).
pub fn to_stripe(minor: i64, currency: Currency) -> Option<i64> {
    let ours = u32::from(currency.exponent());
    let theirs = exponent(currency);
    let amount = if theirs >= ours {
        minor.checked_mul(10_i64.checked_pow(theirs - ours)?)?
    } else {
        let step = 10_i64.checked_pow(ours - theirs)?;
        if minor % step != 0 {
            return None;
        }
        minor / step
    };
    if theirs == 3 && amount % 10 != 0 {
        return None;
    }
    Some(amount)
}

/// Stripe's amount as Keel's minor units, if exact.
pub fn from_stripe(amount: i64, currency: Currency) -> Option<i64> {
    let ours = u32::from(currency.exponent());
    let theirs = exponent(currency);
    if ours >= theirs {
        amount.checked_mul(10_i64.checked_pow(ours - theirs)?)
    } else {
        let step = 10_i64.checked_pow(theirs - ours)?;
        (amount % step == 0).then_some(amount / step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).expect("currency")
    }

    #[test]
    fn two_decimal_and_zero_decimal_currencies_pass_unchanged() {
        assert_eq!(to_stripe(1999, c("USD")), Some(1999));
        assert_eq!(to_stripe(500, c("JPY")), Some(500));
        assert_eq!(from_stripe(500, c("JPY")), Some(500));
    }

    #[test]
    fn isk_is_counted_in_hundredths_at_stripe() {
        // 5,000 kr: ISO has no decimals, Stripe counts hundredths.
        assert_eq!(to_stripe(5000, c("ISK")), Some(500_000));
        assert_eq!(from_stripe(500_000, c("ISK")), Some(5000));
        assert_eq!(from_stripe(500_050, c("ISK")), None, "no fractional krona");
    }

    #[test]
    fn mga_is_whole_ariary_at_stripe_and_a_fraction_is_refused() {
        assert_eq!(to_stripe(12_300, c("MGA")), Some(123));
        assert_eq!(to_stripe(12_345, c("MGA")), None);
        assert_eq!(from_stripe(123, c("MGA")), Some(12_300));
    }

    #[test]
    fn three_decimal_amounts_must_end_in_zero() {
        assert_eq!(to_stripe(5120, c("KWD")), Some(5120));
        assert_eq!(to_stripe(5124, c("KWD")), None);
        assert_eq!(from_stripe(5120, c("KWD")), Some(5120));
    }
}
