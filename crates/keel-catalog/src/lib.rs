//! The catalog context: products with variants and exact prices, stock locations, inventory
//! levels explained by an adjustment ledger, and reservations that never oversell.
#![forbid(unsafe_code)]

pub mod domain;
pub mod ports;
pub mod service;

pub use domain::{LocationId, ProductId, ReservationId, VariantId};
pub use service::{CatalogError, CatalogPorts, CatalogService};
