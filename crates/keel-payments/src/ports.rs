//! The payment provider port. Each call names Keel's own idempotency key, derived from
//! Keel's ids (the order, the refund), so a retry after a lost answer can never charge or
//! refund twice.

use std::fmt;

use async_trait::async_trait;
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Amount, CaptureMode, ProviderKind, SessionStatus};

/// The constraint a second settings row for the same shop and provider violates.
pub const PROVIDER_EXISTS: &str = "payment_providers_pkey";

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
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
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
    /// An order's sessions, oldest first.
    async fn sessions_of_order(
        &self,
        tenant: TenantId,
        order_id: Uuid,
    ) -> Result<Vec<PaymentSession>, StoreError>;
    /// Sessions without a final answer created before `before`, oldest first, at most
    /// `limit`, across shops (reconciliation asks the provider about each).
    async fn unsettled_sessions(
        &self,
        before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PaymentSession>, StoreError>;
    /// Stores a provider's event id once: true the first time, false for any repeat.
    async fn record_provider_event(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        event_id: &str,
        event_type: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
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
    pub succeeded: bool,
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

    /// Refunds part or all of a captured payment (idempotent by `idempotency_key`).
    async fn refund(
        &self,
        secret: &ProviderSecret,
        payment_id: &str,
        amount: Amount,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError>;
}
