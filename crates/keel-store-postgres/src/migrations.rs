//! The PostgreSQL adapter's embedded migrations (same versions and names as the other adapter's;
//! a test in the `keel` crate compares the two lists).

use keel_store_common::EmbeddedMigrations;

/// Every file of `migrations/`, in version order (written by `build.rs`; never by hand).
pub(crate) const MIGRATIONS: EmbeddedMigrations =
    EmbeddedMigrations(include!(concat!(env!("OUT_DIR"), "/migrations.rs")));

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

    /// Migration 8 moves MFA enrolments, backup codes and one-time tokens to (owner kind, id)
    /// keys. A staff member's enrolment, backup code and pending MFA token (with its failure
    /// count) written under migration 7 must come through as staff rows.
    #[tokio::test]
    async fn staff_mfa_written_before_owner_kinds_survives_them() {
        let schema = keel_testdb::postgres_schema().await;
        let pool = sqlx::PgPool::connect_with(schema.connect_options())
            .await
            .expect("connect");
        EmbeddedMigrations(&super::MIGRATIONS.0[..7])
            .migrator()
            .run(&pool)
            .await
            .expect("migrate to 7");
        let (tenant, user) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let seed: [&str; 5] = [
            "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, 'mfa-shop', 'Mfa Shop', now())",
            "INSERT INTO staff_users (tenant_id, id, email, role, status, password_hash, created_at) \
             VALUES ($1, $2, 'o@mfa.test', 'owner', 'active', NULL, now())",
            "INSERT INTO staff_mfa (tenant_id, user_id, sealed_secret, created_at, confirmed_at, last_used_step) \
             VALUES ($1, $2, $3, now(), now(), 42)",
            "INSERT INTO backup_codes (tenant_id, user_id, code_hash, used_at) VALUES ($1, $2, $4, NULL)",
            "INSERT INTO one_time_tokens (hash, tenant_id, user_id, purpose, expires_at, used_at, failures) \
             VALUES ($5, $1, $2, 'mfa', now() + interval '1 hour', NULL, 2)",
        ];
        for sql in seed {
            // The statements draw on the same five values; each binds up to the highest it names.
            let params = (1..=5)
                .filter(|i| sql.contains(&format!("${i},")) || sql.contains(&format!("${i})")))
                .max()
                .unwrap_or(0);
            let mut q = sqlx::query(sql).bind(tenant);
            if params >= 2 {
                q = q.bind(user);
            }
            if params >= 3 {
                q = q.bind(vec![1u8; 40]);
            }
            if params >= 4 {
                q = q.bind(vec![2u8; 32]);
            }
            if params >= 5 {
                q = q.bind(vec![3u8; 32]);
            }
            q.execute(&pool).await.expect("seed");
        }
        super::MIGRATIONS
            .migrator()
            .run(&pool)
            .await
            .expect("migrate to the end");
        let mfa = sqlx::query(
            "SELECT owner_kind, sealed_secret, last_used_step FROM mfa_enrolments WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("enrolment survived");
        assert_eq!(mfa.get::<String, _>("owner_kind"), "staff");
        assert_eq!(mfa.get::<Vec<u8>, _>("sealed_secret"), vec![1u8; 40]);
        assert_eq!(mfa.get::<i64, _>("last_used_step"), 42);
        let code: String = sqlx::query_scalar(
            "SELECT owner_kind FROM backup_codes WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(vec![2u8; 32])
        .fetch_one(&pool)
        .await
        .expect("backup code survived");
        assert_eq!(code, "staff");
        let token = sqlx::query(
            "SELECT owner_kind, user_id, purpose, failures FROM one_time_tokens WHERE hash = $1",
        )
        .bind(vec![3u8; 32])
        .fetch_one(&pool)
        .await
        .expect("token survived");
        assert_eq!(token.get::<String, _>("owner_kind"), "staff");
        assert_eq!(token.get::<uuid::Uuid, _>("user_id"), user);
        assert_eq!(token.get::<String, _>("purpose"), "mfa");
        assert_eq!(token.get::<i32, _>("failures"), 2);
        pool.close().await;
    }
}
