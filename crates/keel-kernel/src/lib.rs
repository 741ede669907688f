//! Keel's shared vocabulary, used by every context and adapter.
//!
//! - [`id`]: typed, prefixed, time-sortable ids (`ten_…`, `evt_…`) over UUIDv7.
//! - [`money`]: exact money as integer minor units plus an ISO 4217 [`money::Currency`].
//! - [`clock`]: the [`clock::Clock`] port, so time is injected, never read ad hoc.
//! - [`page`]: cursor pagination ([`page::PageRequest`], [`page::Page`], [`page::Cursor`]).
//! - [`error`]: the backend-neutral [`error::StoreError`] every storage port returns.
//! - [`event`]: the outbox event envelope and the [`event::EventLog`] read port.
//! - [`health`]: the [`health::StoreHealth`] port behind `/readyz`.
//! - [`net`]: address ranges and the client key per-address limits count by.
//!
//! This crate does no I/O and holds no floating point (the exact-values rule, docs/architecture.md, "Exact values").
#![forbid(unsafe_code)]

pub mod bus;
pub mod changes;
pub mod clock;
pub mod error;
pub mod event;
pub mod health;
pub mod hub;
pub mod id;
pub mod idempotency;
pub mod lease;
pub mod money;
pub mod net;
pub mod page;
pub mod quota;
pub mod ratelimit;

pub use error::StoreError;
pub use id::TenantId;
