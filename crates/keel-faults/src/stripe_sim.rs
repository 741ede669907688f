//! A Stripe API simulator test server, for the behaviours localstripe (the simulator written
//! by others that the suite otherwise uses) does not have (ADR 0034):
//!
//! - it honours `Idempotency-Key` as Stripe does: a repeat of a key answers the first
//!   answer, so a test can prove that a retry after a lost answer never creates a second
//!   PaymentIntent;
//! - it can hold back the answer to the first creation (after making the payment), as a
//!   network that loses answers would;
//! - it answers refunds `pending` on request and lets the test finish them later, as Stripe
//!   does when a balance must cover a refund first.
//!
//! It speaks the small part of the API the adapter uses (PaymentIntents created and read,
//! Refunds created and read), form-encoded in, JSON out, and counts what it made.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Sim {
    intents: HashMap<String, Value>,
    refunds: HashMap<String, Value>,
    /// Answers by idempotency key, replayed for a repeat.
    answers: HashMap<String, Value>,
    next_id: u64,
    intents_made: u64,
    refunds_made: u64,
    refund_posts: u64,
    hold_first_creation: Option<Duration>,
    refunds_pending: bool,
}

/// The simulator on a loopback port; stopped with the test's runtime.
#[derive(Debug, Clone)]
pub struct StripeSimulator {
    /// Its base URL (the adapter's API base).
    pub url: String,
    sim: Arc<Mutex<Sim>>,
}

type Shared = Arc<Mutex<Sim>>;

fn lock(sim: &Shared) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(PoisonError::into_inner)
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn missing() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such object"}})),
    )
        .into_response()
}

impl StripeSimulator {
    pub async fn start() -> Self {
        let sim: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(read_intent))
            .route("/v1/refunds", post(create_refund))
            .route("/v1/refunds/{id}", get(read_refund))
            .with_state(sim.clone());
        Self {
            url: crate::serve_on_loopback(app).await,
            sim,
        }
    }

    /// The first PaymentIntent creation is made at once and answered only after `wait` (the
    /// caller will have given up on it).
    pub fn hold_first_creation(&self, wait: Duration) {
        lock(&self.sim).hold_first_creation = Some(wait);
    }

    /// Refunds are made `pending` until [`Self::finish_refunds`].
    pub fn refunds_pending(&self, pending: bool) {
        lock(&self.sim).refunds_pending = pending;
    }

    /// Every pending refund succeeds.
    pub fn finish_refunds(&self) {
        let mut s = lock(&self.sim);
        for r in s.refunds.values_mut() {
            if r["status"] == "pending" {
                r["status"] = json!("succeeded");
            }
        }
    }

    /// Marks a PaymentIntent paid in full (what a shopper's confirmation would do).
    pub fn succeed(&self, intent: &str) {
        let mut s = lock(&self.sim);
        if let Some(i) = s.intents.get_mut(intent) {
            let amount = i["amount"].clone();
            i["status"] = json!("succeeded");
            i["amount_received"] = amount;
        }
    }

    /// Forgets a PaymentIntent (as a provider account the shop no longer uses would not know
    /// it): reads of it answer 404 `resource_missing`.
    pub fn forget(&self, intent: &str) {
        lock(&self.sim).intents.remove(intent);
    }

    /// PaymentIntents made (a repeated key makes none).
    pub fn intents_made(&self) -> u64 {
        lock(&self.sim).intents_made
    }

    /// Refunds made, and refund creations asked for (repeats included).
    pub fn refunds(&self) -> (u64, u64) {
        let s = lock(&self.sim);
        (s.refunds_made, s.refund_posts)
    }
}

fn key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn create_intent(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let key = key(&headers);
    let (answer, hold) = {
        let mut s = lock(&sim);
        if let Some(k) = &key
            && let Some(first) = s.answers.get(k)
        {
            return Json(first.clone()).into_response();
        }
        let f = form(&body);
        let Some(amount) = f.get("amount").and_then(|a| a.parse::<i64>().ok()) else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": {"type": "invalid_request_error", "code": "parameter_missing"}}))).into_response();
        };
        s.next_id += 1;
        s.intents_made += 1;
        let id = format!("pi_sim{}", s.next_id);
        let intent = json!({
            "id": id, "object": "payment_intent", "amount": amount,
            "currency": f.get("currency").cloned().unwrap_or_default(),
            "status": "requires_payment_method", "amount_received": 0,
            "client_secret": format!("{id}_secret_sim"),
        });
        s.intents.insert(id, intent.clone());
        if let Some(k) = key {
            s.answers.insert(k, intent.clone());
        }
        (intent, s.hold_first_creation.take())
    };
    if let Some(wait) = hold {
        tokio::time::sleep(wait).await;
    }
    Json(answer).into_response()
}

async fn read_intent(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    lock(&sim)
        .intents
        .get(&id)
        .map_or_else(missing, |i| Json(i.clone()).into_response())
}

async fn create_refund(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let key = key(&headers);
    let mut s = lock(&sim);
    s.refund_posts += 1;
    // As Stripe: a repeated key answers the first answer, whatever became of the refund
    // since (a refund first answered `pending` is answered `pending` again).
    if let Some(k) = &key
        && let Some(first) = s.answers.get(k)
    {
        return Json(first.clone()).into_response();
    }
    let f = form(&body);
    let intent = f.get("payment_intent").cloned().unwrap_or_default();
    let Some(paid) = s.intents.get(&intent).cloned() else {
        return missing();
    };
    let amount = f
        .get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or_else(|| paid["amount"].as_i64().unwrap_or(0));
    s.next_id += 1;
    s.refunds_made += 1;
    let id = format!("re_sim{}", s.next_id);
    let status = if s.refunds_pending {
        "pending"
    } else {
        "succeeded"
    };
    let refund = json!({
        "id": id, "object": "refund", "amount": amount, "currency": paid["currency"],
        "payment_intent": intent, "status": status,
    });
    s.refunds.insert(id, refund.clone());
    if let Some(k) = key {
        s.answers.insert(k, refund.clone());
    }
    Json(refund).into_response()
}

async fn read_refund(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    lock(&sim)
        .refunds
        .get(&id)
        .map_or_else(missing, |r| Json(r.clone()).into_response())
}
