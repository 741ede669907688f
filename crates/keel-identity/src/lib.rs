//! Keel's identity context. Today: tenants, the unit of isolation, created by the operator.
//! Staff users, customers, tokens, MFA and API keys join this crate with the identity issue.
//!
//! Layout, copied by every context: `domain` (types that parse, never validate later, and
//! the context's error), `ports` (storage traits, atomic inside the adapter), `service`
//! (use cases that tie them together and write the events).
#![forbid(unsafe_code)]

pub mod domain;
pub mod ports;
pub mod service;

pub use domain::{NewTenant, Tenant, TenantError, TenantName, TenantSlug};
pub use ports::TenantStore;
pub use service::TenantService;
