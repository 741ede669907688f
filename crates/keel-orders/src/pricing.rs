//! The one pricing calculation, shared by carts, checkout and the property tests.
//!
//! Rules (ADR 0011), all in integer minor units of the cart's currency:
//! 1. A line's subtotal is `unit price × quantity`.
//! 2. The order discount is a fixed amount (never more than the items' subtotal) or a
//!    percentage of the items' subtotal (rounded half to even); it is split over the lines by
//!    largest remainder in proportion to their subtotals, so no line's discount exceeds it.
//! 3. Shipping is the option's amount, or zero when the discounted items reach the option's
//!    free-shipping threshold.
//! 4. Tax is computed per line on its discounted amount, and on shipping when the rate says
//!    shipping is taxable, each rounded half to even at the minor unit. With tax-exclusive
//!    prices it is added; with tax-inclusive prices it is the part already inside the amount.
//! 5. `total = subtotal - discount + shipping + (tax when exclusive)`, exactly, always.

use serde::{Deserialize, Serialize};

use crate::exact::{ExactError, Percent, allocate};

/// One line to price: a unit price and a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInput {
    pub unit_price: i64,
    pub quantity: i64,
}

/// A discount on the whole order (items only, never shipping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discount {
    #[default]
    None,
    /// An exact amount off, in minor units.
    Fixed(i64),
    Percent(Percent),
}

/// A shipping charge: its amount and, optionally, the discounted items' total from which
/// shipping is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippingInput {
    pub amount: i64,
    pub free_over: Option<i64>,
}

/// Everything the calculation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingInput {
    pub lines: Vec<LineInput>,
    pub discount: Discount,
    pub shipping: Option<ShippingInput>,
    pub tax_rate: Percent,
    pub shipping_taxable: bool,
    pub tax_inclusive: bool,
}

/// One priced line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineAmounts {
    pub subtotal: i64,
    /// This line's share of the order discount.
    pub discount: i64,
    pub tax: i64,
    /// `subtotal - discount (+ tax when exclusive)`.
    pub total: i64,
}

/// The full breakdown of a cart or order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub lines: Vec<LineAmounts>,
    pub subtotal: i64,
    pub discount: i64,
    pub shipping: i64,
    pub shipping_tax: i64,
    /// All tax: the lines' and shipping's.
    pub tax: i64,
    pub tax_inclusive: bool,
    pub total: i64,
}

/// Why a price could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("amount out of range")]
    Overflow,
    #[error("negative price or quantity")]
    Negative,
}

impl From<ExactError> for PricingError {
    fn from(_: ExactError) -> Self {
        Self::Overflow
    }
}

fn add(a: i64, b: i64) -> Result<i64, PricingError> {
    a.checked_add(b).ok_or(PricingError::Overflow)
}

fn sub(a: i64, b: i64) -> Result<i64, PricingError> {
    a.checked_sub(b).ok_or(PricingError::Overflow)
}

/// Prices a cart or order (the rules are in the module documentation).
pub fn price(input: &PricingInput) -> Result<Breakdown, PricingError> {
    let mut subtotals = Vec::with_capacity(input.lines.len());
    for l in &input.lines {
        if l.unit_price < 0 || l.quantity < 0 {
            return Err(PricingError::Negative);
        }
        subtotals.push(
            l.unit_price
                .checked_mul(l.quantity)
                .ok_or(PricingError::Overflow)?,
        );
    }
    let subtotal = subtotals.iter().try_fold(0_i64, |acc, s| add(acc, *s))?;
    let discount = match input.discount {
        Discount::None => 0,
        Discount::Fixed(a) if a < 0 => return Err(PricingError::Negative),
        Discount::Fixed(a) => a.min(subtotal),
        Discount::Percent(p) => p.of(subtotal)?,
    };
    let line_discounts = allocate(discount, &subtotals)?;
    let merchandise = sub(subtotal, discount)?;
    let shipping = match input.shipping {
        None => 0,
        Some(s) if s.amount < 0 => return Err(PricingError::Negative),
        Some(s) if s.free_over.is_some_and(|t| merchandise >= t) => 0,
        Some(s) => s.amount,
    };
    let tax_of = |amount: i64| -> Result<i64, PricingError> {
        Ok(if input.tax_inclusive {
            input.tax_rate.included_in(amount)?
        } else {
            input.tax_rate.of(amount)?
        })
    };
    let mut lines = Vec::with_capacity(subtotals.len());
    let mut total = 0_i64;
    let mut tax = 0_i64;
    for (s, d) in subtotals.iter().zip(&line_discounts) {
        let net = sub(*s, *d)?;
        let line_tax = tax_of(net)?;
        let line_total = if input.tax_inclusive {
            net
        } else {
            add(net, line_tax)?
        };
        tax = add(tax, line_tax)?;
        total = add(total, line_total)?;
        lines.push(LineAmounts {
            subtotal: *s,
            discount: *d,
            tax: line_tax,
            total: line_total,
        });
    }
    let shipping_tax = if input.shipping_taxable {
        tax_of(shipping)?
    } else {
        0
    };
    tax = add(tax, shipping_tax)?;
    total = add(total, shipping)?;
    if !input.tax_inclusive {
        total = add(total, shipping_tax)?;
    }
    Ok(Breakdown {
        lines,
        subtotal,
        discount,
        shipping,
        shipping_tax,
        tax,
        tax_inclusive: input.tax_inclusive,
        total,
    })
}

