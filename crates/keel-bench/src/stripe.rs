//! The Stripe side of `keel bench`: the shop set up to take payments through the Stripe
//! simulator, and the provider load (storefront payment-session requests kept in flight).

use std::{sync::Arc, time::Instant};

use anyhow::{Context as _, ensure};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use std::collections::BTreeMap;

use crate::{MAX_CONCURRENCY, Payment, Shop, Tally, Target, Worker, is_loopback, setup_call};

/// The secret key the bench's shop gives the simulator, and its webhook secret.
pub(crate) const BENCH_STRIPE_KEY: &str = "sk_test_keel_bench";
const BENCH_WEBHOOK_SECRET: &str = "whsec_keel_bench";

/// Sets the shop up to take payments through the Stripe simulator at `simulator` (loopback):
/// the provider enabled in Keel, and the simulator's webhooks sent to the shop's endpoint.
pub async fn enable_stripe(target: &Target, shop: &Shop, simulator: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(simulator)
        .context("--stripe-simulator must be a URL such as http://127.0.0.1:8420")?;
    ensure!(
        parsed.scheme() == "http" && is_loopback(&parsed),
        "--stripe-simulator must be http:// on a loopback address"
    );
    enable_stripe_settings(target, shop).await?;
    let me: Value = target
        .request(Method::GET, "/v1/me")
        .bearer_auth(&shop.staff_token)
        .send()
        .await
        .context("/v1/me: no answer")?
        .json()
        .await
        .context("/v1/me: not JSON")?;
    let tenant = me["tenant_id"].as_str().context("/v1/me: no tenant id")?;
    let hook = format!("{}/v1/hooks/payments/stripe/{tenant}", target.base);
    let registered = target
        .client
        .post(format!(
            "{}/_config/webhooks/keel-bench-{tenant}",
            simulator.trim_end_matches('/')
        ))
        .form(&[("url", hook.as_str()), ("secret", BENCH_WEBHOOK_SECRET)])
        .send()
        .await
        .context("the simulator does not answer")?;
    ensure!(
        registered.status().is_success(),
        "the simulator refused the webhook: {}",
        registered.status()
    );
    Ok(())
}

/// The shop's Stripe settings, enabled, with the bench's keys.
async fn enable_stripe_settings(target: &Target, shop: &Shop) -> anyhow::Result<()> {
    setup_call(
        target,
        &shop.staff_token,
        Method::PUT,
        "/v1/admin/payment-providers/stripe",
        json!({"enabled": true, "secret_key": BENCH_STRIPE_KEY, "webhook_secrets": [BENCH_WEBHOOK_SECRET]}),
    )
    .await?;
    Ok(())
}

/// What [`provider_load`] saw: its answers by status (0: no HTTP answer).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProviderLoadReport {
    pub in_flight: u32,
    pub answers: BTreeMap<u16, u64>,
}

/// Load on the payment provider's path while another run goes on: `n` storefront requests
/// for one order's payment session kept in flight until `until` (the shop takes Stripe
/// payments; the server's provider is whatever its `KEEL_PAYMENTS__STRIPE__API_BASE` names,
/// e.g. a slow simulator, so that its bulkhead fills).
pub async fn provider_load(
    target: Target,
    shop: Shop,
    n: u32,
    until: Instant,
) -> anyhow::Result<ProviderLoadReport> {
    ensure!(
        (1..=MAX_CONCURRENCY).contains(&n),
        "--provider-load must be 1 to {MAX_CONCURRENCY}"
    );
    enable_stripe_settings(&target, &shop).await?;
    let mut placer = Worker {
        target: target.clone(),
        shop: Arc::new(shop),
        paid: Arc::default(),
        payment: Payment::Manual,
        tally: Tally::default(),
        next: 0,
    };
    let (order_id, secret) = placer
        .place()
        .await
        .context("provider load: the order could not be placed")?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (target, pk, order_id, secret) = (
            target.clone(),
            placer.shop.publishable_key.clone(),
            order_id.clone(),
            secret.clone(),
        );
        tasks.spawn(async move {
            let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
            while Instant::now() < until {
                let status = target
                    .request(
                        Method::POST,
                        &format!("/v1/store/orders/{order_id}/payment-sessions"),
                    )
                    .header("keel-publishable-key", &pk)
                    .header("keel-cart-secret", &secret)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                *answers.entry(status).or_default() += 1;
            }
            answers
        });
    }
    let mut report = ProviderLoadReport {
        in_flight: n,
        answers: BTreeMap::new(),
    };
    while let Some(done) = tasks.join_next().await {
        for (status, count) in done.context("a provider-load task failed")? {
            *report.answers.entry(status).or_default() += count;
        }
    }
    Ok(report)
}
