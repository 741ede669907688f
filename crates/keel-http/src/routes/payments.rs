//! Payments: a shop's provider settings (`/v1/admin/payment-providers*`, `settings:manage`,
//! never showing a secret) and the providers' signed webhooks
//! (`/v1/hooks/payments/stripe/{tenant}`, authenticated by their signature alone).

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
};
use keel_kernel::TenantId;
use keel_payments::{
    domain::{CaptureMode, ProviderKind},
    service::{ProviderInput, ProviderView},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{RequireStaff, perm::SettingsManage},
    caching::IfMatch,
    extract,
    problem::{Problem, ProblemBody, ProblemKind},
    routes::rfc3339,
};

/// A shop's settings for a payment provider. Secrets are write-only: the answer says whether
/// they are set, never what they are.
#[derive(Serialize, ToSchema)]
struct ProviderResponse {
    #[schema(example = "stripe")]
    provider: &'static str,
    enabled: bool,
    /// `automatic` (captured when the shopper confirms) or `manual` (authorised, captured
    /// later).
    capture_mode: &'static str,
    secret_key_set: bool,
    /// How many webhook signing secrets are set (two while rotating).
    webhook_secrets: usize,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl From<&ProviderView> for ProviderResponse {
    fn from(v: &ProviderView) -> Self {
        Self {
            provider: v.provider.as_str(),
            enabled: v.enabled,
            capture_mode: v.capture.as_str(),
            secret_key_set: v.secret_key_set,
            webhook_secrets: v.webhook_secrets,
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
            version: v.version,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ProviderList {
    data: Vec<ProviderResponse>,
}

/// A provider's settings. Absent secrets keep the stored ones.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProviderRequest {
    enabled: bool,
    /// `automatic` (default) or `manual`.
    capture_mode: Option<String>,
    /// The provider's secret API key (`sk_…` or a restricted `rk_…`). Sealed at rest, never
    /// shown again.
    secret_key: Option<String>,
    /// The webhook signing secrets (`whsec_…`), one to three: during a rotation both the old
    /// and the new one verify.
    webhook_secrets: Option<Vec<String>>,
}

fn provider_named(name: &str) -> Result<ProviderKind, Problem> {
    ProviderKind::parse(name)
        .filter(|k| *k == ProviderKind::Stripe)
        .ok_or_else(|| Problem::new(ProblemKind::NOT_FOUND, "No such payment provider."))
}

/// The shop's payment providers.
#[utoipa::path(get, path = "/v1/admin/payment-providers", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = ProviderList), (status = 403, body = ProblemBody)))]
async fn list_providers(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
) -> Result<Json<ProviderList>, Problem> {
    let all = state.payments.list_providers(principal.tenant_id).await?;
    Ok(Json(ProviderList {
        data: all.iter().map(ProviderResponse::from).collect(),
    }))
}

/// One payment provider's settings (`stripe`).
#[utoipa::path(get, path = "/v1/admin/payment-providers/{provider}", tag = "payments", security(("bearer" = [])),
    params(("provider" = String, Path, example = "stripe")),
    responses((status = 200, body = ProviderResponse), (status = 404, body = ProblemBody)))]
async fn get_provider(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
    Path(provider): Path<String>,
) -> Result<Json<ProviderResponse>, Problem> {
    let kind = provider_named(&provider)?;
    let view = state
        .payments
        .get_provider(principal.tenant_id, kind)
        .await?;
    Ok(Json(ProviderResponse::from(&view)))
}

/// Sets a payment provider up for the shop (`stripe`): enabled, capture mode, its secret key
/// and webhook signing secrets. An enabled provider needs both secrets. With `If-Match`,
/// only at that version. The provider's webhooks go to
/// `/v1/hooks/payments/stripe/{the shop's id}`.
#[utoipa::path(put, path = "/v1/admin/payment-providers/{provider}", tag = "payments", security(("bearer" = [])),
    request_body = ProviderRequest,
    params(("provider" = String, Path, example = "stripe"), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = ProviderResponse), (status = 404, body = ProblemBody),
        (status = 412, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn put_provider(
    State(state): State<AppState>,
    RequireStaff { principal, .. }: RequireStaff<SettingsManage>,
    Path(provider): Path<String>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<ProviderRequest>,
) -> Result<Json<ProviderResponse>, Problem> {
    let kind = provider_named(&provider)?;
    let capture = match req.capture_mode.as_deref() {
        None => CaptureMode::Automatic,
        Some(m) => CaptureMode::parse(m).ok_or_else(|| {
            Problem::invalid_field("/capture_mode", "must be `automatic` or `manual`")
        })?,
    };
    let view = state
        .payments
        .save_provider(
            principal.tenant_id,
            kind,
            ProviderInput {
                enabled: req.enabled,
                capture,
                secret_key: req.secret_key,
                webhook_secrets: req.webhook_secrets,
            },
            if_match,
        )
        .await?;
    Ok(Json(ProviderResponse::from(&view)))
}

#[derive(Serialize, ToSchema)]
struct HookAnswer {
    received: bool,
    /// The event was stored before: it changed nothing this time.
    duplicate: bool,
}

/// Stripe's webhook for one shop. Verified with the shop's signing secrets
/// (`Stripe-Signature`: HMAC-SHA256 over `t.payload`, 300 s tolerance either way), stored once
/// by event id, its effect applied in the same transaction: `payment_intent.succeeded` pays
/// the order (exactly its total, else `payment.mismatch`), `payment_intent.payment_failed`
/// leaves it payable, `charge.refunded` records a refund made at the provider. Other types
/// are stored and ignored.
#[utoipa::path(post, path = "/v1/hooks/payments/stripe/{tenant}", tag = "payments",
    request_body(content = String, content_type = "application/json", description = "The provider's event, as signed."),
    params(("tenant" = String, Path, description = "The shop's id (`ten_…`)."), ("Stripe-Signature" = String, Header)),
    responses((status = 200, body = HookAnswer),
        (status = 400, description = "`invalid_webhook_signature`: bad or stale signature, unknown shop, not an event. Nothing stored.", body = ProblemBody)))]
async fn stripe_hook(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HookAnswer>, Problem> {
    let bad = |why: &str| {
        Problem::new(
            ProblemKind::INVALID_WEBHOOK_SIGNATURE,
            format!("The webhook was not accepted: {why}. Nothing was stored."),
        )
    };
    let tenant: TenantId = tenant.parse().map_err(|_| bad("unknown shop"))?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("no Stripe-Signature header"))?;
    let outcome = state
        .payments
        .receive_webhook(tenant, ProviderKind::Stripe, signature, &body)
        .await?;
    if !outcome.refunds.is_empty() {
        // Money owed back (compensation) goes to the provider after the answer: the webhook
        // answers fast, and the retry job takes over whatever this attempt cannot finish.
        let payments = state.payments.clone();
        tokio::spawn(async move {
            for task in outcome.refunds {
                if let Err(e) = payments.run_refund(&task).await {
                    tracing::warn!(refund = %task.id, error = %e, "a compensating refund is pending; the retry job tries again");
                }
            }
        });
    }
    state.worker_wake.notify_one();
    Ok(Json(HookAnswer {
        received: true,
        duplicate: outcome.repeat,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers))
        .routes(routes!(get_provider, put_provider))
        .routes(routes!(stripe_hook))
}
