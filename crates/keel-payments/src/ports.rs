//! The payment provider port. Each call names Keel's own idempotency key, derived from
//! Keel's ids (the order, the refund), so a retry after a lost answer can never charge or
//! refund twice.

use std::fmt;

use async_trait::async_trait;

use crate::domain::{Amount, CaptureMode, ProviderKind, SessionStatus};

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
