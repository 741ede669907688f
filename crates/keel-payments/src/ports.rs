//! The payment provider port. Each call names Keel's own idempotency key, derived from
//! Keel's ids (the order, the refund), so a retry after a lost answer can never charge or
//! refund twice.

use std::fmt;

use async_trait::async_trait;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use keel_orders::{
    order::{Order, OrderId, RefundId},
    ports::{OrderReceipt, StockChange},
};

use crate::domain::{Amount, CaptureMode, ProviderKind, SessionStatus};

/// The constraint a second settings row for the same shop and provider violates.
pub const PROVIDER_EXISTS: &str = "payment_providers_pkey";

/// The constraint a second session without a final answer for the same order and provider
/// violates (two requests racing to open one).
pub const ONE_OPEN_SESSION: &str = "payment_sessions_one_open";

/// A settings change made against a version that is no longer current.
pub const PROVIDER_VERSION_CONFLICT: &str = "payment_providers_version";

/// A shop's settings for one provider, as stored. Its secrets are sealed with the master key,
/// bound to the shop and the provider: the store never holds them readable.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    pub tenant_id: TenantId,
    pub provider: ProviderKind,
    pub enabled: bool,
    pub capture: CaptureMode,
    /// The API secret key (`sk_...`), sealed.
    pub sealed_secret_key: Vec<u8>,
    /// The webhook signing secrets (one or more, for rotation), sealed together.
    pub sealed_webhook_secrets: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("tenant_id", &self.tenant_id)
            .field("provider", &self.provider)
            .field("enabled", &self.enabled)
            .field("capture", &self.capture)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One payment session: the provider's payment made for an order, and what the provider
/// last said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSession {
    pub id: Uuid,
    pub tenant_id: TenantId,
    /// The order's id (`keel-orders`).
    pub order_id: Uuid,
    pub provider: ProviderKind,
    /// The provider's id of the payment (`pi_...`).
    pub provider_ref: String,
    pub amount: Amount,
    pub status: SessionStatus,
    /// When reconciliation asks the provider about it next (while it has no final answer).
    pub next_check_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Where a refund at the provider stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundTaskStatus {
    /// Not yet answered by the provider: retried with the same idempotency key.
    Pending,
    Succeeded,
    /// Refused by the provider: the order's refund failed and its amounts went back.
    Failed,
}

impl RefundTaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A refund to make at the provider, recorded with the order's pending refund (same id) and
/// tried until the provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTask {
    pub tenant_id: TenantId,
    /// The order's refund id: the provider's idempotency key is derived from it.
    pub id: RefundId,
    pub order_id: OrderId,
    pub provider: ProviderKind,
    /// The provider's id of the payment refunded.
    pub payment_ref: String,
    pub amount: Amount,
    pub status: RefundTaskStatus,
    /// The provider's id of the refund, once made.
    pub provider_ref: Option<String>,
    /// The provider's refusal, for staff.
    pub failure: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A provider event stored in the inbox, once.
#[derive(Debug, Clone, Copy)]
pub struct Inbox<'a> {
    pub provider: ProviderKind,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub at: OffsetDateTime,
}

/// A session's new standing.
#[derive(Debug, Clone, Copy)]
pub struct SessionChange {
    pub id: Uuid,
    pub status: SessionStatus,
    pub next_check_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An order saved over the version it was read at (a version conflict writes nothing).
#[derive(Debug, Clone, Copy)]
pub struct OrderChange<'a> {
    pub order: &'a Order,
    pub expected_version: i64,
    pub stock: &'a [StockChange],
    /// Give the order's promotion use back (an unpaid order cancelled).
    pub give_back: bool,
    /// The idempotent request's answer, stored with the change.
    pub receipt: Option<&'a OrderReceipt>,
}

/// Everything one provider answer (or staff action) changes, written in one transaction:
/// the inbox row, the session, the order, the refund tasks (inserted or replaced) and the
/// events. With an inbox row already there nothing else is written ([`Applied::Repeat`]).
#[derive(Debug, Clone, Copy)]
pub struct Effect<'a> {
    pub tenant: TenantId,
    pub inbox: Option<Inbox<'a>>,
    pub session: Option<SessionChange>,
    pub order: Option<OrderChange<'a>>,
    pub refunds: &'a [RefundTask],
    pub events: &'a [NewEvent],
}

impl Effect<'_> {
    /// An effect that writes nothing yet, for struct update: `Effect { refunds, ..Effect::none(t) }`.
    pub const fn none(tenant: TenantId) -> Self {
        Self {
            tenant,
            inbox: None,
            session: None,
            order: None,
            refunds: &[],
            events: &[],
        }
    }
}

/// What [`PaymentStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The provider event was stored before: nothing written.
    Repeat,
}

