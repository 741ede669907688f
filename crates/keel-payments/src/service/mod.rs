//! Payments use cases: a shop's provider settings, payment sessions for orders, the
//! provider's signed webhooks (inbox), reconciliation, compensation and refunds through the
//! provider. Every answer from a provider changes the order through [`PaymentStore::apply`]:
//! the inbox row, the session, the order and the events in one transaction, so a repeated or
//! late answer has no second effect (ADR 0034).

mod reconcile;
mod refunds;
mod sessions;
mod settings;
mod webhooks;

use std::sync::Arc;

use keel_identity::domain::sealed::MasterKey;
use keel_kernel::{StoreError, TenantId, clock::Clock, event::NewEvent};
use keel_orders::{
    order::{Order, OrderError, OrderId, OrderStatus, PaymentStatus, RefundRequest, RefundStatus},
    ports::{OrderReceipt, OrderStore, StockChange, VERSION_CONFLICT},
    service::{OrdersService, ShopperAccess},
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{
    decide::{OnSucceeded, OrderStanding, on_succeeded},
    domain::{Amount, CaptureMode, EventKind, ProviderEvent, ProviderKind, SessionStatus},
    ports::{
        Applied, Effect, Inbox, NewPayment, OrderChange, PROVIDER_EXISTS,
        PROVIDER_VERSION_CONFLICT, PaymentProvider, PaymentSession, PaymentStore, ProviderError,
        ProviderSecret, ProviderSettings, RefundOutcome, RefundTask, RefundTaskStatus,
        SessionChange,
    },
    signature::{SignatureError, verify},
};

/// The exact times of the payment jobs and checks (configuration, `KEEL_PAYMENTS__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentsSettings {
    /// How far a webhook's signed timestamp may be from now, either way.
    pub webhook_tolerance: Duration,
    /// How old a session without a final answer is when reconciliation first asks about it.
    pub reconcile_after: Duration,
    /// How long until reconciliation asks again about a session still without an answer
    /// (also the job's interval).
    pub reconcile_every: Duration,
    /// How long until a refund the provider did not answer is tried again.
    pub refund_retry: Duration,
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            webhook_tolerance: Duration::seconds(300),
            reconcile_after: Duration::seconds(600),
            reconcile_every: Duration::seconds(300),
            refund_retry: Duration::seconds(60),
        }
    }
}

/// What can go wrong, in the payments context's words.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("invalid input")]
    Invalid(Vec<(String, String)>),
    #[error("not found")]
    NotFound,
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    /// The order has no authorised payment waiting for a capture.
    #[error("the order has no authorised payment to capture")]
    NotCapturable,
    /// The shop has not set the provider up (or switched it off).
    #[error("the shop does not take payments with {0}")]
    NotConfigured(&'static str),
    /// The provider cannot be reached now; nothing changed, try again after the pause.
    #[error("the payment provider is unavailable")]
    Unavailable { retry_after_ms: Option<u64> },
    /// The provider refused the request; its code, for staff.
    #[error("the payment provider refused the request: {code}")]
    Refused { code: String },
    /// A webhook that is not the provider's (bad signature, stale, unknown shop): nothing
    /// stored.
    #[error("the webhook is not signed by the provider: {0}")]
    Signature(&'static str),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("the order is being changed concurrently")]
    Contended,
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for PaymentsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

impl From<keel_orders::service::OrdersError> for PaymentsError {
    fn from(e: keel_orders::service::OrdersError) -> Self {
        use keel_orders::service::OrdersError as O;
        match e {
            O::NotFound => Self::NotFound,
            O::PreconditionFailed => Self::PreconditionFailed,
            O::Order(e) => Self::Order(e),
            O::Contended => Self::Contended,
            O::Store(e) => Self::Store(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ProviderError> for PaymentsError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Unavailable { retry_after_ms } => Self::Unavailable { retry_after_ms },
            ProviderError::Refused { code, .. } => Self::Refused { code },
        }
    }
}

fn invalid(pointer: &str, message: &str) -> PaymentsError {
    PaymentsError::Invalid(vec![(pointer.to_owned(), message.to_owned())])
}

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, PaymentsError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| PaymentsError::Internal(e.to_string()))
}

/// How often an order change is tried again when another request changed the order first.
const SAVE_ATTEMPTS: usize = 5;

/// The providers this node can call.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    pub stripe: Option<Arc<dyn PaymentProvider>>,
}

/// A shop's settings for a provider as the API shows them: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderView {
    pub provider: ProviderKind,
    pub enabled: bool,
    pub capture: CaptureMode,
    pub secret_key_set: bool,
    pub webhook_secrets: usize,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// A settings change: absent secrets keep the stored ones.
#[derive(Debug, Clone, Default)]
pub struct ProviderInput {
    pub enabled: bool,
    pub capture: CaptureMode,
    pub secret_key: Option<String>,
    pub webhook_secrets: Option<Vec<String>>,
}

/// A session as the storefront gets it: what the shopper's browser needs to confirm.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: PaymentSession,
    pub client_secret: Option<String>,
}

/// What a webhook did; refunds owed are tried by the caller after answering.
#[derive(Debug, Clone, Default)]
pub struct WebhookOutcome {
    pub repeat: bool,
    pub refunds: Vec<RefundTask>,
}

/// What a reconciliation or refund pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    pub checked: u64,
    pub settled: u64,
    pub refunds_tried: u64,
    pub refunds_settled: u64,
}

/// Secrets are sealed for one shop and one provider: a sealed value copied to another row
/// does not open.
fn seal_context(tenant: TenantId, provider: ProviderKind, what: &str) -> String {
    format!("payments:{tenant}:{}:{what}", provider.as_str())
}

