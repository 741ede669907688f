//! Payments: a shop's provider settings, payment sessions, and the provider events seen.

use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_orders::{
    order::{Order, OrderId},
    ports::StockChange,
};
use keel_payments::{
    domain::ProviderKind,
    ports::{
        Applied, Effect, PROVIDER_VERSION_CONFLICT, PaymentSession, ProviderSettings, RefundTask,
        SessionChange,
    },
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    args,
    exec::{Exec, decode},
    rows::payments::{refund_from_row, session_from_row, settings_from_row},
    store::{
        orders::order::{Answer, OrderWrite, save_order},
        tenants::insert_events,
    },
};

macro_rules! settings_cols {
    () => {
        "tenant_id, provider, enabled, capture, secret_key, webhook_secrets, created_at, \
         updated_at, version"
    };
}

macro_rules! session_cols {
    () => {
        "tenant_id, id, order_id, provider, provider_ref, amount, currency, status, next_check_at, \
         created_at, updated_at"
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
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
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
            s.next_check_at,
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

pub async fn open_session_of<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    order_id: Uuid,
    provider: ProviderKind,
) -> Result<Option<PaymentSession>, StoreError> {
    let row = e
        .opt(
            concat!(
                "SELECT ",
                session_cols!(),
                " FROM payment_sessions WHERE tenant_id = $1 AND order_id = $2 AND provider = $3 \
                 AND status IN ('open', 'failed')"
            ),
            args![tenant.as_uuid(), order_id, provider.as_str()],
        )
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Reconciliation's read: it walks the partial index of sessions without a final answer, by
/// when each is due.
pub async fn due_sessions<E: Exec>(
    e: &mut E,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<PaymentSession>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                session_cols!(),
                " FROM payment_sessions WHERE status IN ('open', 'failed') AND next_check_at <= $1 \
                 ORDER BY next_check_at, tenant_id, id LIMIT $2"
            ),
            args![now, limit],
        )
        .await?;
    decode(&rows, session_from_row)
}

pub async fn reschedule_session<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: Uuid,
    next_check_at: OffsetDateTime,
) -> Result<(), StoreError> {
    e.run(
        "UPDATE payment_sessions SET next_check_at = $3 WHERE tenant_id = $1 AND id = $2",
        args![tenant.as_uuid(), id, next_check_at],
    )
    .await?;
    Ok(())
}

/// An order change owned: the order, the version it was read at, its stock moves, whether
/// its promotion use goes back, and the request's answer.
#[derive(Debug, Clone)]
pub struct OrderChangeWrite {
    pub order: Order,
    pub expected_version: i64,
    pub stock: Vec<StockChange>,
    pub give_back: bool,
    pub answer: Option<Answer>,
}

/// An [`Effect`] owned, so a writer thread can take it (its answer rendered beforehand).
#[derive(Debug, Clone)]
pub struct EffectWrite {
    pub tenant: TenantId,
    pub inbox: Option<(ProviderKind, String, String, OffsetDateTime)>,
    pub session: Option<SessionChange>,
    pub order: Option<OrderChangeWrite>,
    pub refunds: Vec<RefundTask>,
    pub events: Vec<NewEvent>,
}

impl EffectWrite {
    pub fn of(effect: &Effect<'_>) -> Result<Self, StoreError> {
        let order = match &effect.order {
            Some(c) => Some(OrderChangeWrite {
                order: c.order.clone(),
                expected_version: c.expected_version,
                stock: c.stock.to_vec(),
                give_back: c.give_back,
                answer: Answer::of(c.receipt, c.order)?,
            }),
            None => None,
        };
        Ok(Self {
            tenant: effect.tenant,
            inbox: effect.inbox.map(|i| {
                (
                    i.provider,
                    i.event_id.to_owned(),
                    i.event_type.to_owned(),
                    i.at,
                )
            }),
            session: effect.session,
            order,
            refunds: effect.refunds.to_vec(),
            events: effect.events.to_vec(),
        })
    }
}

/// One effect, in the caller's transaction: the inbox row first (a repeat stops there and
/// writes nothing), then the order over its version, the session, the refund tasks and the
/// events. Any error rolls all of it back, the inbox row included, so the event can come
/// again and be applied then.
pub async fn apply<E: Exec>(e: &mut E, w: &EffectWrite) -> Result<Applied, StoreError> {
    if let Some((provider, id, kind, at)) = &w.inbox
        && !record_provider_event(e, w.tenant, *provider, id, kind, *at).await?
    {
        return Ok(Applied::Repeat);
    }
    if let Some(c) = &w.order {
        save_order(
            e,
            &OrderWrite {
                order: &c.order,
                expected_version: c.expected_version,
                stock: &c.stock,
                give_back: c.give_back,
                events: &[],
                answer: c.answer.as_ref(),
            },
        )
        .await?;
    }
    if let Some(s) = &w.session {
        e.run(
            // A final answer is final: a late event cannot move a session back.
            "UPDATE payment_sessions SET status = $3, next_check_at = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2 AND status IN ('open', 'failed')",
            args![
                w.tenant.as_uuid(),
                s.id,
                s.status.as_str(),
                s.next_check_at,
                s.updated_at
            ],
        )
        .await?;
    }
    for r in &w.refunds {
        put_refund(e, r).await?;
    }
    insert_events(e, &w.events).await?;
    Ok(Applied::Done)
}

macro_rules! refund_cols {
    () => {
        "tenant_id, id, order_id, provider, payment_ref, amount, currency, status, provider_ref, \
         failure, attempts, next_attempt_at, created_at, updated_at"
    };
}

/// Inserts a refund task, or replaces its standing while it is pending (the amount and the
/// payment never change, a settled refund stays settled: a late retry of another node cannot
/// reopen it, and the provider's id of a refund, once known, is never forgotten).
async fn put_refund<E: Exec>(e: &mut E, r: &RefundTask) -> Result<(), StoreError> {
    e.run(
        concat!(
            "INSERT INTO payment_refunds (",
            refund_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, \
             provider_ref = COALESCE(excluded.provider_ref, payment_refunds.provider_ref), \
             failure = excluded.failure, \
             attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, \
             updated_at = excluded.updated_at WHERE payment_refunds.status = 'pending'"
        ),
        args![
            r.tenant_id.as_uuid(),
            r.id.as_uuid(),
            r.order_id.as_uuid(),
            r.provider.as_str(),
            r.payment_ref.as_str(),
            r.amount.minor,
            r.amount.currency.code(),
            r.status.as_str(),
            r.provider_ref.as_deref(),
            r.failure.as_deref(),
            r.attempts,
            r.next_attempt_at,
            r.created_at,
            r.updated_at
        ],
    )
    .await?;
    Ok(())
}

pub async fn due_refunds<E: Exec>(
    e: &mut E,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<RefundTask>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                refund_cols!(),
                " FROM payment_refunds WHERE status = 'pending' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, tenant_id, id LIMIT $2"
            ),
            args![now, limit],
        )
        .await?;
    decode(&rows, refund_from_row)
}

pub async fn refunds_of_order<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    order: OrderId,
) -> Result<Vec<RefundTask>, StoreError> {
    let rows = e
        .all(
            concat!(
                "SELECT ",
                refund_cols!(),
                " FROM payment_refunds WHERE tenant_id = $1 AND order_id = $2 \
                 ORDER BY created_at, id"
            ),
            args![tenant.as_uuid(), order.as_uuid()],
        )
        .await?;
    decode(&rows, refund_from_row)
}

/// The inbox: the primary key keeps each provider event once; a repeat inserts nothing.
async fn record_provider_event<E: Exec>(
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
