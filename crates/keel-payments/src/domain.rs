//! Payment domain types. Amounts are integer minor units with their currency, compared
//! exactly: one minor unit off is a mismatch, never "close enough".

use keel_kernel::money::Currency;
use serde::{Deserialize, Serialize};

/// Who takes the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// A Stripe-compatible API (PaymentIntents, Refunds, signed webhooks).
    Stripe,
    /// Offline payments (cash on delivery, bank transfer), recorded by staff only.
    Manual,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Stripe, Self::Manual]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Whether the provider captures at authorisation or waits for staff to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    #[default]
    Automatic,
    Manual,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Automatic, Self::Manual]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// An exact amount: integer minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub minor: i64,
    pub currency: Currency,
}

/// What the provider reports about a payment, against what the order expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The exact amount in the exact currency: the order is paid.
    Exact,
    /// Anything else: not a payment of this order; staff must look (`payment.mismatch`).
    Mismatch { expected: Amount, reported: Amount },
}

/// Compares a reported payment with the order's outstanding amount, exactly.
pub fn settle(expected: Amount, reported: Amount) -> Settlement {
    if expected == reported {
        Settlement::Exact
    } else {
        Settlement::Mismatch { expected, reported }
    }
}

/// A payment session's state as the provider last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for the shopper (or for a capture).
    Open,
    /// The provider says the money is taken.
    Succeeded,
    /// The last attempt failed; the order stays payable.
    Failed,
    /// Cancelled before any money moved.
    Canceled,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Open, Self::Succeeded, Self::Failed, Self::Canceled]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// A final answer: reconciliation stops asking.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled)
    }
}

/// A provider's event, verified and read: what Keel acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id: the inbox stores each once.
    pub id: String,
    pub kind: EventKind,
}

/// The events Keel acts on; any other type is stored and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The money is taken: `amount` is what the provider took, compared exactly with the
    /// order's outstanding total before the order counts as paid.
    PaymentSucceeded {
        payment_id: String,
        amount: Amount,
        /// Keel's order and shop, as Keel gave them to the provider.
        order_reference: Option<String>,
        tenant_reference: Option<String>,
    },
    /// The last attempt failed; the order stays payable.
    PaymentFailed { payment_id: String },
    /// The provider refunded `amount_refunded` of the payment in all.
    Refunded {
        payment_id: String,
        amount_refunded: Amount,
    },
    /// Stored, not acted on.
    Other { event_type: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Amount {
        Amount {
            minor,
            currency: Currency::parse("USD").expect("USD"),
        }
    }

    #[test]
    fn only_the_exact_amount_in_the_exact_currency_settles_an_order() {
        assert_eq!(settle(usd(1999), usd(1999)), Settlement::Exact);
        for reported in [usd(1998), usd(2000)] {
            assert_eq!(
                settle(usd(1999), reported),
                Settlement::Mismatch {
                    expected: usd(1999),
                    reported
                }
            );
        }
        let eur = Amount {
            minor: 1999,
            currency: Currency::parse("EUR").expect("EUR"),
        };
        assert!(matches!(
            settle(usd(1999), eur),
            Settlement::Mismatch { .. }
        ));
    }

    #[test]
    fn provider_kinds_round_trip_by_name() {
        for k in [ProviderKind::Stripe, ProviderKind::Manual] {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("paypal"), None);
    }
}
