//! Bus consumer bookkeeping on SQLite: processed events and dead letters.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    bus::{ConsumerStore, DeadLetter},
    event::EventId,
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::db::{self};
use crate::{SqliteStore, error::map_err, to_micros};
use keel_store_common::rows::events::letter_from_row;

#[async_trait]
impl ConsumerStore for SqliteStore {
    async fn is_processed(&self, consumer: &str, event: EventId) -> Result<bool, StoreError> {
        let n: i64 = self.read(|c| {
            db::query("SELECT count(*) FROM processed_events WHERE consumer = ?1 AND event_id = ?2")
                .bind(consumer)
                .bind(event.as_uuid())
                .scalar(c)
        })?;
        Ok(n == 1)
    }

    async fn mark_processed(
        &self,
        consumer: &str,
        event: EventId,
        at_time: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query("INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .bind(consumer)
            .bind(event.as_uuid())
            .bind(to_micros(at_time)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }

    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query("INSERT INTO dead_letters (id, consumer, tenant_id, event_id, event_type, payload, occurred_at, error, attempts, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .bind(l.id)
            .bind(&l.consumer)
            .bind(l.event.tenant_id.as_uuid())
            .bind(l.event.id.as_uuid())
            .bind(&l.event.event_type)
            .bind(l.event.payload.to_string())
            .bind(to_micros(l.event.occurred_at)?)
            .bind(&l.error)
            .bind(l.attempts)
            .bind(to_micros(l.created_at)?)
            .execute(&tx)?;
        tx.commit().await.map_err(map_err)
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        let rows = self.read(|c| db::query("SELECT id, consumer, tenant_id, event_id, event_type, payload, occurred_at, error, attempts, created_at FROM dead_letters \
             WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3")
            .bind(tenant.map(|t| t.as_uuid()))
            .bind(page.after.map(keel_kernel::page::Cursor::after_id))
            .bind(page.limit.fetch_count())
            .fetch_all(c))?;
        let items = rows
            .iter()
            .map(letter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |l| l.id))
    }

    async fn find_dead_letter(&self, id: uuid::Uuid) -> Result<DeadLetter, StoreError> {
        let r = self.read(|c| db::query("SELECT id, consumer, tenant_id, event_id, event_type, payload, occurred_at, error, attempts, created_at FROM dead_letters WHERE id = ?1")
            .bind(id)
            .fetch_one(c))?;
        letter_from_row(&r)
    }

    async fn remove_dead_letter(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let n = db::query("DELETE FROM dead_letters WHERE id = ?1")
            .bind(id)
            .execute(&tx)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