/// Payments storage: each method one atomic step, its events written with it.
#[async_trait]
pub trait PaymentStore: Send + Sync + fmt::Debug {
    /// Writes a shop's settings for a provider: a new row when `expected_version` is `None`
    /// (`Conflict { PROVIDER_EXISTS }` if there is one), else a replacement only at that
    /// version (`Conflict { PROVIDER_VERSION_CONFLICT }`), which keeps `created_at` and
    /// stores the version one past `expected_version`.
    async fn save_provider(
        &self,
        settings: &ProviderSettings,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn get_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderSettings, StoreError>;
    /// The shop's providers, by name.
    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderSettings>, StoreError>;
    async fn create_session(
        &self,
        session: &PaymentSession,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// The session of a provider's payment in one shop (`NotFound` in any other).
    async fn session_by_ref(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        provider_ref: &str,
    ) -> Result<PaymentSession, StoreError>;
    /// The order's session with `provider` that has no final answer yet, as every write
    /// before this call left it, including a racing one that stored it first (after a
    /// `ONE_OPEN_SESSION` conflict).
    async fn open_session_of(
        &self,
        tenant: TenantId,
        order_id: Uuid,
        provider: ProviderKind,
    ) -> Result<Option<PaymentSession>, StoreError>;
    /// An order's sessions, oldest first.
    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError>;
    /// Sessions without a final answer due for a check at `now` (`next_check_at` passed),
    /// soonest first, at most `limit`, across shops (reconciliation asks the provider).
    async fn due_sessions(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError>;
    /// Moves a session's next check (reconciliation asked and heard no final answer).
    async fn reschedule_session(
        &self,
        tenant: TenantId,
        id: Uuid,
        next_check_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Writes an [`Effect`] in one transaction; `Conflict { VERSION_CONFLICT }` (orders) and
    /// nothing written when the order changed since it was read.
    async fn apply(&self, effect: &Effect<'_>) -> Result<Applied, StoreError>;
    /// Pending refunds due at `now`, soonest first, at most `limit`, across shops.
    async fn due_refunds(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<RefundTask>, StoreError>;
    /// An order's refunds at the provider, oldest first.
    async fn refunds_of_order(
        &self,
        tenant: TenantId,
        order_id: OrderId,
    ) -> Result<Vec<RefundTask>, StoreError>;
}

/// A shop's secret API key at the provider (`sk_...`). Never logged, never returned by the
/// API, sealed at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSecret(String);

impl ProviderSecret {
    pub fn new(key: String) -> Self {
        Self(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSecret(..)")
    }
}

/// A payment to create: the order's exact outstanding amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment<'a> {
    /// Keel's key for this creation (the same for every retry of it).
    pub idempotency_key: &'a str,
    pub amount: Amount,
    pub capture: CaptureMode,
    /// Keel's order id, stored by the provider with the payment (its metadata).
    pub order_reference: &'a str,
    /// Keel's shop id, likewise: the provider's webhook names the shop it concerns.
    pub tenant_reference: &'a str,
}

/// A payment as the provider reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    /// The provider's id (`pi_...`).
    pub id: String,
    pub status: SessionStatus,
    pub amount: Amount,
    /// What the provider has taken so far (captured), in the same currency.
    pub received: i64,
    /// What the shopper's browser needs to confirm the payment with the provider.
    pub client_secret: Option<String>,
}

impl fmt::Debug for ProviderPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderPayment")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("amount", &self.amount)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// A refund as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    /// The provider's id (`re_...`).
    pub id: String,
    pub amount: Amount,
    pub status: RefundOutcome,
}

/// Where the provider says a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money is on its way back.
    Succeeded,
    /// Made, not finished (e.g. the account's balance must cover it first): asked about
    /// again by its id, never made a second time.
    Pending,
    /// Failed or cancelled at the provider: the money stays with the shop.
    Failed,
}

/// Why a provider call did not answer as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or is unwell (its circuit is open, its calls are all
    /// in flight, or it kept failing): nothing is known to have happened; try again later.
    #[error("the payment provider is unavailable")]
    Unavailable { retry_after_ms: Option<u64> },
    /// The provider refused the request (a 4xx): its code and message, for staff.
    #[error("the payment provider refused the request: {code}")]
    Refused { code: String, message: String },
}

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + fmt::Debug {
    fn kind(&self) -> ProviderKind;

    /// Reads a webhook's body (already verified) as an event.
    fn parse_event(&self, body: &[u8]) -> Result<crate::domain::ProviderEvent, ProviderError>;

    /// Creates the payment for an order (idempotent by `idempotency_key`).
    async fn create(
        &self,
        secret: &ProviderSecret,
        payment: &NewPayment<'_>,
    ) -> Result<ProviderPayment, ProviderError>;

    /// The payment as the provider knows it now (reconciliation asks this).
    async fn retrieve(
        &self,
        secret: &ProviderSecret,
        id: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// Cancels a payment no money has moved on.
    async fn cancel(
        &self,
        secret: &ProviderSecret,
        id: &str,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// Captures an authorised payment (manual capture mode).
    async fn capture(
        &self,
        secret: &ProviderSecret,
        id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// A refund as the provider knows it now, by its id.
    async fn retrieve_refund(
        &self,
        secret: &ProviderSecret,
        id: &str,
    ) -> Result<ProviderRefund, ProviderError>;

    /// Refunds part or all of a captured payment (idempotent by `idempotency_key`).
    async fn refund(
        &self,
        secret: &ProviderSecret,
        payment_id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError>;
}
