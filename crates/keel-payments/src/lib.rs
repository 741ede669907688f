//! Keel's payments context (issue 22, ADR 0034): an order is paid when its payment provider
//! says so, never on the shopper's word.
//!
//! - [`domain`]: providers, capture modes, a payment session's states and the exact-amount
//!   rule (a payment is accepted only for the order's exact outstanding amount and currency).
//! - [`decide`]: what a provider's answer means for an order (paid, mismatch, refund to
//!   compensate) and the refund cap, decided once for the webhook and reconciliation.
//! - [`signature`]: the provider's signed webhooks (`Stripe-Signature`), checked before
//!   anything is stored.
//! - [`ports`]: the provider port (sessions, capture, cancel, refund), implemented by the
//!   Stripe-compatible adapter, and the payments storage port (one transaction per effect).
//! - [`service`]: settings, payment sessions, the webhook inbox, reconciliation, compensation
//!   and refunds through the provider.
#![forbid(unsafe_code)]

pub mod decide;
pub mod domain;
pub mod ports;
pub mod service;
pub mod signature;
