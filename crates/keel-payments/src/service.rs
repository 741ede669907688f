//! Payments use cases: a shop's provider settings, payment sessions for orders, the
//! provider's signed webhooks (inbox), reconciliation, compensation and refunds through the
//! provider. Every answer from a provider changes the order through [`PaymentStore::apply`]:
//! the inbox row, the session, the order and the events in one transaction, so a repeated or
//! late answer has no second effect (ADR 0034).

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

    // ---- settings -------------------------------------------------------------------------

    pub async fn list_providers(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<ProviderView>, PaymentsError> {
        let all = self.payments.list_providers(tenant).await?;
        Ok(all.iter().map(|s| self.view(s)).collect())
    }

    pub async fn get_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderView, PaymentsError> {
        let s = self.payments.get_provider(tenant, provider).await?;
        Ok(self.view(&s))
    }

    /// Creates or replaces a shop's settings for a provider (only `stripe` has any); with
    /// `if_match`, only at that version. An enabled provider needs its key and at least one
    /// webhook secret.
    pub async fn save_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        input: ProviderInput,
        if_match: Option<i64>,
    ) -> Result<ProviderView, PaymentsError> {
        if provider != ProviderKind::Stripe {
            return Err(PaymentsError::NotFound);
        }
        if input.capture == CaptureMode::Manual {
            // Nothing captures an authorised payment yet: accepting the mode would let every
            // authorisation lapse and the order expire.
            return Err(invalid(
                "/capture_mode",
                "only `automatic` is supported: Keel does not capture authorised payments yet",
            ));
        }
        if let Some(k) = &input.secret_key {
            check_secret_key(k)?;
        }
        if let Some(w) = &input.webhook_secrets {
            check_webhook_secrets(w)?;
        }
        let now = self.clock.now();
        let current = match self.payments.get_provider(tenant, provider).await {
            Ok(s) => Some(s),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(v) = if_match
            && current.as_ref().map(|c| c.version) != Some(v)
        {
            return Err(PaymentsError::PreconditionFailed);
        }
        let sealed_secret_key = match (&input.secret_key, &current) {
            (Some(k), _) => self
                .master
                .seal(&seal_context(tenant, provider, "secret_key"), k.as_bytes()),
            (None, Some(c)) => c.sealed_secret_key.clone(),
            (None, None) => Vec::new(),
        };
        let sealed_webhook_secrets = match (&input.webhook_secrets, &current) {
            (Some(w), _) => self.master.seal(
                &seal_context(tenant, provider, "webhook_secrets"),
                w.join("\n").as_bytes(),
            ),
            (None, Some(c)) => c.sealed_webhook_secrets.clone(),
            (None, None) => Vec::new(),
        };
        if input.enabled && (sealed_secret_key.is_empty() || sealed_webhook_secrets.is_empty()) {
            return Err(invalid(
                "/enabled",
                "an enabled provider needs its secret_key and webhook_secrets",
            ));
        }
        let settings = ProviderSettings {
            tenant_id: tenant,
            provider,
            enabled: input.enabled,
            capture: input.capture,
            sealed_secret_key,
            sealed_webhook_secrets,
            created_at: current.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
            version: current.as_ref().map_or(1, |c| c.version + 1),
        };
        // The event names what changed, never a secret.
        let changed = event(
            tenant,
            "payment_provider.updated",
            &serde_json::json!({
                "provider": provider.as_str(),
                "enabled": input.enabled,
                "capture": input.capture.as_str(),
                "secret_key_changed": input.secret_key.is_some(),
                "webhook_secrets_changed": input.webhook_secrets.is_some(),
            }),
            now,
        )?;
        match self
            .payments
            .save_provider(
                &settings,
                current.as_ref().map(|c| c.version),
                std::slice::from_ref(&changed),
            )
            .await
        {
            Ok(()) => Ok(self.view(&settings)),
            Err(e)
                if e.is_conflict_on(PROVIDER_EXISTS)
                    || e.is_conflict_on(PROVIDER_VERSION_CONFLICT) =>
            {
                Err(PaymentsError::PreconditionFailed)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn enabled(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderSettings, PaymentsError> {
        match self.payments.get_provider(tenant, provider).await {
            Ok(s) if s.enabled => Ok(s),
            Ok(_) | Err(StoreError::NotFound) => {
                Err(PaymentsError::NotConfigured(provider.as_str()))
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- the storefront's payment session -------------------------------------------------

    /// The order's payment session with the shop's provider, for the shopper's browser: made
    /// once per order (the provider's idempotency key is the order's id, so a retry after a
    /// lost answer finds the same payment), for exactly the order's total.
    pub async fn open_session(
        &self,
        tenant: TenantId,
        order_id: OrderId,
        access: &ShopperAccess,
    ) -> Result<SessionView, PaymentsError> {
        let order = self.orders.shopper_order(tenant, order_id, access).await?;
        let now = self.clock.now();
        if order.status != OrderStatus::PendingPayment
            || order.payment_status != PaymentStatus::Unpaid
            || now >= order.expires_at
        {
            return Err(OrderError::NotPayable(order.status.as_str()).into());
        }
        let kind = ProviderKind::Stripe;
        let settings = self.enabled(tenant, kind).await?;
        let provider = self.provider(kind)?;
        let secret = self.secret_key(&settings)?;
        let sessions = self
            .payments
            .sessions_of_order(tenant, order.id.as_uuid())
            .await?;
        if let Some(open) = sessions
            .into_iter()
            .find(|s| s.provider == kind && !s.status.is_final())
        {
            let at_provider = provider.retrieve(&secret, &open.provider_ref).await?;
            return Ok(SessionView {
                session: open,
                client_secret: at_provider.client_secret,
            });
        }
        let amount = Amount {
            minor: order.totals.total,
            currency: order.currency,
        };
        let key = format!("keel_session_{}", order.id);
        let order_ref = order.id.to_string();
        let tenant_ref = tenant.to_string();
        let created = provider
            .create(
                &secret,
                &NewPayment {
                    idempotency_key: &key,
                    amount,
                    capture: settings.capture,
                    order_reference: &order_ref,
                    tenant_reference: &tenant_ref,
                },
            )
            .await?;
        if created.amount != amount {
            // The provider must charge exactly what was asked; anything else is not this
            // order's payment, and nothing is recorded.
            return Err(PaymentsError::Internal(
                "the provider created a payment of another amount".into(),
            ));
        }
        let session = PaymentSession {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            order_id: order.id.as_uuid(),
            provider: kind,
            provider_ref: created.id.clone(),
            amount,
            status: SessionStatus::Open,
            next_check_at: now + self.settings.reconcile_after,
            created_at: now,
            updated_at: now,
        };
        let opened = event(
            tenant,
            "payment.session_created",
            &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": kind.as_str(), "amount": amount.minor, "currency": amount.currency}),
            now,
        )?;
        match self
            .payments
            .create_session(&session, std::slice::from_ref(&opened))
            .await
        {
            Ok(()) => Ok(SessionView {
                session,
                client_secret: created.client_secret,
            }),
            Err(StoreError::Conflict { .. }) => {
                self.lost_race(tenant, order.id, provider, &secret, created)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A concurrent request for the same order stored its session first (with Stripe, the
    /// same payment: same key). A provider that ignores keys made a second one, which is
    /// cancelled: the order has one session, and the shopper confirms that one.
    async fn lost_race(
        &self,
        tenant: TenantId,
        order: OrderId,
        provider: &Arc<dyn PaymentProvider>,
        secret: &ProviderSecret,
        created: crate::ports::ProviderPayment,
    ) -> Result<SessionView, PaymentsError> {
        let stored = self
            .payments
            .open_session_of(tenant, order.as_uuid(), provider.kind())
            .await?
            .ok_or(PaymentsError::Contended)?;
        if stored.provider_ref == created.id {
            return Ok(SessionView {
                session: stored,
                client_secret: created.client_secret,
            });
        }
        let cancel_key = format!("keel_cancel_{}", created.id);
        if let Err(e) = provider.cancel(secret, &created.id, &cancel_key).await {
            tracing::warn!(error = %e, "a second payment made for one order could not be cancelled");
        }
        let at_provider = provider.retrieve(secret, &stored.provider_ref).await?;
        Ok(SessionView {
            session: stored,
            client_secret: at_provider.client_secret,
        })
    }

    // ---- webhooks (the inbox) -------------------------------------------------------------

    /// A provider's webhook for one shop: verified with the shop's signing secrets, stored
    /// once, its effect applied in the same transaction. `Signature` (nothing stored) for a
    /// shop without the provider, a bad or stale signature, or a body that is not an event.
    pub async fn receive_webhook(
        &self,
        tenant: TenantId,
        kind: ProviderKind,
        signature: &str,
        body: &[u8],
    ) -> Result<WebhookOutcome, PaymentsError> {
        // Every refusal reads the same to the caller: no answer tells which shops take
        // payments with the provider.
        let refused = PaymentsError::Signature("the signature does not verify");
        let settings = match self.payments.get_provider(tenant, kind).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Err(refused),
            Err(e) => return Err(e.into()),
        };
        let secrets = match self.webhook_secrets(&settings) {
            Ok(s) if !s.is_empty() => s,
            _ => return Err(refused),
        };
        let keys: Vec<&[u8]> = secrets.iter().map(String::as_bytes).collect();
        let now = self.clock.now();
        if let Err(e) = verify(signature, body, &keys, now, self.settings.webhook_tolerance) {
            let why = match e {
                SignatureError::Stale => "stale timestamp",
                SignatureError::Malformed => "malformed signature header",
                SignatureError::Mismatch => "signature mismatch",
            };
            tracing::info!(%tenant, why, "a provider webhook was refused");
            return Err(refused);
        }
        let provider = self.provider(kind)?;
        let event = provider.parse_event(body).map_err(|_| refused)?;
        self.apply_event(tenant, kind, &event, &event.id, now).await
    }

    /// Applies a provider event (from a webhook, or reconciliation's reading) exactly once:
    /// `inbox_id` is stored with the effect, and a repeat finds it and changes nothing.
    async fn apply_event(
        &self,
        tenant: TenantId,
        kind: ProviderKind,
        event: &ProviderEvent,
        inbox_id: &str,
        now: OffsetDateTime,
    ) -> Result<WebhookOutcome, PaymentsError> {
        let inbox = Inbox {
            provider: kind,
            event_id: inbox_id,
            event_type: event_type(event),
            at: now,
        };
        let payment_id = match &event.kind {
            EventKind::PaymentSucceeded { payment_id, .. }
            | EventKind::PaymentFailed { payment_id }
            | EventKind::Refunded { payment_id, .. } => Some(payment_id.as_str()),
            EventKind::Other { .. } => None,
        };
        // The shop and the order come from Keel's own session of this payment, never from
        // what the event carries: an event for a payment Keel did not make is stored only.
        let session = match payment_id {
            Some(id) => match self.payments.session_by_ref(tenant, kind, id).await {
                Ok(s) => Some(s),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let Some(session) = session else {
            let applied = self.store_only(tenant, inbox).await?;
            return Ok(WebhookOutcome {
                repeat: applied == Applied::Repeat,
                refunds: Vec::new(),
            });
        };
        for _ in 0..SAVE_ATTEMPTS {
            let order = self
                .order_store
                .get_order(tenant, OrderId::from_uuid(session.order_id))
                .await?;
            let order_id = order.id;
            let known = self.known_refunded(&session, &event.kind, order_id).await?;
            let plan = match plan(&session, order, &event.kind, known, now) {
                Ok(p) => p,
                // The event can never apply to the order as it stands (e.g. a refund at the
                // provider larger than what is left): stored, shown to staff, answered 2xx so
                // the provider stops sending it.
                Err(PaymentsError::Order(e)) => {
                    return self.unapplied(&session, order_id, inbox, &e, now).await;
                }
                Err(e) => return Err(e),
            };
            let effect = Effect {
                tenant,
                inbox: Some(inbox),
                session: plan.session,
                order: plan.order.as_ref().map(|(o, v)| OrderChange {
                    order: o,
                    expected_version: *v,
                    stock: &[],
                    give_back: false,
                    receipt: None,
                }),
                refunds: &plan.refunds,
                events: &plan.events,
            };
            match self.payments.apply(&effect).await {
                Ok(Applied::Done) => {
                    return Ok(WebhookOutcome {
                        repeat: false,
                        refunds: plan
                            .refunds
                            .into_iter()
                            .filter(|t| t.status == RefundTaskStatus::Pending)
                            .collect(),
                    });
                }
                Ok(Applied::Repeat) => {
                    return Ok(WebhookOutcome {
                        repeat: true,
                        refunds: Vec::new(),
                    });
                }
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// What Keel asked this payment's provider to refund so far, for a `charge.refunded`
    /// (which reports the payment's total, refunds made at the provider included).
    async fn known_refunded(
        &self,
        session: &PaymentSession,
        kind: &EventKind,
        order: OrderId,
    ) -> Result<i64, PaymentsError> {
        if !matches!(kind, EventKind::Refunded { .. }) {
            return Ok(0);
        }
        Ok(self
            .payments
            .refunds_of_order(session.tenant_id, order)
            .await?
            .iter()
            .filter(|t| {
                t.payment_ref == session.provider_ref && t.status != RefundTaskStatus::Failed
            })
            .map(|t| t.amount.minor)
            .sum())
    }

    /// An event that can never apply to the order as it stands (e.g. a refund at the
    /// provider larger than what is left): stored, shown to staff (`payment.unapplied`),
    /// answered 2xx so the provider stops sending it.
    async fn unapplied(
        &self,
        session: &PaymentSession,
        order: OrderId,
        inbox: Inbox<'_>,
        why: &OrderError,
        now: OffsetDateTime,
    ) -> Result<WebhookOutcome, PaymentsError> {
        let tenant = session.tenant_id;
        let unapplied = event(
            tenant,
            "payment.unapplied",
            &serde_json::json!({"order_id": order, "session_id": session.id, "event_type": inbox.event_type, "code": why.code()}),
            now,
        )?;
        let applied = self
            .payments
            .apply(&Effect {
                tenant,
                inbox: Some(inbox),
                session: None,
                order: None,
                refunds: &[],
                events: std::slice::from_ref(&unapplied),
            })
            .await?;
        Ok(WebhookOutcome {
            repeat: applied == Applied::Repeat,
            refunds: Vec::new(),
        })
    }

    async fn store_only(
        &self,
        tenant: TenantId,
        inbox: Inbox<'_>,
    ) -> Result<Applied, PaymentsError> {
        Ok(self
            .payments
            .apply(&Effect {
                tenant,
                inbox: Some(inbox),
                session: None,
                order: None,
                refunds: &[],
                events: &[],
            })
            .await?)
    }

    // ---- reconciliation -------------------------------------------------------------------

    /// One reconciliation pass: asks the provider about up to `batch` sessions due for a
    /// check, applies a final answer as the webhook would (exactly once), cancels the
    /// payment of an order that closed unpaid, and sets the next check of the rest.
    pub async fn reconcile(&self, batch: i64) -> Result<PassReport, PaymentsError> {
        let now = self.clock.now();
        let due = self.payments.due_sessions(now, batch).await?;
        let mut report = PassReport::default();
        for session in due {
            report.checked += 1;
            match self.reconcile_one(&session, now).await {
                Ok(true) => report.settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %session.id, error = %e, "reconciliation could not settle a payment session; it is asked again later");
                }
            }
            // Asked once per interval whatever the answer; a settled session is no longer due.
            let next = now + self.settings.reconcile_every;
            self.payments
                .reschedule_session(session.tenant_id, session.id, next)
                .await?;
        }
        Ok(report)
    }

    async fn reconcile_one(
        &self,
        session: &PaymentSession,
        now: OffsetDateTime,
    ) -> Result<bool, PaymentsError> {
        let tenant = session.tenant_id;
        let settings = self.payments.get_provider(tenant, session.provider).await?;
        let provider = self.provider(session.provider)?;
        let secret = self.secret_key(&settings)?;
        let at_provider = provider.retrieve(&secret, &session.provider_ref).await?;
        let kind = match at_provider.status {
            // What the provider took, not what was asked: a partial capture is a mismatch.
            SessionStatus::Succeeded => EventKind::PaymentSucceeded {
                payment_id: session.provider_ref.clone(),
                amount: Amount {
                    minor: at_provider.received,
                    currency: at_provider.amount.currency,
                },
                order_reference: None,
                tenant_reference: None,
            },
            SessionStatus::Failed if session.status != SessionStatus::Failed => {
                EventKind::PaymentFailed {
                    payment_id: session.provider_ref.clone(),
                }
            }
            SessionStatus::Canceled => {
                self.close_session(session, SessionStatus::Canceled, now)
                    .await?;
                return Ok(true);
            }
            SessionStatus::Open | SessionStatus::Failed => {
                // Nothing paid yet: an order that closed meanwhile will never be paid, so its
                // payment is cancelled at the provider (a refusal means it succeeded since:
                // the next check sees that and compensates).
                let order = self
                    .order_store
                    .get_order(tenant, OrderId::from_uuid(session.order_id))
                    .await?;
                // No longer waiting for this payment (cancelled, expired, or paid another
                // way): a payment made now would only be refunded.
                let payable = order.status == OrderStatus::PendingPayment
                    && order.payment_status == PaymentStatus::Unpaid;
                if !payable {
                    let key = format!("keel_cancel_{}", session.id);
                    provider
                        .cancel(&secret, &session.provider_ref, &key)
                        .await?;
                    self.close_session(session, SessionStatus::Canceled, now)
                        .await?;
                    return Ok(true);
                }
                return Ok(false);
            }
        };
        // One inbox row per final answer read by reconciliation: the webhook's own event,
        // arriving later, finds the order already settled and changes nothing.
        let id = format!("reconcile:{}:{}", session.provider_ref, status_word(&kind));
        let outcome = self
            .apply_event(
                tenant,
                session.provider,
                &ProviderEvent {
                    id: id.clone(),
                    kind,
                },
                &id,
                now,
            )
            .await?;
        for task in outcome.refunds {
            self.run_refund(&task).await?;
        }
        Ok(true)
    }

    async fn close_session(
        &self,
        session: &PaymentSession,
        status: SessionStatus,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let closed = event(
            session.tenant_id,
            "payment.canceled",
            &serde_json::json!({"order_id": OrderId::from_uuid(session.order_id), "session_id": session.id}),
            now,
        )?;
        self.payments
            .apply(&Effect {
                tenant: session.tenant_id,
                inbox: None,
                session: Some(SessionChange {
                    id: session.id,
                    status,
                    next_check_at: session.next_check_at,
                    updated_at: now,
                }),
                order: None,
                refunds: &[],
                events: std::slice::from_ref(&closed),
            })
            .await?;
        Ok(())
    }

    // ---- refunds through the provider -----------------------------------------------------

    /// A staff refund. An order paid through a provider is refunded there: the refund is
    /// recorded `pending` with its task (and the request's answer) in one transaction, so two
    /// refunds can never together pass what was captured, then the provider is asked with the
    /// refund's own idempotency key; its answer settles the refund (`order.refunded`, or
    /// `refund.failed` giving the amount back), at once or by the retry job.
    pub async fn refund(
        &self,
        tenant: TenantId,
        id: OrderId,
        request: &RefundRequest,
        reason: Option<String>,
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, PaymentsError> {
        let (order, tasks) = self
            .change_with_refunds(tenant, id, if_match, receipt, |order, now| {
                let r = order.refund(request, reason.clone(), now)?;
                Ok((Vec::new(), vec![r], Vec::new()))
            })
            .await?;
        self.run_refunds_now(&tasks).await;
        Ok(order)
    }

    /// Cancels an order: its held stock is released and what is left of its payment is
    /// refunded (through its provider, as [`Self::refund`]).
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: OrderId,
        reason: &str,
        if_match: Option<i64>,
    ) -> Result<Order, PaymentsError> {
        if reason.chars().count() > 500 {
            return Err(invalid("/reason", "must be at most 500 characters"));
        }
        let (order, tasks) = self
            .change_with_refunds(tenant, id, if_match, None, |order, now| {
                let (moves, refund) = order.cancel(reason, now)?;
                let cancelled = event(
                    tenant,
                    "order.cancelled",
                    &serde_json::json!({"order_id": order.id, "reason": reason}),
                    now,
                )?;
                Ok((
                    moves.into_iter().map(StockChange::Release).collect(),
                    refund.into_iter().collect(),
                    vec![cancelled],
                ))
            })
            .await?;
        self.run_refunds_now(&tasks).await;
        Ok(order)
    }

    /// Tries the provider at once for refunds just recorded; what it cannot do now stays
    /// pending for the retry job (the staff's answer already says `pending`).
    async fn run_refunds_now(&self, tasks: &[RefundTask]) {
        for task in tasks {
            if let Err(e) = self.run_refund(task).await {
                tracing::warn!(refund = %task.id, error = %e, "a refund at the provider is pending; the retry job tries again");
            }
        }
    }

    /// Changes an order and records its new refunds: a refund of a provider's payment
    /// becomes a task; a manual one is done (`order.refunded`) at once.
    async fn change_with_refunds<F>(
        &self,
        tenant: TenantId,
        id: OrderId,
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
        mut change: F,
    ) -> Result<(Order, Vec<RefundTask>), PaymentsError>
    where
        F: FnMut(
            &mut Order,
            OffsetDateTime,
        ) -> Result<
            (
                Vec<StockChange>,
                Vec<keel_orders::order::Refund>,
                Vec<NewEvent>,
            ),
            PaymentsError,
        >,
    {
        for _ in 0..SAVE_ATTEMPTS {
            let mut order = self.order_store.get_order(tenant, id).await?;
            let read = order.version;
            if if_match.is_some_and(|v| v != read) {
                return Err(PaymentsError::PreconditionFailed);
            }
            let now = self.clock.now();
            let unpaid = order.status == OrderStatus::PendingPayment
                && order.payment_status == PaymentStatus::Unpaid;
            let (mut stock, refunds, mut events) = change(&mut order, now)?;
            stock.sort_by_key(StockChange::lock_key);
            let mut tasks = Vec::new();
            for r in &refunds {
                if r.status == RefundStatus::Pending {
                    let task = refund_task(&order, r, now)?;
                    events.push(event(tenant, "refund.requested", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency, "provider": task.provider.as_str()}), now)?);
                    tasks.push(task);
                } else {
                    events.push(event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency}), now)?);
                }
            }
            let give_back =
                unpaid && order.status == OrderStatus::Cancelled && order.promotion_id.is_some();
            let effect = Effect {
                tenant,
                inbox: None,
                session: None,
                order: Some(OrderChange {
                    order: &order,
                    expected_version: read,
                    stock: &stock,
                    give_back,
                    receipt,
                }),
                refunds: &tasks,
                events: &events,
            };
            match self.payments.apply(&effect).await {
                Ok(_) => return Ok((order, tasks)),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) && if_match.is_none() => {}
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    return Err(PaymentsError::PreconditionFailed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// Asks the provider to make a pending refund (the same idempotency key every time) and
    /// settles it by the answer: done, refused (its amount goes back to the order), or not
    /// answered (tried again after `refund_retry`). Answers whether it settled.
    pub async fn run_refund(&self, task: &RefundTask) -> Result<bool, PaymentsError> {
        let tenant = task.tenant_id;
        let settings = self.payments.get_provider(tenant, task.provider).await?;
        let provider = self.provider(task.provider)?;
        let secret = self.secret_key(&settings)?;
        let key = format!("keel_refund_{}", task.id);
        let answer = match &task.provider_ref {
            // Made already (the provider answered `pending`): asked about by its id, never
            // made a second time (the provider forgets idempotency keys after a day).
            Some(id) => provider.retrieve_refund(&secret, id).await,
            None => {
                provider
                    .refund(&secret, &task.payment_ref, task.amount, &key)
                    .await
            }
        };
        let now = self.clock.now();
        let (succeeded, provider_ref, failure) = match answer {
            Ok(r) => match r.status {
                RefundOutcome::Succeeded => (true, Some(r.id), None),
                RefundOutcome::Failed => (false, Some(r.id), Some("refund_failed".to_owned())),
                RefundOutcome::Pending => {
                    self.retry_later(task, Some(r.id), now).await?;
                    return Ok(false);
                }
            },
            Err(ProviderError::Unavailable { .. }) => {
                self.retry_later(task, task.provider_ref.clone(), now)
                    .await?;
                return Ok(false);
            }
            // A refund made that its provider no longer finds: never made again, left to
            // staff (it stays pending, asked about on every retry).
            Err(ProviderError::Refused { code, .. }) if task.provider_ref.is_some() => {
                tracing::warn!(refund = %task.id, code, "the provider does not find a refund it made");
                self.retry_later(task, task.provider_ref.clone(), now)
                    .await?;
                return Ok(false);
            }
            Err(ProviderError::Refused { code, .. }) => (false, None, Some(code)),
        };
        for _ in 0..SAVE_ATTEMPTS {
            let mut order = self.order_store.get_order(tenant, task.order_id).await?;
            let read = order.version;
            if !order.settle_refund(task.id, succeeded, now)? {
                return Ok(true);
            }
            let mut done = task.clone();
            done.status = if succeeded {
                RefundTaskStatus::Succeeded
            } else {
                RefundTaskStatus::Failed
            };
            done.provider_ref.clone_from(&provider_ref);
            done.failure.clone_from(&failure);
            done.attempts += 1;
            done.updated_at = now;
            let payload = serde_json::json!({"order_id": order.id, "refund_id": task.id, "amount": task.amount.minor, "currency": task.amount.currency, "provider": task.provider.as_str(), "code": failure});
            let e = if succeeded {
                event(tenant, "order.refunded", &payload, now)?
            } else {
                event(tenant, "refund.failed", &payload, now)?
            };
            let effect = Effect {
                tenant,
                inbox: None,
                session: None,
                order: Some(OrderChange {
                    order: &order,
                    expected_version: read,
                    stock: &[],
                    give_back: false,
                    receipt: None,
                }),
                refunds: std::slice::from_ref(&done),
                events: std::slice::from_ref(&e),
            };
            match self.payments.apply(&effect).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// Leaves a refund pending, asked about again after `refund_retry`, with the provider's id
    /// of it once known.
    async fn retry_later(
        &self,
        task: &RefundTask,
        provider_ref: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let later = RefundTask {
            provider_ref,
            attempts: task.attempts + 1,
            next_attempt_at: now + self.settings.refund_retry,
            updated_at: now,
            ..task.clone()
        };
        self.payments
            .apply(&Effect {
                tenant: task.tenant_id,
                inbox: None,
                session: None,
                order: None,
                refunds: std::slice::from_ref(&later),
                events: &[],
            })
            .await?;
        Ok(())
    }

    /// One pass of the refund retry job over up to `batch` due refunds.
    pub async fn retry_refunds(&self, batch: i64) -> Result<PassReport, PaymentsError> {
        let now = self.clock.now();
        let due = self.payments.due_refunds(now, batch).await?;
        let mut report = PassReport::default();
        for task in due {
            report.refunds_tried += 1;
            match self.run_refund(&task).await {
                Ok(true) => report.refunds_settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(refund = %task.id, error = %e, "a refund at the provider could not be settled; tried again later");
                    // Not due again before its retry time, whatever failed.
                    self.retry_later(&task, task.provider_ref.clone(), now)
                        .await?;
                }
            }
        }
        Ok(report)
    }

    /// An order's refunds at the provider.
    pub async fn refunds_of_order(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RefundTask>, PaymentsError> {
        Ok(self.payments.refunds_of_order(tenant, id).await?)
    }

    /// An order's payment sessions.
    pub async fn sessions_of_order(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<PaymentSession>, PaymentsError> {
        Ok(self
            .payments
            .sessions_of_order(tenant, id.as_uuid())
            .await?)
    }
}

fn event_type(event: &ProviderEvent) -> &str {
    match &event.kind {
        EventKind::PaymentSucceeded { .. } => "payment_intent.succeeded",
        EventKind::PaymentFailed { .. } => "payment_intent.payment_failed",
        EventKind::Refunded { .. } => "charge.refunded",
        EventKind::Other { event_type } => event_type,
    }
}

fn status_word(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::PaymentSucceeded { .. } => "succeeded",
        EventKind::PaymentFailed { .. } => "failed",
        EventKind::Refunded { .. } => "refunded",
        EventKind::Other { .. } => "other",
    }
}

/// The task of a pending refund of the order's paying payment: back the way it came.
fn refund_task(
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
fn refund_of(
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

/// What one provider event does to a session and its order.
struct Plan {
    session: Option<SessionChange>,
    order: Option<(Order, i64)>,
    refunds: Vec<RefundTask>,
    events: Vec<NewEvent>,
}

fn standing(order: &Order, provider: ProviderKind, payment_id: &str) -> OrderStanding {
    if order.payment_by(provider.as_str(), payment_id).is_some() {
        OrderStanding::Recorded
    } else if order.status == OrderStatus::PendingPayment
        && order.payment_status == PaymentStatus::Unpaid
    {
        OrderStanding::Payable {
            outstanding: Amount {
                minor: order.totals.total,
                currency: order.currency,
            },
        }
    } else if order.status == OrderStatus::Cancelled {
        OrderStanding::Closed
    } else {
        OrderStanding::Paid
    }
}

fn plan(
    session: &PaymentSession,
    mut order: Order,
    kind: &EventKind,
    known_refunded: i64,
    now: OffsetDateTime,
) -> Result<Plan, PaymentsError> {
    let tenant = session.tenant_id;
    let read = order.version;
    let provider = session.provider;
    let settle = |status| SessionChange {
        id: session.id,
        status,
        next_check_at: session.next_check_at,
        updated_at: now,
    };
    let mut out = Plan {
        session: None,
        order: None,
        refunds: Vec::new(),
        events: Vec::new(),
    };
    match kind {
        EventKind::PaymentSucceeded { amount, .. } => {
            out.session = Some(settle(SessionStatus::Succeeded));
            match on_succeeded(standing(&order, provider, &session.provider_ref), *amount) {
                OnSucceeded::MarkPaid => {
                    let payment = order
                        .pay(
                            provider.as_str(),
                            amount.minor,
                            session.provider_ref.clone(),
                            now,
                        )?
                        .clone();
                    out.events.push(event(tenant, "order.paid", &serde_json::json!({"order_id": order.id, "payment_id": payment.id, "provider": provider.as_str(), "amount": payment.amount, "currency": order.currency}), now)?);
                    out.order = Some((order, read));
                }
                OnSucceeded::Mismatch { expected, reported } => {
                    out.events.push(event(tenant, "payment.mismatch", &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": provider.as_str(), "expected": {"amount": expected.minor, "currency": expected.currency}, "reported": {"amount": reported.minor, "currency": reported.currency}}), now)?);
                }
                OnSucceeded::Refund { amount } => {
                    let refund = order.compensate(
                        provider.as_str(),
                        amount.minor,
                        session.provider_ref.clone(),
                        now,
                    )?;
                    let task = refund_of(&order, &refund, provider, &session.provider_ref, now);
                    out.events.push(event(tenant, "payment.compensation_started", &serde_json::json!({"order_id": order.id, "session_id": session.id, "refund_id": refund.id, "provider": provider.as_str(), "amount": amount.minor, "currency": amount.currency}), now)?);
                    out.refunds.push(task);
                    out.order = Some((order, read));
                }
                OnSucceeded::AlreadyApplied => {}
            }
        }
        EventKind::PaymentFailed { .. } => {
            if !session.status.is_final() {
                out.session = Some(settle(SessionStatus::Failed));
                out.events.push(event(tenant, "payment.failed", &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": provider.as_str()}), now)?);
            }
        }
        EventKind::Refunded {
            amount_refunded, ..
        } => {
            // Refunds Keel asked of this payment are its tasks (pending or done); more at the
            // provider was refunded there directly (its dashboard): recorded as done, against
            // the payment that paid the order only.
            let more = amount_refunded.minor - known_refunded;
            let paying = order.paying_payment().is_some_and(|p| {
                p.provider == provider.as_str() && p.provider_reference == session.provider_ref
            });
            if amount_refunded.currency == order.currency && more > 0 && paying {
                let refund = order.refund(
                    &RefundRequest::Amount(more),
                    Some("refunded at the provider".into()),
                    now,
                )?;
                order.settle_refund(refund.id, true, now)?;
                let mut task = refund_task(&order, &refund, now)?;
                task.status = RefundTaskStatus::Succeeded;
                out.events.push(event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": refund.id, "amount": refund.amount, "currency": order.currency, "provider": provider.as_str()}), now)?);
                out.refunds.push(task);
                out.order = Some((order, read));
            }
        }
        EventKind::Other { .. } => {}
    }
    Ok(out)
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
