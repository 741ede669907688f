//! What localstripe cannot show, against the Stripe API simulator test server of the test kit
//! (`keel_faults::stripe_sim`, named as such, ADR 0034): it honours `Idempotency-Key` as Stripe
//! does and can lose the answer to a creation it made.

mod common;

use std::time::Duration;

use common::{SECRET, order_payment, usd};
use keel_faults::stripe_sim::StripeSimulator;
use keel_payments::ports::{PaymentProvider, ProviderSecret, RefundOutcome};
use keel_payments_stripe::StripeProvider;
use keel_resilience::{Dependency, Policy};

fn quick(base: &str) -> StripeProvider {
    StripeProvider::new(
        base,
        Duration::from_secs(1),
        Dependency::new(
            "stripe",
            Policy {
                attempt_timeout: Duration::from_millis(300),
                retry_delays: vec![Duration::from_millis(10)],
                retry_jitter: Duration::ZERO,
                ..Policy::default()
            },
        ),
    )
    .expect("provider")
}

/// The first creation is made at the provider and its answer lost (held past the attempt's
/// time); the retry carries the same key derived from the order, so the provider answers the
/// same PaymentIntent: one payment for the order, never two.
#[tokio::test]
async fn a_timeout_on_create_and_its_retry_make_one_payment() {
    let sim = StripeSimulator::start().await;
    sim.hold_first_creation(Duration::from_secs(2));
    let stripe = quick(&sim.url);
    let secret = ProviderSecret::new(SECRET.into());
    let created = stripe
        .create(&secret, &order_payment("keel_session_ord_1", 4200))
        .await
        .expect("the retry gets the payment");
    assert_eq!(created.amount, usd(4200));
    assert_eq!(sim.intents_made(), 1, "one PaymentIntent for the order");
    // Asked again later (a shopper's second request), still the same one.
    let again = stripe
        .create(&secret, &order_payment("keel_session_ord_1", 4200))
        .await
        .expect("replayed");
    assert_eq!(again.id, created.id);
    assert_eq!(sim.intents_made(), 1);
}

/// A refund answered `pending` is answered `pending` again for its key (as Stripe replays
/// first answers), and read by its id it shows when it finished.
#[tokio::test]
async fn a_pending_refund_is_read_by_its_id_until_it_finishes() {
    let sim = StripeSimulator::start().await;
    let stripe = quick(&sim.url);
    let secret = ProviderSecret::new(SECRET.into());
    let paid = stripe
        .create(&secret, &order_payment("keel_session_ord_2", 1000))
        .await
        .expect("created");
    sim.succeed(&paid.id);
    sim.refunds_pending(true);
    let refund = stripe
        .refund(&secret, &paid.id, usd(400), "keel_refund_ref_1")
        .await
        .expect("made");
    assert_eq!(refund.status, RefundOutcome::Pending);
    let replay = stripe
        .refund(&secret, &paid.id, usd(400), "keel_refund_ref_1")
        .await
        .expect("replayed");
    assert_eq!(
        replay.status,
        RefundOutcome::Pending,
        "a key replays its first answer"
    );
    sim.finish_refunds();
    let read = stripe
        .retrieve_refund(&secret, &refund.id)
        .await
        .expect("by id");
    assert_eq!(read.status, RefundOutcome::Succeeded);
    assert_eq!(sim.refunds(), (1, 2), "one refund made, asked for twice");
}
