//! A Stripe-compatible payment provider (ADR 0034): PaymentIntents and Refunds, form-encoded
//! requests, `Authorization: Bearer <secret key>`, a pinned `Stripe-Version`, and Keel's own
//! `Idempotency-Key` on every POST, so a retry after a lost answer cannot charge twice.
//!
//! Every call goes through the provider's [`Dependency`] (ADR 0033): a bulkhead, a circuit
//! breaker, an attempt timeout and, for calls that cannot act twice, retries. The provider's
//! answers are classified there: timeouts, connection errors, 5xx and 429 are the provider's
//! trouble; any other 4xx is ours (a declined card, a bad request) and is answered as
//! [`ProviderError::Refused`] with Stripe's error code.
#![forbid(unsafe_code)]

mod units;

use std::time::Duration;

use async_trait::async_trait;
use keel_kernel::money::Currency;
use keel_payments::{
    domain::{Amount, EventKind, ProviderEvent, ProviderKind, SessionStatus},
    ports::{
        NewPayment, PaymentProvider, ProviderError, ProviderPayment, ProviderRefund,
        ProviderSecret, RefundOutcome,
    },
};
use keel_resilience::{CallError, Dependency, Failure};
use serde::Deserialize;

/// The API version Keel speaks; the provider answers in this version's shapes whatever the
/// account's default.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Stripe's API, the default base.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";

/// The adapter: one HTTP client and one dependency per node.
#[derive(Debug, Clone)]
pub struct StripeProvider {
    client: reqwest::Client,
    base: url::Url,
    dependency: Dependency,
}

impl StripeProvider {
    /// An adapter speaking to `base` (Stripe's API or a compatible one), connecting within
    /// `connect_timeout`, through `dependency`.
    pub fn new(
        base: &str,
        connect_timeout: Duration,
        dependency: Dependency,
    ) -> Result<Self, String> {
        let base = url::Url::parse(base).map_err(|e| format!("the Stripe API base: {e}"))?;
        // The shop's secret key travels in every request: only over TLS, or to a simulator
        // on this host.
        let loopback = match base.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if !(base.scheme() == "https" || (base.scheme() == "http" && loopback)) {
            return Err(
                "the Stripe API base must be an https URL (plain http only to a loopback address)"
                    .into(),
            );
        }
        // One TLS provider per process (ring, as everywhere in Keel); a second install is a
        // no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the Stripe HTTP client: {e}"))?;
        Ok(Self {
            client,
            base,
            dependency,
        })
    }

    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    /// One request through the dependency: answers the body of a 2xx; a 4xx other than 429
    /// is Stripe's refusal.
    async fn send(
        &self,
        secret: &ProviderSecret,
        path: &str,
        form: Option<&[(&str, String)]>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ProviderError> {
        let url = self.base.join(path).map_err(|_| ProviderError::Refused {
            code: "bad_path".into(),
            message: "the request path is not valid".into(),
        })?;
        let body = form.map(|pairs| {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                s.append_pair(k, v);
            }
            s.finish()
        });
        // A GET cannot act; a POST can act twice only without its idempotency key (an empty
        // key is none).
        let idempotency_key = idempotency_key.filter(|k| !k.is_empty());
        let idempotent = form.is_none() || idempotency_key.is_some();
        let answer = self
            .dependency
            .call(idempotent, || {
                let mut request = match &body {
                    Some(body) => self
                        .client
                        .post(url.clone())
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(body.clone()),
                    None => self.client.get(url.clone()),
                }
                .bearer_auth(secret.expose())
                .header("Stripe-Version", STRIPE_VERSION);
                if let Some(key) = idempotency_key {
                    request = request.header("Idempotency-Key", key);
                }
                async move { attempt(request).await }
            })
            .await;
        match answer {
            Ok((status, bytes)) if (200..300).contains(&status) => Ok(bytes),
            Ok((_, bytes)) => Err(refusal(&bytes)),
            Err(CallError::Open { retry_after }) => Err(ProviderError::Unavailable {
                retry_after_ms: u64::try_from(retry_after.as_millis()).ok(),
            }),
            Err(CallError::Failed(Failure::Rejected(_))) => Err(ProviderError::Refused {
                code: "request_not_made".into(),
                message: "the request to the provider could not be made (check the shop's key)"
                    .into(),
            }),
            Err(CallError::Busy | CallError::Failed(_)) => Err(ProviderError::Unavailable {
                retry_after_ms: None,
            }),
        }
    }
}

