//! Tenants and the event log on PostgreSQL.

use async_trait::async_trait;
use keel_identity::{Tenant, TenantSlug, TenantStore};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, EventLog, NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use uuid::Uuid;

use crate::{PgStore, error::map_err};
pub(crate) use keel_store_common::rows::events::event_from_row;
use keel_store_common::rows::identity::tenant_from_row;

/// The `SELECT` that turns five bound arrays into outbox rows, for an `INSERT INTO
/// outbox_events (tenant_id, id, event_type, payload, occurred_at)`; the arguments are the
/// parameter numbers of the arrays, in [`EventRows::bind`]'s order.
macro_rules! events_from_arrays {
    ($tenants:literal, $ids:literal, $types:literal, $payloads:literal, $occurred:literal) => {
        concat!(
            "SELECT e.tenant_id, e.id, e.event_type, e.payload::jsonb, e.occurred_at FROM unnest(",
            $tenants,
            "::uuid[], ",
            $ids,
            "::uuid[], ",
            $types,
            "::text[], ",
            $payloads,
            "::text[], ",
            $occurred,
            "::timestamptz[]) AS e (tenant_id, id, event_type, payload, occurred_at)"
        )
    };
}
pub(crate) use events_from_arrays;

/// A write's events as parallel arrays, so any number of them is one statement (or one part
/// of the write's own statement).
pub(crate) struct EventRows {
    tenants: Vec<Uuid>,
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    payloads: Vec<String>,
    occurred: Vec<time::OffsetDateTime>,
}

impl EventRows {
    pub(crate) fn of(events: &[NewEvent]) -> Self {
        Self {
            tenants: events.iter().map(|e| e.tenant_id.as_uuid()).collect(),
            ids: events.iter().map(|e| e.id.as_uuid()).collect(),
            types: events.iter().map(|e| e.event_type).collect(),
            payloads: events.iter().map(|e| e.payload.to_string()).collect(),
            occurred: events.iter().map(|e| e.occurred_at).collect(),
        }
    }

    /// Binds the five arrays as the query's next parameters.
    pub(crate) fn bind(
        self,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.tenants)
            .bind(self.ids)
            .bind(self.types)
            .bind(self.payloads)
            .bind(self.occurred)
    }
}

/// Appends events inside the caller's transaction, in one statement.
pub(crate) async fn insert_events(
    tx: &mut sqlx::PgConnection,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    EventRows::of(events)
        .bind(sqlx::query(concat!(
            "INSERT INTO outbox_events (tenant_id, id, event_type, payload, occurred_at) ",
            events_from_arrays!("$1", "$2", "$3", "$4", "$5")
        )))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Inserts a tenant inside the caller's transaction.
pub(crate) async fn insert_tenant(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant.id.as_uuid())
        .bind(tenant.slug.as_str())
        .bind(tenant.name.as_str())
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl TenantStore for PgStore {
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_tenant(&mut tx, tenant).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        tenant_from_row(&row)
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        tenant_from_row(&row)
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, slug, name, created_at FROM tenants \
             WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(page.after.map(keel_kernel::page::Cursor::after_id))
        .bind(page.limit.fetch_count())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
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
impl EventLog for PgStore {
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, id, event_type, payload::text AS payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        event_from_row(&row)
    }

    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        let after: Option<Uuid> = page.after.map(keel_kernel::page::Cursor::after_id);
        let rows = sqlx::query(
            "SELECT tenant_id, id, event_type, payload::text AS payload, occurred_at FROM outbox_events \
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) \
             AND ($4::text IS NULL OR left(event_type, length($4)) = $4) ORDER BY id LIMIT $3",
        )
        .bind(tenant.as_uuid())
        .bind(after)
        .bind(page.limit.fetch_count())
        .bind(type_prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(events, page.limit, |e| e.id.as_uuid()))
    }
}