impl Breakdown {
    /// The reconciliation identity every breakdown satisfies (checked, never assumed).
    pub fn reconciles(&self) -> bool {
        let exclusive_tax = if self.tax_inclusive { 0 } else { self.tax };
        let expected = self
            .subtotal
            .checked_sub(self.discount)
            .and_then(|v| v.checked_add(self.shipping))
            .and_then(|v| v.checked_add(exclusive_tax));
        let lines_total: Option<i64> = self
            .lines
            .iter()
            .try_fold(0_i64, |acc, l| acc.checked_add(l.total));
        let shipping_total = if self.tax_inclusive {
            Some(self.shipping)
        } else {
            self.shipping.checked_add(self.shipping_tax)
        };
        expected == Some(self.total)
            && lines_total
                .zip(shipping_total)
                .and_then(|(l, s)| l.checked_add(s))
                == Some(self.total)
            && self.lines.iter().map(|l| l.discount).sum::<i64>() == self.discount
            && self
                .lines
                .iter()
                .all(|l| l.discount <= l.subtotal && l.discount >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> Percent {
        Percent::parse(s).expect("rate")
    }

    #[test]
    fn a_new_york_cart_by_hand() {
        // 2 × 19.99 + 1 × 5.00 = 44.98; 10 % off = 4.498 → 4.50 (half to even at the cent:
        // 449.8 cents → 450); split 44.98 : 5.00 → 3.998 / 0.500 → 4.00 / 0.50.
        let b = price(&PricingInput {
            lines: vec![
                LineInput {
                    unit_price: 1999,
                    quantity: 2,
                },
                LineInput {
                    unit_price: 500,
                    quantity: 1,
                },
            ],
            discount: Discount::Percent(pct("10")),
            shipping: Some(ShippingInput {
                amount: 795,
                free_over: Some(10_000),
            }),
            tax_rate: pct("8.875"),
            shipping_taxable: true,
            tax_inclusive: false,
        })
        .expect("priced");
        assert_eq!(b.subtotal, 4498);
        assert_eq!(b.discount, 450);
        assert_eq!(b.lines[0].discount + b.lines[1].discount, 450);
        assert_eq!((b.lines[0].discount, b.lines[1].discount), (400, 50));
        // (3998 - 400) × 8.875 % = 319.3225 → 319; (500 - 50) × 8.875 % = 39.9375 → 40
        assert_eq!((b.lines[0].tax, b.lines[1].tax), (319, 40));
        // shipping 7.95 × 8.875 % = 70.55625 → 71
        assert_eq!((b.shipping, b.shipping_tax), (795, 71));
        assert_eq!(b.tax, 430);
        assert_eq!(b.total, 4498 - 450 + 795 + 430);
        assert!(b.reconciles());
    }

    #[test]
    fn free_shipping_and_inclusive_tax() {
        let b = price(&PricingInput {
            lines: vec![LineInput {
                unit_price: 2500,
                quantity: 4,
            }],
            discount: Discount::Fixed(20_000),
            shipping: Some(ShippingInput {
                amount: 800,
                free_over: Some(5000),
            }),
            tax_rate: pct("10"),
            shipping_taxable: true,
            tax_inclusive: true,
        })
        .expect("priced");
        assert_eq!(b.discount, 10_000, "never more than the items");
        assert_eq!(
            (b.shipping, b.tax, b.total),
            (800, 73, 800),
            "800 incl. 10 % holds 72.7 → 73"
        );
        assert!(b.reconciles());
    }
}
