//! The orders context: pricing setup (tax rates, shipping options, promotions), carts, the
//! one exact pricing calculation, checkout, the order state machine, payments, fulfilment,
//! cancellation and refunds.
#![forbid(unsafe_code)]

pub mod cart;
pub mod country;
pub mod exact;
pub mod order;
pub mod ports;
pub mod pricing;
mod pricing_cache;
pub mod service;
pub mod setup;
