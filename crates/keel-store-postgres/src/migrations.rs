//! The PostgreSQL adapter's embedded migrations (same versions and names as the other adapter's;
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
    (
        20_261_121_000_007,
        "require_staff_mfa",
        include_str!("../migrations/20261121000007_require_staff_mfa.sql"),
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

#[cfg(test)]
mod upgrade_tests {
    use keel_store_common::EmbeddedMigrations;
    use sqlx::Row;

    /// Migration 6 drops the staff-only foreign key of `sessions` and adds `owner_kind`; rows
    /// written under migration 5 must become staff sessions, with refresh tokens intact.
    #[tokio::test]
    async fn sessions_written_before_the_change_survive_it() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = sqlx::PgPool::connect_with(schema.connect_options())
            .await
            .expect("connect");
        EmbeddedMigrations(&super::MIGRATIONS.0[..5])
            .migrator()
            .run(&pool)
            .await
            .expect("migrate to 5");
        let (tenant, user, session) = (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        );
        sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, 'old-shop', 'Old Shop', now())")
            .bind(tenant)
            .execute(&pool)
            .await
            .expect("tenant");
        sqlx::query(
            "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
             VALUES ($1, $2, 'o@old.test', 'owner', 'active', NULL, now())",
        )
        .bind(tenant)
        .bind(user)
        .execute(&pool)
        .await
        .expect("user");
        sqlx::query(
            "INSERT INTO sessions (tenant_id, id, user_id, created_at, last_used_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, now(), now(), now() + interval '1 hour', NULL)",
        )
        .bind(tenant)
        .bind(session)
        .bind(user)
        .execute(&pool)
        .await
        .expect("session");
        super::MIGRATIONS
            .migrator()
            .run(&pool)
            .await
            .expect("migrate to the end");
        let row = sqlx::query(
            "SELECT owner_kind, user_id FROM sessions WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(session)
        .fetch_one(&pool)
        .await
        .expect("session survived");
        assert_eq!(row.get::<String, _>("owner_kind"), "staff");
        assert_eq!(row.get::<uuid::Uuid, _>("user_id"), user);
        pool.close().await;
    }
}
