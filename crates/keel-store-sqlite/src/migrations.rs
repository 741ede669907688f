//! Embedded migrations. The list is explicit (no build-time macro) and a test checks it
//! against the `migrations/` folder, and another against the PostgreSQL adapter's list.

use keel_kernel::health::{AppliedMigration, SchemaStatus};
use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

/// `(version, description, sql)`, in order. Never edit an applied migration: add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    20_261_121_000_001,
    "tenants_and_outbox",
    include_str!("../migrations/20261121000001_tenants_and_outbox.sql"),
)];

pub(crate) fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(crate) fn status(applied: &[AppliedMigration]) -> SchemaStatus {
    let migrator = migrator();
    SchemaStatus::compare(
        migrator.iter().map(|m| (m.version, m.checksum.as_ref())),
        applied,
    )
}

/// File names of the embedded migrations (`<version>_<description>`), for cross-checks.
pub fn migration_names() -> Vec<String> {
    MIGRATIONS
        .iter()
        .map(|(v, d, _)| format!("{v}_{d}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_list_matches_the_migrations_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .map(|n| n.strip_suffix(".sql").expect("only .sql files").to_owned())
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, super::migration_names());
    }
}
