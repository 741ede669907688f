//! Tenants and the event log on PostgreSQL (the statements: `keel_store_common::store::tenants`).

use async_trait::async_trait;
use keel_identity::{Tenant, TenantSlug, TenantStore};
use keel_kernel::{
    StoreError, TenantId,
    event::{EventId, EventLog, NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use keel_store_common::store::tenants as shared;
use uuid::Uuid;

use crate::{PgStore, error::map_err, exec::Raw};
pub(crate) use keel_store_common::rows::events::event_from_row;

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
    shared::insert_events(&mut Raw(tx), events).await
}

/// Inserts a tenant inside the caller's transaction.
pub(crate) async fn insert_tenant(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
) -> Result<(), StoreError> {
    shared::insert_tenant(&mut Raw(tx), tenant).await
}

#[async_trait]
impl TenantStore for PgStore {
    async fn create(&self, tenant: &Tenant, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        shared::create(&mut tx, tenant, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, id: TenantId) -> Result<Tenant, StoreError> {
        shared::get(&mut self.pg(), id).await
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Tenant, StoreError> {
        shared::get_by_slug(&mut self.pg(), slug).await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Tenant>, StoreError> {
        shared::list(&mut self.pg(), page).await
    }
}

#[async_trait]
impl EventLog for PgStore {
    async fn append(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        shared::insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, tenant: TenantId, id: EventId) -> Result<RecordedEvent, StoreError> {
        shared::get_event(&mut self.pg(), tenant, id).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        page: PageRequest,
        type_prefix: Option<&str>,
    ) -> Result<Page<RecordedEvent>, StoreError> {
        shared::list_events(&mut self.pg(), tenant, page, type_prefix).await
    }
}
