//! Keel's identity context: tenants (the unit of isolation, created by the operator), staff
//! users, customers, sessions, second factors, API keys and the installation's signing keys.
//!
//! - [`domain`]: types that parse, never validate later, and the rules and cryptography they
//!   carry (roles and permissions, passwords, one-time secrets, TOTP, access tokens, sealing
//!   at rest, throttling limits). No I/O.
//! - [`ports`]: the storage traits; each method is one atomic step inside the adapter.
//! - [`services`]: the use cases (authentication, staff administration, API keys, signing-key
//!   rotation, tenants), which tie the domain to the ports and write the events.
#![forbid(unsafe_code)]

pub mod domain;
pub mod ports;
pub mod services;

pub use domain::{NewTenant, Tenant, TenantError, TenantName, TenantSlug};
pub use ports::TenantStore;
pub use services::tenants::TenantService;
