//! One module per resource; each exposes `router() -> OpenApiRouter<AppState>`.

pub mod api_keys;
pub mod auth;
pub mod events;
pub mod health;
pub mod me;
pub mod ops;
pub mod settings;
pub mod store;
pub mod users;
