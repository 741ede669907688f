//! Bus consumers' bookkeeping: the events each consumer has processed (so a redelivered event
//! is handled once) and the dead letters of those it gave up on.

use keel_kernel::{
    StoreError, TenantId,
    bus::DeadLetter,
    event::EventId,
    page::{Cursor, Page, PageRequest},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Arg, Exec, decode},
    rows::{ReadRow, events::letter_from_row},
};

/// The dead letters' columns, in `letter_from_row`'s terms.
macro_rules! letter_select {
    () => {
        "SELECT id, consumer, tenant_id, event_id, event_type, payload, occurred_at, error, \
         attempts, created_at FROM dead_letters"
    };
}

pub async fn is_processed<E: Exec>(
    e: &mut E,
    consumer: &str,
    event: EventId,
) -> Result<bool, StoreError> {
    let n = e
        .one(
            "SELECT count(*) AS n FROM processed_events WHERE consumer = $1 AND event_id = $2",
            args![consumer, event.as_uuid()],
        )
        .await?
        .int("n")?;
    Ok(n == 1)
}

/// Records the event as processed by `consumer`; a repeat changes nothing.
pub async fn mark_processed<E: Exec>(
    e: &mut E,
    consumer: &str,
    event: EventId,
    at_time: OffsetDateTime,
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        args![consumer, event.as_uuid(), at_time],
    )
    .await?;
    Ok(())
}

pub async fn dead_letter<E: Exec>(e: &mut E, letter: &DeadLetter) -> Result<(), StoreError> {
    let payload = letter.event.payload.to_string();
    e.run(
        "INSERT INTO dead_letters (id, consumer, tenant_id, event_id, event_type, payload, \
         occurred_at, error, attempts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        args![
            letter.id,
            &letter.consumer,
            letter.event.tenant_id.as_uuid(),
            letter.event.id.as_uuid(),
            &letter.event.event_type,
            Arg::json(&payload),
            letter.event.occurred_at,
            &letter.error,
            letter.attempts,
            letter.created_at
        ],
    )
    .await?;
    Ok(())
}

/// Dead letters by id, of one shop or of all.
pub async fn dead_letters<E: Exec>(
    e: &mut E,
    tenant: Option<TenantId>,
    page: PageRequest,
) -> Result<Page<DeadLetter>, StoreError> {
    let rows = e
        .all(
            concat!(
                letter_select!(),
                " WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            ),
            args![
                tenant.map(|t| t.as_uuid()),
                page.after.map(Cursor::after_id),
                page.limit.fetch_count()
            ],
        )
        .await?;
    let items = decode(&rows, letter_from_row)?;
    Ok(Page::from_overfetch(items, page.limit, |l| l.id))
}

pub async fn find_dead_letter<E: Exec>(e: &mut E, id: Uuid) -> Result<DeadLetter, StoreError> {
    let row = e
        .one(concat!(letter_select!(), " WHERE id = $1"), args![id])
        .await?;
    letter_from_row(&row)
}

/// Deletes the dead letter (`NotFound` without one).
pub async fn remove_dead_letter<E: Exec>(e: &mut E, id: Uuid) -> Result<(), StoreError> {
    if e.run("DELETE FROM dead_letters WHERE id = $1", args![id])
        .await?
        == 0
    {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
