//! Keel's identity context: tenants (the unit of isolation, created by the operator) and the
//! building blocks of access: the role -> permission table
//! ([`access`]), the password policy and argon2id hashing ([`password`]), one-time secrets
//! ([`secret`]), TOTP and backup codes ([`totp`]) and EdDSA access tokens ([`jwt`]). Staff
//! users, customers, sessions and API keys (ports, adapters, routes) build on these.
//!
//! Layout, copied by every context: `domain` (types that parse, never validate later, and
//! the context's error), `ports` (storage traits, atomic inside the adapter), `service`
//! (use cases that tie them together and write the events).
#![forbid(unsafe_code)]

pub mod access;
pub mod apikey;
pub mod auth;
pub mod customer;
pub mod domain;
pub mod jwt;
pub mod keyring;
pub mod keys;
pub mod notice;
pub mod password;
pub mod ports;
pub mod sealed;
pub mod secret;
pub mod service;
pub mod staff;
pub mod throttle;
pub mod totp;
pub mod users;

pub use domain::{NewTenant, Tenant, TenantError, TenantName, TenantSlug};
pub use ports::TenantStore;
pub use service::TenantService;
