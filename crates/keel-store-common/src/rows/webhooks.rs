//! Webhook rows: endpoints, messages, attempts.

use keel_kernel::{StoreError, TenantId, event::EventId};
use keel_webhooks::domain::{
    Attempt, AttemptId, Channel, Endpoint, EndpointId, Message, MessageId, MessageStatus,
};

use super::ReadRow;

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt webhook row: {what}"))
}

pub fn endpoint_from_row(r: &impl ReadRow) -> Result<Endpoint, StoreError> {
    let types = r.json_text("event_types")?;
    let secrets = r.json_text("secrets")?;
    let channel: String = r.col("channel")?;
    Ok(Endpoint {
        id: EndpointId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel"))?,
        url: r.col("url")?,
        description: r.col("description")?,
        event_types: serde_json::from_str(&types).map_err(|_| corrupt("event types"))?,
        enabled: r.col("enabled")?,
        disabled_reason: r.col("disabled_reason")?,
        secrets: serde_json::from_str(&secrets).map_err(|_| corrupt("secrets"))?,
        failing_since: r.opt_time("failing_since")?,
        consecutive_failures: r.col("consecutive_failures")?,
        paused_until: r.opt_time("paused_until")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.col("version")?,
    })
}

pub fn message_from_row(r: &impl ReadRow) -> Result<Message, StoreError> {
    let status: String = r.col("status")?;
    Ok(Message {
        id: MessageId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        endpoint_id: EndpointId::from_uuid(r.col("endpoint_id")?),
        event_id: EventId::from_uuid(r.col("event_id")?),
        event_type: r.col("event_type")?,
        body: r.col("body")?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        attempts: r.col("attempts")?,
        next_attempt_at: r.time("next_attempt_at")?,
        created_at: r.time("created_at")?,
    })
}

pub fn attempt_from_row(r: &impl ReadRow) -> Result<Attempt, StoreError> {
    let code: Option<i64> = r.col("status_code")?;
    Ok(Attempt {
        id: AttemptId::from_uuid(r.col("id")?),
        tenant_id: TenantId::from_uuid(r.col("tenant_id")?),
        message_id: MessageId::from_uuid(r.col("message_id")?),
        endpoint_id: EndpointId::from_uuid(r.col("endpoint_id")?),
        attempted_at: r.time("attempted_at")?,
        status_code: code
            .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
            .transpose()?,
        latency_ms: r.col("latency_ms")?,
        error: r.col("error")?,
        response_body: r.col("response_body")?,
    })
}
