//! Each port method's storage work, written once for both backends (ADR 0032): `async fn`s
//! over [`crate::exec::Exec`]. The adapters choose the connection and the transaction (and,
//! on SQLite, the writer job) and call these; nothing here knows which backend it runs on
//! except through [`crate::exec::pick`] and [`crate::exec::Exec::DIALECT`], where a statement
//! genuinely differs.

pub mod apikeys;
pub mod catalog;
pub mod consumers;
pub mod customers;
pub mod identity;
pub mod inventory;
pub mod leases;
pub mod limits;
pub mod mfa;
pub mod orders;
pub mod payments;
pub mod tenants;
pub mod throttle;
pub mod webhooks;