/// One HTTP exchange, classified for the resilience kit.
async fn attempt(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), Failure> {
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_builder() {
            // Our request could not be built (a shop's key that is not a header value): ours
            // to fix, never held against the provider nor retried.
            Failure::Rejected(0)
        } else {
            Failure::Connect(e.to_string())
        }
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?
        .to_vec();
    match status {
        429 => Err(Failure::TooMany { retry_after }),
        // The same idempotency key still running at the provider: the answer will come, so
        // the retry waits for it rather than giving up (which could lead to a new key).
        409 => Err(Failure::InFlight),
        500..=599 => Err(Failure::Server(status)),
        _ => Ok((status, bytes)),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn refusal(bytes: &[u8]) -> ProviderError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => ProviderError::Refused {
            code: b
                .error
                .code
                .or(b.error.kind)
                .unwrap_or_else(|| "refused".into()),
            message: b.error.message.unwrap_or_default(),
        },
        Err(_) => ProviderError::Refused {
            code: "refused".into(),
            message: String::new(),
        },
    }
}

#[derive(Deserialize)]
struct Intent {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    /// Absent or null until something is captured (and never set by some compatible APIs).
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    last_payment_error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
    amount: i64,
    currency: String,
    status: String,
}

/// A refund's answer: `succeeded`; `pending` or `requires_action` (made, not finished);
/// `failed` or `canceled`.
fn refund(body: &[u8]) -> Result<ProviderRefund, ProviderError> {
    let r: Refund = parse(body)?;
    let status = match r.status.as_str() {
        "succeeded" => RefundOutcome::Succeeded,
        "failed" | "canceled" => RefundOutcome::Failed,
        _ => RefundOutcome::Pending,
    };
    Ok(ProviderRefund {
        id: r.id,
        amount: keel_amount(r.amount, &r.currency)?,
        status,
    })
}

/// An amount in Stripe's units for the request, or a refusal before anything is sent.
fn stripe_amount(a: Amount) -> Result<i64, ProviderError> {
    units::to_stripe(a.minor, a.currency).ok_or_else(|| ProviderError::Refused {
        code: "amount_not_expressible".into(),
        message: format!(
            "{} minor units of {} cannot be charged at this provider exactly",
            a.minor,
            a.currency.code()
        ),
    })
}

/// An amount the provider reported, in Keel's minor units: exact, or unreadable.
fn keel_amount(amount: i64, code: &str) -> Result<Amount, ProviderError> {
    let currency = currency(code)?;
    let minor = units::from_stripe(amount, currency).ok_or_else(|| ProviderError::Refused {
        code: "unreadable_answer".into(),
        message: format!("the provider reported {amount} in {code}, not a whole minor unit"),
    })?;
    Ok(Amount { minor, currency })
}

fn currency(code: &str) -> Result<Currency, ProviderError> {
    Currency::parse(&code.to_ascii_uppercase()).map_err(|_| ProviderError::Refused {
        code: "unknown_currency".into(),
        message: format!("the provider answered in an unknown currency: {code}"),
    })
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes).map_err(|e| ProviderError::Refused {
        code: "unreadable_answer".into(),
        message: format!("the provider's answer could not be read: {e}"),
    })
}

