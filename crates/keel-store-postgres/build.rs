//! The migration list, derived from `migrations/` (keel-build).

fn main() {
    keel_build::embed_migrations();
}
