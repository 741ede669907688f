//! Payments rows: a shop's provider settings and its payment sessions.

use keel_kernel::{StoreError, TenantId, money::Currency};
use keel_orders::order::{OrderId, RefundId};
use keel_payments::{
    domain::{Amount, CaptureMode, ProviderKind, SessionStatus},
    ports::{PaymentSession, ProviderSettings, RefundTask, RefundTaskStatus},
};

use super::{ReadRow, corrupt};

fn provider(r: &impl ReadRow) -> Result<ProviderKind, StoreError> {
    ProviderKind::parse(&r.text("provider")?).ok_or_else(|| corrupt("payments", "provider"))
}

pub fn settings_from_row(r: &impl ReadRow) -> Result<ProviderSettings, StoreError> {
    Ok(ProviderSettings {
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        provider: provider(r)?,
        enabled: r.flag("enabled")?,
        capture: CaptureMode::parse(&r.text("capture")?)
            .ok_or_else(|| corrupt("payments", "capture"))?,
        sealed_secret_key: r.bytes("secret_key")?,
        sealed_webhook_secrets: r.bytes("webhook_secrets")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.int("version")?,
    })
}

pub fn session_from_row(r: &impl ReadRow) -> Result<PaymentSession, StoreError> {
    Ok(PaymentSession {
        id: r.uuid("id")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        order_id: r.uuid("order_id")?,
        provider: provider(r)?,
        provider_ref: r.text("provider_ref")?,
        amount: Amount {
            minor: r.int("amount")?,
            currency: Currency::parse(&r.text("currency")?)
                .map_err(|_| corrupt("payments", "currency"))?,
        },
        status: SessionStatus::parse(&r.text("status")?)
            .ok_or_else(|| corrupt("payments", "status"))?,
        next_check_at: r.time("next_check_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub fn refund_from_row(r: &impl ReadRow) -> Result<RefundTask, StoreError> {
    Ok(RefundTask {
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        id: RefundId::from_uuid(r.uuid("id")?),
        order_id: OrderId::from_uuid(r.uuid("order_id")?),
        provider: provider(r)?,
        payment_ref: r.text("payment_ref")?,
        amount: Amount {
            minor: r.int("amount")?,
            currency: Currency::parse(&r.text("currency")?)
                .map_err(|_| corrupt("payment_refunds", "currency"))?,
        },
        status: RefundTaskStatus::parse(&r.text("status")?)
            .ok_or_else(|| corrupt("payment_refunds", "status"))?,
        provider_ref: r.opt_text("provider_ref")?,
        failure: r.opt_text("failure")?,
        attempts: r.int("attempts")?,
        next_attempt_at: r.time("next_attempt_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}
