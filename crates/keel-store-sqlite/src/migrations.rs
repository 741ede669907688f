//! The SQLite adapter's embedded migrations (same versions and names as the other adapter's;
//! a test in the `keel` crate compares the two lists).

use keel_store_common::EmbeddedMigrations;

pub(crate) const MIGRATIONS: EmbeddedMigrations = EmbeddedMigrations(&[
    (
        20_261_121_000_001,
        "tenants_and_outbox",
        include_str!("../migrations/20261121000001_tenants_and_outbox.sql"),
    ),
    (
        20_261_121_000_002,
        "staff_sessions_keys",
        include_str!("../migrations/20261121000002_staff_sessions_keys.sql"),
    ),
    (
        20_261_121_000_003,
        "login_attempts",
        include_str!("../migrations/20261121000003_login_attempts.sql"),
    ),
    (
        20_261_121_000_004,
        "mfa",
        include_str!("../migrations/20261121000004_mfa.sql"),
    ),
    (
        20_261_121_000_005,
        "api_keys",
        include_str!("../migrations/20261121000005_api_keys.sql"),
    ),
    (
        20_261_121_000_006,
        "customers",
        include_str!("../migrations/20261121000006_customers.sql"),
    ),
]);

/// File names of the embedded migrations (`<version>_<description>`).
pub fn migration_names() -> Vec<String> {
    MIGRATIONS.names()
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_list_matches_the_migrations_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        super::MIGRATIONS.assert_matches_folder(&dir);
    }
}
