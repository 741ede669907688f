//! One module per resource; each exposes `router() -> OpenApiRouter<AppState>`.

pub mod account_notifications;
pub mod api_keys;
pub mod auth;
pub mod catalog;
pub mod events;
pub mod health;
pub mod inventory;
pub mod me;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod pricing;
pub mod settings;
pub mod store;
pub mod streams;
pub mod users;
pub mod webhooks;

/// A timestamp on the wire: RFC 3339, UTC.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC timestamp always formats as RFC 3339")
}
