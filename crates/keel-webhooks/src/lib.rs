//! The webhooks context: endpoints, Standard Webhooks signing, the delivery policy and the
//! SSRF guard.
#![forbid(unsafe_code)]

pub mod domain;
pub mod ports;
pub mod service;
pub mod signing;
pub mod ssrf;
