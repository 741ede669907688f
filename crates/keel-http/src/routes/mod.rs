//! One module per resource; each exposes `router() -> OpenApiRouter<AppState>`.

pub mod health;
pub mod ops;
