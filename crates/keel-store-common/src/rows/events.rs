//! The event log's rows and the bus consumers' dead letters.

use keel_kernel::{
    StoreError, TenantId,
    bus::DeadLetter,
    event::{EventId, RecordedEvent},
};

use super::ReadRow;

pub fn event_from_row(r: &impl ReadRow) -> Result<RecordedEvent, StoreError> {
    let payload = r.json_text("payload")?;
    Ok(RecordedEvent {
        id: EventId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        event_type: r.col("event_type")?,
        payload: serde_json::from_str(&payload).map_err(StoreError::other)?,
        occurred_at: r.time("occurred_at")?,
    })
}

pub fn letter_from_row(r: &impl ReadRow) -> Result<DeadLetter, StoreError> {
    let payload = r.json_text("payload")?;
    Ok(DeadLetter {
        id: r.col("id")?,
        consumer: r.col("consumer")?,
        event: RecordedEvent {
            id: EventId::from_uuid(r.col("event_id")?),
            tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
            event_type: r.col("event_type")?,
            payload: serde_json::from_str(&payload).map_err(StoreError::other)?,
            occurred_at: r.time("occurred_at")?,
        },
        error: r.col("error")?,
        attempts: r.col("attempts")?,
        created_at: r.time("created_at")?,
    })
}
