//! Tenants and the event log on SQLite.

use async_trait::async_trait;
use keel_identity::{Tenant, TenantSlug, TenantStore};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, EventLog, NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use uuid::Uuid;

use crate::db::{self};
use crate::{SqliteStore, error::map_err, to_micros};
pub(crate) use keel_store_common::rows::events::event_from_row;
use keel_store_common::rows::identity::tenant_from_row;

/// Appends events inside the caller's transaction.
pub(crate) fn insert_events(
    tx: &rusqlite::Connection,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    for e in events {
        db::query(
            "INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(e.tenant_id.as_uuid())
        .bind(e.id.as_uuid())
        .bind(e.event_type)
        .bind(e.payload.to_string())
        .bind(to_micros(e.occurred_at)?)
        .execute(tx)?;
    }
    Ok(())
}

/// Inserts a tenant inside the caller's transaction.
pub(crate) fn insert_tenant(tx: &rusqlite::Connection, tenant: &Tenant) -> Result<(), StoreError> {
    db::query("INSERT INTO tenants (id, slug, name, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(tenant.id.as_uuid())
        .bind(tenant.slug.as_str())
        .bind(tenant.name.as_str())
        .bind(to_micros(tenant.created_at)?)
        .execute(tx)?;
    Ok(())
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_tenant(&tx, tenant)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError> {
        let row = self.read(|c| {
            db::query("SELECT id, slug, name, created_at FROM tenants WHERE id = ?1")
                .bind(id.as_uuid())
                .fetch_one(c)
        })?;
        tenant_from_row(&row)
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError> {
        let row = self.read(|c| {
            db::query("SELECT id, slug, name, created_at FROM tenants WHERE slug = ?1")
                .bind(slug.as_str())
                .fetch_one(c)
        })?;
        tenant_from_row(&row)
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
        let rows = self.read(|c| {
            db::query(
                "SELECT id, slug, name, created_at FROM tenants \
             WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
            )
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c)
        })?;
        let tenants = rows
            .iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(tenants, page.limit, |t| {
            t.id.as_uuid()
        }))
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let tx = self.write().await?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError> {
        let row = self.read(|c| {
            db::query(
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c)
        })?;
        event_from_row(&row)
    }

    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        let after: Option<Uuid> = page.after.map(keel_kernel::page::Cursor::after_id);
        let rows = self.read(|c| {
            db::query(
                "SELECT tenant_id, id, event_type, payload, occurred_at FROM outbox_events \
             WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) \
             AND (?4 IS NULL OR substr(event_type, 1, length(?4)) = ?4) ORDER BY id LIMIT ?3",
            )
            .bind(tenant.as_uuid())
            .bind(after)
            .bind(page.limit.fetch_count())
            .bind(type_prefix)
            .fetch_all(c)
        })?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(events, page.limit, |e| e.id.as_uuid()))
    }
}
