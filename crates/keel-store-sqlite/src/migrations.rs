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
    use sqlx::{Row, sqlite::SqliteConnectOptions};

    /// Migration 6 rebuilds `sessions` and `refresh_tokens` (SQLite cannot drop a foreign
    /// key). Rows written under migration 5 must survive, as staff sessions, with their refresh
    /// tokens still pointing at them and foreign keys still enforced.
    #[tokio::test]
    async fn sessions_written_before_the_rebuild_survive_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("upgrade.db"))
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
        let before = EmbeddedMigrations(&super::MIGRATIONS.0[..5]);
        before.migrator().run(&pool).await.expect("migrate to 5");
        let (tenant, user, session) = (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        );
        let statements: [(&str, &[uuid::Uuid]); 3] = [
            (
                "INSERT INTO tenants (id, slug, name, created_at) VALUES (?1, 'old-shop', 'Old Shop', 1)",
                &[tenant],
            ),
            (
                "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
                 VALUES (?1, ?2, 'o@old.test', 'owner', 'active', NULL, 1)",
                &[tenant, user],
            ),
            (
                "INSERT INTO sessions (tenant_id, id, user_id, created_at, last_used_at, expires_at, revoked_at) \
                 VALUES (?1, ?2, ?3, 1, 2, 3, NULL)",
                &[tenant, session, user],
            ),
        ];
        for (sql, ids) in statements {
            let mut q = sqlx::query(sql);
            for id in ids {
                q = q.bind(*id);
            }
            q.execute(&pool).await.expect("seed");
        }
        sqlx::query("INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_at, expires_at, used_at) VALUES (?1, ?2, ?3, 1, 3, NULL)")
            .bind(vec![7u8; 32])
            .bind(tenant)
            .bind(session)
            .execute(&pool)
            .await
            .expect("seed refresh token");

        super::MIGRATIONS
            .migrator()
            .run(&pool)
            .await
            .expect("migrate to the end");

        let row = sqlx::query(
            "SELECT owner_kind, user_id, expires_at FROM sessions WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant)
        .bind(session)
        .fetch_one(&pool)
        .await
        .expect("session survived");
        assert_eq!(row.get::<String, _>("owner_kind"), "staff");
        assert_eq!(row.get::<uuid::Uuid, _>("user_id"), user);
        assert_eq!(row.get::<i64, _>("expires_at"), 3);
        let refreshed: uuid::Uuid =
            sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = ?1")
                .bind(vec![7u8; 32])
                .fetch_one(&pool)
                .await
                .expect("refresh token survived");
        assert_eq!(refreshed, session);
        // The rebuilt foreign key still holds: a refresh token for a missing session is refused.
        let orphan = sqlx::query("INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_at, expires_at, used_at) VALUES (?1, ?2, ?3, 1, 3, NULL)")
            .bind(vec![8u8; 32])
            .bind(tenant)
            .bind(uuid::Uuid::now_v7())
            .execute(&pool)
            .await;
        assert!(orphan.is_err(), "foreign key enforced after the rebuild");
        let check: Vec<String> = sqlx::query_scalar("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .expect("check");
        assert!(check.is_empty(), "{check:?}");
    }
}
