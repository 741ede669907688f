//! The identity context's domain: types that parse (never validate later), the rules they
//! carry, and the cryptography they rest on. No I/O.

pub mod access;
pub mod api_key;
pub mod csrf;
pub mod customer;
pub mod jwt;
pub mod notice;
pub mod password;
pub mod sealed;
pub mod secret;
pub mod staff;
mod tenant;
pub mod throttle;
pub mod totp;

pub use tenant::*;
