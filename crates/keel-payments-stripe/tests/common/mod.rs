//! What the adapter's tests share: a localstripe server (PyPI, a stateful Stripe API
//! simulator written by others, installed by `scripts/test`) on a free loopback port.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::time::Duration;

use keel_kernel::money::Currency;
use keel_payments::{
    domain::{Amount, CaptureMode},
    ports::NewPayment,
};
use keel_payments_stripe::StripeProvider;
use keel_resilience::{Dependency, Policy};

#[allow(unused_imports, reason = "each test binary uses part of it")]
pub use keel_faults::localstripe::{SECRET, start};

pub fn usd(minor: i64) -> Amount {
    Amount {
        minor,
        currency: Currency::parse("USD").expect("USD"),
    }
}

pub fn provider(base: &str) -> StripeProvider {
    provider_with(base, Policy::default())
}

pub fn provider_with(base: &str, policy: Policy) -> StripeProvider {
    StripeProvider::new(
        base,
        Duration::from_secs(2),
        Dependency::new("stripe", policy),
    )
    .expect("provider")
}

/// A payment of an order in USD, with Keel's key for it.
pub fn order_payment(idempotency_key: &str, minor: i64) -> NewPayment<'_> {
    NewPayment {
        idempotency_key,
        amount: usd(minor),
        capture: CaptureMode::Automatic,
        order_reference: "ord_1",
        tenant_reference: "ten_1",
    }
}
