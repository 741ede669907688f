//! The identity context's use cases: each ties the domain to the ports and writes the events
//! of what it changed.

pub mod api_keys;
pub mod auth;
pub mod signing_keys;
pub mod staff_admin;
pub mod tenants;
