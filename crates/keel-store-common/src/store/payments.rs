//! Payments: a shop's provider settings, payment sessions, and the provider events seen.

use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_payments::{
    domain::ProviderKind,
    ports::{PROVIDER_VERSION_CONFLICT, PaymentSession, ProviderSettings},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Exec, decode},
    rows::payments::{session_from_row, settings_from_row},
    store::tenants::insert_events,
};

macro_rules! settings_cols {
    () => {
        "tenant_id, provider, enabled, capture, secret_key, webhook_secrets, created_at, \
         updated_at, version"
    };
}

macro_rules! session_cols {
    () => {
        "tenant_id, id, order_id, provider, provider_ref, amount, currency, status, created_at, \
         updated_at"
    };
}

pub async fn save_provider<E: Exec>(
    e: &mut E,
    s: &ProviderSettings,
    expected_version: Option<i64>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    match expected_version {
        // A second row for the shop and provider violates the primary key: the caller hears
        // `PROVIDER_EXISTS`.
        None => {
            e.run(
                concat!(
                    "INSERT INTO payment_providers (",
                    settings_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                args![
                    s.tenant_id.as_uuid(),
                    s.provider.as_str(),
                    s.enabled,
                    s.capture.as_str(),
                    &s.sealed_secret_key,
                    &s.sealed_webhook_secrets,
                    s.created_at,
                    s.updated_at,
                    s.version
                ],
            )
            .await?;
        }
        // Created once: a replacement keeps `created_at`, and the version moves by one from
        // the one the caller read.
        Some(expected) => {
            let changed = e
                .run(
                    "UPDATE payment_providers SET enabled = $3, capture = $4, secret_key = $5, \
                     webhook_secrets = $6, updated_at = $7, version = $8 + 1 \
                     WHERE tenant_id = $1 AND provider = $2 AND version = $8",
                    args![
                        s.tenant_id.as_uuid(),
                        s.provider.as_str(),
                        s.enabled,
                        s.capture.as_str(),
                        &s.sealed_secret_key,
                        &s.sealed_webhook_secrets,
                        s.updated_at,
                        expected
                    ],
                )
                .await?;
            if changed != 1 {
                return Err(StoreError::Conflict {
                    constraint: PROVIDER_VERSION_CONFLICT.to_owned(),
                });
            }
        }
    }
    insert_events(e, events).await
}

pub async fn get_provider<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    provider: ProviderKind,
) -> Result<ProviderSettings, StoreError> {
    let row = e
        .one(
            concat!(
                "SELECT ",
                settings_cols!(),
                " FROM payment_providers WHERE tenant_id = $1 AND provider = $2"
            ),
            args![tenant.as_uuid(), provider.as_str()],
        )
        .await?;
    settings_from_row(&row)
}

pub async fn list_providers<E: Exec>(
    e: &mut E,
    tenant: TenantId,
) -> Result<Vec<ProviderSettings>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                settings_cols!(),
                " FROM payment_providers WHERE tenant_id = $1 ORDER BY provider"
            ),
            args![tenant.as_uuid()],
        )
        .await?;
    decode(&rows, settings_from_row)
}

pub async fn create_session<E: Exec>(
    e: &mut E,
    s: &PaymentSession,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        concat!(
            "INSERT INTO payment_sessions (",
            session_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        args![
            s.tenant_id.as_uuid(),
            s.id,
            s.order_id,
            s.provider.as_str(),
            s.provider_ref.as_str(),
            s.amount.minor,
            s.amount.currency.code(),
            s.status.as_str(),
            s.created_at,
            s.updated_at
        ],
    )
    .await?;
    insert_events(e, events).await
}

pub async fn session_by_ref<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    provider: ProviderKind,
    provider_ref: &str,
) -> Result<PaymentSession, StoreError> {
    let row = e
        .one(
            concat!(
                "SELECT ",
                session_cols!(),
                " FROM payment_sessions WHERE tenant_id = $1 AND provider = $2 AND provider_ref = $3"
            ),
            args![tenant.as_uuid(), provider.as_str(), provider_ref],
        )
        .await?;
    session_from_row(&row)
}

pub async fn sessions_of_order<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    order_id: Uuid,
) -> Result<Vec<PaymentSession>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                session_cols!(),
                " FROM payment_sessions WHERE tenant_id = $1 AND order_id = $2 \
                 ORDER BY created_at, id"
            ),
            args![tenant.as_uuid(), order_id],
        )
        .await?;
    decode(&rows, session_from_row)
}

/// Reconciliation's read: it walks the partial index of sessions without a final answer.
pub async fn unsettled_sessions<E: Exec>(
    e: &mut E,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<PaymentSession>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                session_cols!(),
                " FROM payment_sessions WHERE status IN ('open', 'failed') AND created_at < $1 \
                 ORDER BY created_at, tenant_id, id LIMIT $2"
            ),
            args![before, limit],
        )
        .await?;
    decode(&rows, session_from_row)
}

/// The inbox: the primary key keeps each provider event once; a repeat inserts nothing.
pub async fn record_provider_event<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    provider: ProviderKind,
    event_id: &str,
    event_type: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let inserted = e
        .run(
            "INSERT INTO payment_events (tenant_id, provider, event_id, event_type, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, provider, event_id) DO NOTHING",
            args![
                tenant.as_uuid(),
                provider.as_str(),
                event_id,
                event_type,
                at
            ],
        )
        .await?;
    Ok(inserted == 1)
}
