//! What a provider's answer means for an order, decided here once (the webhook and the
//! reconciliation job both ask): pure functions over the order's standing and the exact
//! amounts, so every rule is a test.

use crate::domain::{Amount, Settlement, settle};

/// Where the order stands when the provider's answer arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStanding {
    /// Waiting for payment of exactly this much.
    Payable { outstanding: Amount },
    /// Paid already (by another payment).
    Paid,
    /// This very payment is recorded on the order already (a repeated or late answer).
    Recorded,
    /// Cancelled or expired: its stock is released and it will not ship.
    Closed,
}

/// What to do when the provider says a payment succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSucceeded {
    /// The exact amount: the order is paid (`order.paid`).
    MarkPaid,
    /// Not this order's amount or currency: never a payment of it; staff decide
    /// (`payment.mismatch`), the order stays payable and the money stays where it is.
    Mismatch { expected: Amount, reported: Amount },
    /// Money taken for an order that will not ship (closed meanwhile, or paid by another
    /// payment): give it back through the provider, all of it (`payment.compensated`).
    Refund { amount: Amount },
    /// Already recorded: nothing changes, no event.
    AlreadyApplied,
}

/// Decides on a succeeded payment of `reported`.
pub fn on_succeeded(order: OrderStanding, reported: Amount) -> OnSucceeded {
    match order {
        OrderStanding::Payable { outstanding } => match settle(outstanding, reported) {
            Settlement::Exact => OnSucceeded::MarkPaid,
            Settlement::Mismatch { expected, reported } => {
                OnSucceeded::Mismatch { expected, reported }
            }
        },
        OrderStanding::Paid | OrderStanding::Closed => OnSucceeded::Refund { amount: reported },
        OrderStanding::Recorded => OnSucceeded::AlreadyApplied,
    }
}

/// Why a refund is refused before the provider is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefused {
    #[error("a refund is a positive amount")]
    NotPositive,
    #[error("the refund is in another currency than the payment")]
    OtherCurrency,
    #[error("the refund would exceed what was captured: {refundable} left")]
    AboveCaptured { refundable: i64 },
}

/// Checks a refund of `asked` against a payment that captured `captured` and has refunded
/// `refunded` so far: never past what was captured, to the minor unit. (The store checks it
/// again under the payment's lock, so concurrent refunds cannot pass together.)
pub fn check_refund(captured: Amount, refunded: i64, asked: Amount) -> Result<(), RefundRefused> {
    if asked.minor <= 0 || refunded < 0 {
        return Err(RefundRefused::NotPositive);
    }
    if asked.currency != captured.currency {
        return Err(RefundRefused::OtherCurrency);
    }
    let refundable = captured.minor.saturating_sub(refunded).max(0);
    if asked.minor > refundable {
        return Err(RefundRefused::AboveCaptured { refundable });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_kernel::money::Currency;

    use super::*;

    fn usd(minor: i64) -> Amount {
        Amount {
            minor,
            currency: Currency::parse("USD").expect("USD"),
        }
    }

    #[test]
    fn the_exact_outstanding_amount_pays_the_order() {
        let payable = OrderStanding::Payable {
            outstanding: usd(4200),
        };
        assert_eq!(on_succeeded(payable, usd(4200)), OnSucceeded::MarkPaid);
    }

    #[test]
    fn one_minor_unit_off_is_a_mismatch_for_staff_not_a_payment() {
        let payable = OrderStanding::Payable {
            outstanding: usd(4200),
        };
        for reported in [usd(4199), usd(4201)] {
            assert_eq!(
                on_succeeded(payable, reported),
                OnSucceeded::Mismatch {
                    expected: usd(4200),
                    reported
                }
            );
        }
    }

    #[test]
    fn money_taken_for_an_order_that_will_not_ship_is_refunded_whole() {
        for standing in [OrderStanding::Closed, OrderStanding::Paid] {
            assert_eq!(
                on_succeeded(standing, usd(4200)),
                OnSucceeded::Refund { amount: usd(4200) }
            );
        }
    }

    #[test]
    fn a_payment_already_recorded_is_never_refunded_or_paid_twice() {
        assert_eq!(
            on_succeeded(OrderStanding::Recorded, usd(4200)),
            OnSucceeded::AlreadyApplied
        );
    }

    #[test]
    fn refunds_add_up_to_the_captured_amount_and_not_one_minor_unit_more() {
        let captured = usd(1999);
        assert_eq!(check_refund(captured, 0, usd(1000)), Ok(()));
        assert_eq!(check_refund(captured, 1000, usd(999)), Ok(()));
        assert_eq!(
            check_refund(captured, 1999, usd(1)),
            Err(RefundRefused::AboveCaptured { refundable: 0 })
        );
        assert_eq!(
            check_refund(captured, 1000, usd(1000)),
            Err(RefundRefused::AboveCaptured { refundable: 999 })
        );
    }

    #[test]
    fn a_refund_is_positive_and_in_the_payments_currency() {
        let captured = usd(1999);
        assert_eq!(
            check_refund(captured, 0, usd(0)),
            Err(RefundRefused::NotPositive)
        );
        assert_eq!(
            check_refund(captured, 0, usd(-5)),
            Err(RefundRefused::NotPositive)
        );
        let eur = Amount {
            minor: 5,
            currency: Currency::parse("EUR").expect("EUR"),
        };
        assert_eq!(
            check_refund(captured, 0, eur),
            Err(RefundRefused::OtherCurrency)
        );
    }
}