/// Stripe secret keys (`sk_...`) and restricted keys (`rk_...`): letters, digits, `_`.
fn check_secret_key(key: &str) -> Result<(), PaymentsError> {
    let shaped = (key.starts_with("sk_") || key.starts_with("rk_"))
        && (8..=255).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if shaped {
        Ok(())
    } else {
        Err(invalid(
            "/secret_key",
            "must be a secret key (sk_... or rk_...), 8 to 255 letters, digits or _",
        ))
    }
}

/// Webhook signing secrets: one to three (two while rotating), printable, no spaces.
fn check_webhook_secrets(secrets: &[String]) -> Result<(), PaymentsError> {
    if secrets.is_empty() || secrets.len() > 3 {
        return Err(invalid("/webhook_secrets", "must hold 1 to 3 secrets"));
    }
    for (i, s) in secrets.iter().enumerate() {
        if !(8..=255).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                &format!("/webhook_secrets/{i}"),
                "must be 8 to 255 printable characters without spaces",
            ));
        }
    }
    Ok(())
}

/// Payments use cases.
#[derive(Debug, Clone)]
pub struct PaymentsService {
    payments: Arc<dyn PaymentStore>,
    order_store: Arc<dyn OrderStore>,
    orders: OrdersService,
    providers: Providers,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    settings: PaymentsSettings,
}

impl PaymentsService {
    pub fn new(
        payments: Arc<dyn PaymentStore>,
        order_store: Arc<dyn OrderStore>,
        orders: OrdersService,
        providers: Providers,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        settings: PaymentsSettings,
    ) -> Self {
        Self {
            payments,
            order_store,
            orders,
            providers,
            master,
            clock,
            settings,
        }
    }

    pub fn settings(&self) -> PaymentsSettings {
        self.settings
    }

    fn provider(&self, kind: ProviderKind) -> Result<&Arc<dyn PaymentProvider>, PaymentsError> {
        match kind {
            ProviderKind::Stripe => self
                .providers
                .stripe
                .as_ref()
                .ok_or(PaymentsError::NotConfigured("stripe")),
            ProviderKind::Manual => Err(PaymentsError::NotConfigured("manual")),
        }
    }

    fn view(&self, s: &ProviderSettings) -> ProviderView {
        ProviderView {
            provider: s.provider,
            enabled: s.enabled,
            capture: s.capture,
            secret_key_set: !s.sealed_secret_key.is_empty(),
            webhook_secrets: self.webhook_secrets(s).map_or(0, |w| w.len()),
            created_at: s.created_at,
            updated_at: s.updated_at,
            version: s.version,
        }
    }

    fn secret_key(&self, s: &ProviderSettings) -> Result<ProviderSecret, PaymentsError> {
        let open = self
            .master
            .open(
                &seal_context(s.tenant_id, s.provider, "secret_key"),
                &s.sealed_secret_key,
            )
            .map_err(|_| PaymentsError::Internal("a provider key does not open".into()))?;
        String::from_utf8(open)
            .map(ProviderSecret::new)
            .map_err(|_| PaymentsError::Internal("a provider key is not text".into()))
    }

    fn webhook_secrets(&self, s: &ProviderSettings) -> Result<Vec<String>, PaymentsError> {
        if s.sealed_webhook_secrets.is_empty() {
            return Ok(Vec::new());
        }
        let open = self
            .master
            .open(
                &seal_context(s.tenant_id, s.provider, "webhook_secrets"),
                &s.sealed_webhook_secrets,
            )
            .map_err(|_| PaymentsError::Internal("webhook secrets do not open".into()))?;
        let text = String::from_utf8(open)
            .map_err(|_| PaymentsError::Internal("webhook secrets are not text".into()))?;
        Ok(text
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// The task of a pending refund of the order's paying payment: back the way it came.
pub(super) fn refund_task(
    order: &Order,
    refund: &keel_orders::order::Refund,
    now: OffsetDateTime,
) -> Result<RefundTask, PaymentsError> {
    let payment = order
        .paying_payment()
        .ok_or_else(|| PaymentsError::Internal("a pending refund without a payment".into()))?;
    let provider = ProviderKind::parse(&payment.provider)
        .ok_or_else(|| PaymentsError::Internal("a payment of an unknown provider".into()))?;
    Ok(refund_of(
        order,
        refund,
        provider,
        &payment.provider_reference,
        now,
    ))
}

/// The task of refunding `refund` through `provider`'s payment `payment_ref`.
pub(super) fn refund_of(
    order: &Order,
    refund: &keel_orders::order::Refund,
    provider: ProviderKind,
    payment_ref: &str,
    now: OffsetDateTime,
) -> RefundTask {
    RefundTask {
        tenant_id: order.tenant_id,
        id: refund.id,
        order_id: order.id,
        provider,
        payment_ref: payment_ref.to_owned(),
        amount: Amount {
            minor: refund.amount,
            currency: order.currency,
        },
        status: RefundTaskStatus::Pending,
        provider_ref: None,
        failure: None,
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_stripe_shaped_and_webhook_secrets_bounded() {
        assert!(check_secret_key("sk_test_abcdef").is_ok());
        assert!(check_secret_key("rk_live_abcdef").is_ok());
        for bad in ["pk_test_abcdef", "sk_", "sk_test abc", "sk_test_\u{0}abc"] {
            assert!(check_secret_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_webhook_secrets(&["whsec_abcdefgh".into()]).is_ok());
        assert!(check_webhook_secrets(&[]).is_err());
        assert!(check_webhook_secrets(&vec!["whsec_abcdefgh".into(); 4]).is_err());
        assert!(check_webhook_secrets(&["whsec abcdefgh".into()]).is_err());
    }
}
