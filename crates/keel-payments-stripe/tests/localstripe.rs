//! The adapter against localstripe (PyPI), a stateful Stripe API simulator written by others,
//! installed by `scripts/test` (ADR 0034). The test plays the shopper's browser where Stripe.js
//! would: it attaches a test card to the payment and confirms it.

mod common;

use common::{SECRET, provider, start, usd};
use keel_faults::localstripe::pay_as_the_browser;
use std::time::Duration;

use keel_payments::{
    domain::{CaptureMode, EventKind, SessionStatus},
    ports::{NewPayment, PaymentProvider, ProviderError, ProviderSecret, RefundOutcome},
    signature::{SignatureError, verify},
};

#[tokio::test]
async fn a_payment_is_created_for_the_exact_amount_confirmed_by_the_shopper_and_refunded() {
    let server = start().await;
    let stripe = provider(&server.base);
    let secret = ProviderSecret::new(SECRET.into());
    let created = stripe
        .create(
            &secret,
            &NewPayment {
                idempotency_key: "keel:order-1:session:1",
                amount: usd(1999),
                capture: CaptureMode::Automatic,
                order_reference: "ord_1",
                tenant_reference: "ten_1",
            },
        )
        .await
        .expect("created");
    assert_eq!(created.amount, usd(1999));
    assert_eq!(created.status, SessionStatus::Open);
    assert!(created.client_secret.is_some(), "the browser needs it");

    pay_as_the_browser(&server.base, &created.id).await;
    let paid = stripe
        .retrieve(&secret, &created.id)
        .await
        .expect("retrieved");
    assert_eq!(paid.status, SessionStatus::Succeeded);
    assert_eq!(paid.amount, usd(1999));

    let refund = stripe
        .refund(&secret, &created.id, usd(500), "keel:refund-1")
        .await
        .expect("refunded");
    assert_eq!(refund.amount, usd(500));
    assert_eq!(refund.status, RefundOutcome::Succeeded);
    let again = stripe
        .retrieve_refund(&secret, &refund.id)
        .await
        .expect("the refund by its id");
    assert_eq!(again, refund);
}

#[tokio::test]
async fn a_payment_not_yet_paid_can_be_cancelled() {
    let server = start().await;
    let stripe = provider(&server.base);
    let secret = ProviderSecret::new(SECRET.into());
    let created = stripe
        .create(
            &secret,
            &NewPayment {
                idempotency_key: "keel:order-2:session:1",
                amount: usd(700),
                capture: CaptureMode::Automatic,
                order_reference: "ord_2",
                tenant_reference: "ten_1",
            },
        )
        .await
        .expect("created");
    let cancelled = stripe
        .cancel(&secret, &created.id, "keel:order-2:cancel")
        .await
        .expect("cancelled");
    assert_eq!(cancelled.status, SessionStatus::Canceled);
}

#[tokio::test]
async fn the_providers_refusals_are_answered_with_its_code_and_never_retried() {
    let server = start().await;
    let stripe = provider(&server.base);
    let secret = ProviderSecret::new(SECRET.into());
    let err = stripe
        .retrieve(&secret, "pi_doesnotexist")
        .await
        .expect_err("unknown");
    assert!(matches!(err, ProviderError::Refused { .. }), "{err:?}");
    assert_eq!(
        stripe.dependency().snapshot().state,
        keel_resilience::CircuitState::Closed,
        "a refusal is not held against the provider"
    );
    let err = stripe
        .retrieve(&secret, "../v1/charges")
        .await
        .expect_err("not an id");
    assert_eq!(
        err,
        ProviderError::Refused {
            code: "bad_id".into(),
            message: "not a provider id".into()
        }
    );
}

/// localstripe signs its webhooks itself (its own HMAC code): Keel's check accepts them as they
/// come, refuses them with one byte changed, and reads the payment's exact amount and Keel's
/// references from the event.
#[tokio::test]
async fn localstripes_signed_webhooks_pass_keels_check_and_read_as_a_paid_order() {
    let server = start().await;
    let mut receiver = keel_faults::Recorder::start().await;
    let hook_url = format!("{}/hooks", receiver.url);
    let webhook_secret = "whsec_keel_test";
    let registered = reqwest::Client::new()
        .post(format!("{}/_config/webhooks/keel", server.base))
        .form(&[("url", hook_url.as_str()), ("secret", webhook_secret)])
        .send()
        .await
        .expect("register");
    assert!(registered.status().is_success());
    let stripe = provider(&server.base);
    let secret = ProviderSecret::new(SECRET.into());
    let created = stripe
        .create(
            &secret,
            &NewPayment {
                idempotency_key: "keel:order-3:session:1",
                amount: usd(2500),
                capture: CaptureMode::Automatic,
                order_reference: "ord_3",
                tenant_reference: "ten_3",
            },
        )
        .await
        .expect("created");
    pay_as_the_browser(&server.base, &created.id).await;

    // Bounded wait for the simulator's delivery (it sends one second after the event).
    let succeeded = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let got = receiver.next().await;
            let event = keel_payments_stripe::parse_event(&got.body).expect("an event");
            if matches!(event.kind, EventKind::PaymentSucceeded { .. }) {
                let signature = got
                    .header("stripe-signature")
                    .unwrap_or_default()
                    .to_owned();
                return (signature, got.body, event);
            }
        }
    })
    .await
    .expect("payment_intent.succeeded arrives");
    let (signature, body, event) = succeeded;
    let now = time::OffsetDateTime::now_utc();
    let tolerance = time::Duration::seconds(300);
    assert!(
        verify(
            &signature,
            &body,
            &[webhook_secret.as_bytes()],
            now,
            tolerance
        )
        .is_ok()
    );
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert_eq!(
        verify(
            &signature,
            &tampered,
            &[webhook_secret.as_bytes()],
            now,
            tolerance
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        event.kind,
        EventKind::PaymentSucceeded {
            payment_id: created.id.clone(),
            amount: usd(2500),
            order_reference: Some("ord_3".into()),
            tenant_reference: Some("ten_3".into()),
        }
    );
    assert!(event.id.starts_with("evt_"), "{}", event.id);
}
