//! API keys on PostgreSQL.

use async_trait::async_trait;
use keel_identity::{
    apikey::{ApiKey, ApiKeyId},
    ports::ApiKeyStore,
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{PgStore, error::map_err, tenants::insert_events};
use keel_store_common::rows::identity::key_from_row;

macro_rules! key_select {
    () => {
        "SELECT tenant_id, id, kind, name, lookup, secret_hash, scopes, created_at, expires_at, \
         last_used_at, revoked_at FROM api_keys"
    };
}

fn scopes_text(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn insert_key(tx: &mut sqlx::PgConnection, key: &ApiKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, kind, name, lookup, secret_hash, scopes, created_at, \
         expires_at, last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
    )
    .bind(key.tenant_id.as_uuid())
    .bind(key.id.as_uuid())
    .bind(key.kind.as_str())
    .bind(&key.name)
    .bind(&key.lookup)
    .bind(&key.secret_hash[..])
    .bind(scopes_text(key))
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn create_api_key(&self, key: &ApiKey, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_key(&mut tx, key).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_api_key(&self, lookup: &str) -> Result<ApiKey, StoreError> {
        let r = sqlx::query(concat!(key_select!(), " WHERE lookup = $1"))
            .bind(lookup)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        key_from_row(&r)
    }

    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, StoreError> {
        let r = sqlx::query(concat!(key_select!(), " WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        key_from_row(&r)
    }

    async fn list_api_keys(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ApiKey>, StoreError> {
        let rows = sqlx::query(concat!(
            key_select!(),
            " WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_uuid())
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let keys = rows
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(keys, page.limit, |k| k.id.as_uuid()))
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(at_time)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn rotate_api_key(
        &self,
        tenant: TenantId,
        old: ApiKeyId,
        old_expires_at: OffsetDateTime,
        new: &ApiKey,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_uuid())
        .bind(old.as_uuid())
        .bind(old_expires_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Err(StoreError::NotFound);
        }
        insert_key(&mut tx, new).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn touch_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(at_time)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}
