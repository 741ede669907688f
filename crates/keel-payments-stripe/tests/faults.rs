//! The resilience kit (ADR 0033) in front of localstripe, through the fault-injecting proxy
//! (`keel-faults`), which counts what reached it and what it passed on to the simulator.

mod common;

use std::time::Duration;

use common::{SECRET, order_payment, provider_with, start, usd};
use keel_faults::{Fault, FaultProxy};
use keel_payments::ports::{PaymentProvider, ProviderError, ProviderSecret};
use keel_resilience::{CircuitState, Policy};

fn policy(open_for: Duration) -> Policy {
    Policy {
        failures_to_open: 5,
        open_for,
        half_open_probes: 1,
        retry_delays: Vec::new(),
        retry_jitter: Duration::ZERO,
        attempt_timeout: Duration::from_secs(10),
        max_concurrent: 16,
        queue_wait: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn five_failures_open_the_circuit_the_sixth_call_never_leaves_and_a_probe_closes_it() {
    let server = start().await;
    let proxy = FaultProxy::start(&server.base).await;
    let open_for = Duration::from_millis(300);
    let stripe = provider_with(&proxy.url, policy(open_for));
    let secret = ProviderSecret::new(SECRET.into());
    proxy.always(Some(Fault::Status(500)));
    for _ in 0..5 {
        let err = stripe.retrieve(&secret, "pi_any").await.expect_err("500");
        assert_eq!(
            err,
            ProviderError::Unavailable {
                retry_after_ms: None
            }
        );
    }
    assert_eq!(proxy.arrived(), 5);
    assert_eq!(stripe.dependency().snapshot().state, CircuitState::Open);
    let err = stripe.retrieve(&secret, "pi_any").await.expect_err("open");
    assert!(
        matches!(err, ProviderError::Unavailable { retry_after_ms: Some(ms) } if ms <= 300),
        "{err:?}"
    );
    assert_eq!(
        proxy.arrived(),
        5,
        "the sixth call never reached the provider"
    );

    // The open time is the behaviour under test: wait it out, then one probe goes through.
    tokio::time::sleep(open_for).await;
    proxy.always(None);
    let created = stripe
        .create(&secret, &order_payment("keel:probe", 1999))
        .await
        .expect("the probe succeeds");
    assert_eq!(created.amount, usd(1999));
    assert_eq!(proxy.arrived(), 6);
    assert_eq!(stripe.dependency().snapshot().state, CircuitState::Closed);
}

#[tokio::test]
async fn a_server_error_then_a_success_creates_one_payment_at_the_provider() {
    let server = start().await;
    let proxy = FaultProxy::start(&server.base).await;
    let stripe = provider_with(
        &proxy.url,
        Policy {
            retry_delays: vec![Duration::from_millis(10)],
            ..policy(Duration::from_mins(1))
        },
    );
    let secret = ProviderSecret::new(SECRET.into());
    proxy.script([Fault::Status(500)]);
    let created = stripe
        .create(&secret, &order_payment("keel:retried", 1999))
        .await
        .expect("created on the retry");
    assert_eq!(proxy.arrived(), 2);
    assert_eq!(proxy.forwarded(), 1, "only the retry reached the provider");
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/payment_intents", server.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let data = listed["data"].as_array().expect("a list");
    assert_eq!(data.len(), 1, "one payment at the provider");
    assert_eq!(data[0]["id"].as_str(), Some(created.id.as_str()));
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_a_refusal_is_not() {
    let server = start().await;
    let proxy = FaultProxy::start(&server.base).await;
    let stripe = provider_with(
        &proxy.url,
        Policy {
            retry_delays: vec![Duration::from_secs(1)],
            ..policy(Duration::from_mins(1))
        },
    );
    let secret = ProviderSecret::new(SECRET.into());
    proxy.script([Fault::TooMany { retry_after_s: 1 }]);
    stripe
        .create(&secret, &order_payment("keel:slowed", 1999))
        .await
        .expect("created after the wait");
    assert_eq!(proxy.arrived(), 2);
    proxy.script([Fault::Status(402)]);
    let err = stripe
        .create(&secret, &order_payment("keel:declined", 1999))
        .await
        .expect_err("refused");
    assert!(matches!(err, ProviderError::Refused { .. }), "{err:?}");
    assert_eq!(proxy.arrived(), 3, "a refusal is not retried");
}

#[tokio::test]
async fn with_the_provider_slow_at_most_the_bulkhead_is_in_flight_and_the_rest_fail_fast() {
    let server = start().await;
    let proxy = FaultProxy::start(&server.base).await;
    let stripe = provider_with(&proxy.url, policy(Duration::from_mins(1)));
    proxy.always(Some(Fault::Delay(Duration::from_secs(1))));
    let mut calls = Vec::new();
    for i in 0..100 {
        let stripe = stripe.clone();
        calls.push(tokio::spawn(async move {
            let secret = ProviderSecret::new(SECRET.into());
            let key = format!("keel:bulk:{i}");
            stripe.create(&secret, &order_payment(&key, 1999)).await
        }));
    }
    let mut ok = 0;
    let mut unavailable = 0;
    for c in calls {
        match c.await.expect("task") {
            Ok(_) => ok += 1,
            Err(ProviderError::Unavailable { .. }) => unavailable += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        proxy.peak_held(),
        16,
        "the bulkhead's exact count in flight"
    );
    assert_eq!(ok, 16);
    assert_eq!(unavailable, 84);
    assert_eq!(proxy.arrived(), 16, "the rest never left");
    assert_eq!(stripe.dependency().snapshot().busy, 84);
}