fn payment(bytes: &[u8]) -> Result<ProviderPayment, ProviderError> {
    let i: Intent = parse(bytes)?;
    let status = match i.status.as_str() {
        "succeeded" => SessionStatus::Succeeded,
        "canceled" => SessionStatus::Canceled,
        // Stripe returns a failed attempt to `requires_payment_method` with the error set.
        "requires_payment_method" if i.last_payment_error.is_some() => SessionStatus::Failed,
        _ => SessionStatus::Open,
    };
    let amount = keel_amount(i.amount, &i.currency)?;
    // What was taken: as reported; a succeeded payment that does not say (some compatible
    // simulators never fill it) took its amount whole, as with the webhook's event.
    let taken = i
        .amount_received
        .unwrap_or(if status == SessionStatus::Succeeded {
            i.amount
        } else {
            0
        });
    let received = keel_amount(taken, &i.currency)?.minor;
    Ok(ProviderPayment {
        id: i.id,
        status,
        amount,
        received,
        client_secret: i.client_secret,
    })
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// Reads an event the provider signed (call it only after `keel_payments::signature::verify`
/// accepted the body): the payment events by their PaymentIntent, `charge.refunded` by its
/// charge's PaymentIntent, anything else as [`EventKind::Other`].
pub fn parse_event(body: &[u8]) -> Result<ProviderEvent, ProviderError> {
    let e: Event = parse(body)?;
    let object = e.data.object;
    let text = |key: &str| object.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let metadata = |key: &str| {
        object
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let kind = match e.kind.as_str() {
        "payment_intent.succeeded" => {
            let intent: Intent =
                serde_json::from_value(object.clone()).map_err(|err| ProviderError::Refused {
                    code: "unreadable_event".into(),
                    message: err.to_string(),
                })?;
            // What was taken: the amount received when the provider says it, else the
            // PaymentIntent's amount (a succeeded automatic capture takes it whole).
            let taken = intent.amount_received.unwrap_or(intent.amount);
            EventKind::PaymentSucceeded {
                amount: keel_amount(taken, &intent.currency)?,
                payment_id: intent.id,
                order_reference: metadata("keel_order"),
                tenant_reference: metadata("keel_tenant"),
            }
        }
        "payment_intent.payment_failed" => EventKind::PaymentFailed {
            payment_id: text("id").unwrap_or_default(),
        },
        "charge.refunded" => EventKind::Refunded {
            payment_id: text("payment_intent").unwrap_or_default(),
            amount_refunded: keel_amount(
                object
                    .get("amount_refunded")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0),
                &text("currency").unwrap_or_default(),
            )?,
        },
        other => EventKind::Other {
            event_type: other.to_owned(),
        },
    };
    Ok(ProviderEvent { id: e.id, kind })
}

/// A path segment of the provider's own id (`pi_...`, `re_...`): letters, digits and `_` only,
/// so an id can never reach another path.
fn segment(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(ProviderError::Refused {
            code: "bad_id".into(),
            message: "not a provider id".into(),
        })
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Stripe
    }

    fn parse_event(&self, body: &[u8]) -> Result<ProviderEvent, ProviderError> {
        parse_event(body)
    }

    async fn create(
        &self,
        secret: &ProviderSecret,
        p: &NewPayment<'_>,
    ) -> Result<ProviderPayment, ProviderError> {
        let form = [
            ("amount", stripe_amount(p.amount)?.to_string()),
            ("currency", p.amount.currency.code().to_ascii_lowercase()),
            ("capture_method", p.capture.as_str().to_owned()),
            ("metadata[keel_order]", p.order_reference.to_owned()),
            ("metadata[keel_tenant]", p.tenant_reference.to_owned()),
        ];
        payment(
            &self
                .send(
                    secret,
                    "/v1/payment_intents",
                    Some(&form),
                    Some(p.idempotency_key),
                )
                .await?,
        )
    }

    async fn retrieve(
        &self,
        secret: &ProviderSecret,
        id: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let path = ["/v1/payment_intents/", segment(id)?].concat();
        payment(&self.send(secret, &path, None, None).await?)
    }

    async fn cancel(
        &self,
        secret: &ProviderSecret,
        id: &str,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let path = ["/v1/payment_intents/", segment(id)?, "/cancel"].concat();
        payment(
            &self
                .send(secret, &path, Some(&[]), Some(idempotency_key))
                .await?,
        )
    }

    async fn capture(
        &self,
        secret: &ProviderSecret,
        id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let path = ["/v1/payment_intents/", segment(id)?, "/capture"].concat();
        let form = [("amount_to_capture", stripe_amount(amount)?.to_string())];
        payment(
            &self
                .send(secret, &path, Some(&form), Some(idempotency_key))
                .await?,
        )
    }

    async fn refund(
        &self,
        secret: &ProviderSecret,
        payment_id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let form = [
            ("payment_intent", segment(payment_id)?.to_owned()),
            ("amount", stripe_amount(amount)?.to_string()),
            // Keel's refund, findable at the provider whatever became of the key.
            ("metadata[keel_refund]", idempotency_key.to_owned()),
        ];
        refund(
            &self
                .send(secret, "/v1/refunds", Some(&form), Some(idempotency_key))
                .await?,
        )
    }

    async fn retrieve_refund(
        &self,
        secret: &ProviderSecret,
        id: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let path = ["/v1/refunds/", segment(id)?].concat();
        refund(&self.send(secret, &path, None, None).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_base_is_https_or_a_loopback_simulator() {
        let dep = || Dependency::new("stripe", keel_resilience::Policy::default());
        for ok in [
            "https://api.stripe.com",
            "http://127.0.0.1:8420",
            "http://[::1]:1",
            "http://localhost:9",
        ] {
            assert!(
                StripeProvider::new(ok, Duration::from_secs(1), dep()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://api.stripe.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            assert!(
                StripeProvider::new(bad, Duration::from_secs(1), dep()).is_err(),
                "{bad}"
            );
        }
    }
}
