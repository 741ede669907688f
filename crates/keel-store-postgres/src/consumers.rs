//! Bus consumer bookkeeping on PostgreSQL: processed events and dead letters.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    bus::{ConsumerStore, DeadLetter},
    event::EventId,
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{PgStore, error::map_err};
use keel_store_common::rows::events::letter_from_row;

#[async_trait]
impl ConsumerStore for PgStore {
    async fn is_processed(&self, consumer: &str, event: EventId) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn mark_processed(
        &self,
        consumer: &str,
        event: EventId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(consumer)
            .bind(event.as_uuid())
            .bind(at_time)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("INSERT INTO dead_letters (id, consumer, tenant_id, event_id, event_type, payload, occurred_at, error, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)")
            .bind(l.id)
            .bind(&l.consumer)
            .bind(l.event.tenant_id.as_uuid())
            .bind(l.event.id.as_uuid())
            .bind(&l.event.event_type)
            .bind(l.event.payload.to_string())
            .bind(l.event.occurred_at)
            .bind(&l.error)
            .bind(l.attempts)
            .bind(l.created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        let rows = sqlx::query("SELECT id, consumer, tenant_id, event_id, event_type, payload::text AS payload, occurred_at, error, attempts, created_at FROM dead_letters \
             WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(tenant.map(|t| t.as_uuid()))
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let items = rows
            .iter()
            .map(letter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |l| l.id))
    }

    async fn find_dead_letter(&self, id: uuid::Uuid) -> Result<DeadLetter, StoreError> {
        let r = sqlx::query("SELECT id, consumer, tenant_id, event_id, event_type, payload::text AS payload, occurred_at, error, attempts, created_at FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        letter_from_row(&r)
    }

    async fn remove_dead_letter(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let n = sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
