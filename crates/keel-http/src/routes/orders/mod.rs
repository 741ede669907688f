//! Carts, checkout and payment at the storefront (`/v1/store/carts*`, `/v1/store/orders*`,
//! `/v1/store/me/orders`), and orders for staff (`/v1/admin/orders*`: `orders:read` to read,
//! `orders:write` to change). Checkout, payments, fulfilments and refunds need an
//! `Idempotency-Key`.
//!
//! What both share lives here (the order's shape, id parsing, exactly-once answers);
//! `carts` holds the storefront's use cases, `admin` the staff's.

mod admin;
mod carts;

pub use admin::{fulfil_once, record_payment_once, refund_once};
pub use carts::checkout_once;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use keel_kernel::money::Money;
use keel_orders::{
    cart::{Address, AddressInput, CartId, LineId},
    order::{Order, OrderId, OrderStatus, RefundRequest},
    ports::{OrderFilter, OrderReceipt},
    pricing::Breakdown,
    service::{OrderDetail, PricedCart},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::{Id, path_id};
use crate::{
    AppState,
    auth::{
        Customer, RequirePermission, Shopper,
        perm::{OrdersRead, OrdersWrite},
    },
    caching::IfMatch,
    extract::PageParams,
    extract::{self, ListQuery, form_pairs, parse_json},
    idempotency,
    problem::{Problem, ProblemBody, ProblemKind},
    routes::{catalog::MoneyResponse, rfc3339},
};

fn money(amount: i64, currency: keel_kernel::money::Currency) -> MoneyResponse {
    Money::new(amount, currency).into()
}

/// The full breakdown: every amount exact, in the cart's or order's currency.
#[derive(Serialize, ToSchema)]
struct TotalsResponse {
    subtotal: MoneyResponse,
    /// The order discount (the lines' discounts sum to it).
    discount: MoneyResponse,
    shipping: MoneyResponse,
    shipping_tax: MoneyResponse,
    /// All tax, lines' and shipping's; already inside the prices when `tax_inclusive`.
    tax: MoneyResponse,
    tax_inclusive: bool,
    /// `subtotal - discount + shipping (+ tax when exclusive)`, exactly.
    total: MoneyResponse,
}

fn totals(b: &Breakdown, c: keel_kernel::money::Currency) -> TotalsResponse {
    TotalsResponse {
        subtotal: money(b.subtotal, c),
        discount: money(b.discount, c),
        shipping: money(b.shipping, c),
        shipping_tax: money(b.shipping_tax, c),
        tax: money(b.tax, c),
        tax_inclusive: b.tax_inclusive,
        total: money(b.total, c),
    }
}

#[derive(Serialize, ToSchema)]
struct OrderLineResponse {
    id: String,
    variant_id: String,
    sku: String,
    title: String,
    quantity: i64,
    unit_price: MoneyResponse,
    subtotal: MoneyResponse,
    discount: MoneyResponse,
    tax: MoneyResponse,
    total: MoneyResponse,
    fulfilled: i64,
    refunded: MoneyResponse,
}

#[derive(Serialize, ToSchema)]
struct PaymentResponse {
    id: String,
    amount: MoneyResponse,
    status: String,
    provider: String,
    provider_reference: String,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct RefundResponse {
    id: String,
    amount: MoneyResponse,
    shipping: MoneyResponse,
    lines: Vec<RefundLineResponse>,
    reason: Option<String>,
    /// `pending` while the payment provider has not answered, then `succeeded` or `failed`
    /// (a failed refund's amount is refundable again).
    #[schema(example = "succeeded")]
    status: &'static str,
    created_at: String,
}

/// What a refund gave back for one order line.
#[derive(Serialize, ToSchema)]
struct RefundLineResponse {
    line_id: String,
    quantity: i64,
    /// Minor units of the order's currency.
    amount: i64,
}

/// One fulfilment: the lines (and quantities) that left the shelf together.
#[derive(Serialize, ToSchema)]
struct FulfilmentResponse {
    id: String,
    lines: Vec<FulfilmentLineResponse>,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct FulfilmentLineResponse {
    line_id: String,
    quantity: i64,
}

#[derive(Serialize, ToSchema)]
struct ShipmentResponse {
    id: String,
    carrier: String,
    tracking_number: String,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct TimelineEntry {
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: String,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// A payment session: what the shopper's browser needs to confirm the payment with the
/// provider. The `client_secret` is the provider's, for this payment only.
#[derive(Serialize, ToSchema)]
struct PaymentSessionResponse {
    id: String,
    order_id: String,
    #[schema(example = "stripe")]
    provider: &'static str,
    /// The provider's id of the payment (`pi_…`).
    provider_reference: String,
    /// Exactly the order's total.
    amount: MoneyResponse,
    /// `open`, `succeeded`, `failed` (the order stays payable) or `canceled`.
    status: &'static str,
    client_secret: Option<String>,
    created_at: String,
}

impl From<&keel_payments::service::SessionView> for PaymentSessionResponse {
    fn from(v: &keel_payments::service::SessionView) -> Self {
        let s = &v.session;
        Self {
            id: format!("ps_{}", s.id.simple()),
            order_id: OrderId::from_uuid(s.order_id).to_string(),
            provider: s.provider.as_str(),
            provider_reference: s.provider_ref.clone(),
            amount: money(s.amount.minor, s.amount.currency),
            status: s.status.as_str(),
            client_secret: v.client_secret.clone(),
            created_at: rfc3339(s.created_at),
        }
    }
}

/// An order with frozen totals.
#[derive(Serialize, ToSchema)]
struct OrderResponse {
    id: String,
    /// The shop's human number, e.g. `#1001`.
    number: String,
    status: &'static str,
    payment_status: &'static str,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    currency: &'static str,
    email: Option<String>,
    customer_id: Option<String>,
    lines: Vec<OrderLineResponse>,
    shipping_address: Address,
    promotion_code: Option<String>,
    tax_rate: String,
    totals: TotalsResponse,
    captured: MoneyResponse,
    refunded: MoneyResponse,
    payments: Vec<PaymentResponse>,
    refunds: Vec<RefundResponse>,
    fulfilments: Vec<FulfilmentResponse>,
    shipments: Vec<ShipmentResponse>,
    cancel_reason: Option<String>,
    created_at: String,
    updated_at: String,
    /// When an unpaid order is cancelled by the expiry job.
    expires_at: Option<String>,
    version: i64,
    /// Staff views only: the order's events, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Vec<TimelineEntry>>,
}

impl From<&Order> for OrderResponse {
    fn from(o: &Order) -> Self {
        let c = o.currency;
        Self {
            id: o.id.to_string(),
            number: format!("#{}", o.number),
            status: o.status.as_str(),
            payment_status: o.payment_status.as_str(),
            currency: c.code(),
            email: o.email.clone(),
            customer_id: o.customer_id.map(|c| c.to_string()),
            lines: o
                .lines
                .iter()
                .map(|l| OrderLineResponse {
                    id: l.id.to_string(),
                    variant_id: l.variant_id.to_string(),
                    sku: l.sku.clone(),
                    title: l.title.clone(),
                    quantity: l.quantity,
                    unit_price: money(l.unit_price, c),
                    subtotal: money(l.amounts.subtotal, c),
                    discount: money(l.amounts.discount, c),
                    tax: money(l.amounts.tax, c),
                    total: money(l.amounts.total, c),
                    fulfilled: l.fulfilled,
                    refunded: money(l.refunded_amount, c),
                })
                .collect(),
            shipping_address: o.shipping_address.clone(),
            promotion_code: o.promotion_code.clone(),
            tax_rate: o.tax_rate.to_string(),
            totals: totals(&o.totals, c),
            captured: money(o.captured, c),
            refunded: money(o.refunded, c),
            payments: o
                .payments
                .iter()
                .map(|p| PaymentResponse {
                    id: p.id.to_string(),
                    amount: money(p.amount, c),
                    status: p.status.clone(),
                    provider: p.provider.clone(),
                    provider_reference: p.provider_reference.clone(),
                    created_at: rfc3339(p.created_at),
                })
                .collect(),
            refunds: o
                .refunds
                .iter()
                .map(|r| RefundResponse {
                    id: r.id.to_string(),
                    amount: money(r.amount, c),
                    shipping: money(r.shipping, c),
                    lines: r
                        .lines
                        .iter()
                        .map(|l| RefundLineResponse {
                            line_id: l.line_id.to_string(),
                            quantity: l.quantity,
                            amount: l.amount,
                        })
                        .collect(),
                    reason: r.reason.clone(),
                    status: r.status.as_str(),
                    created_at: rfc3339(r.created_at),
                })
                .collect(),
            fulfilments: o
                .fulfilments
                .iter()
                .map(|f| FulfilmentResponse {
                    id: f.id.to_string(),
                    lines: f
                        .lines
                        .iter()
                        .map(|l| FulfilmentLineResponse {
                            line_id: l.line_id.to_string(),
                            quantity: l.quantity,
                        })
                        .collect(),
                    created_at: rfc3339(f.created_at),
                })
                .collect(),
            shipments: o
                .shipments
                .iter()
                .map(|s| ShipmentResponse {
                    id: s.id.to_string(),
                    carrier: s.carrier.clone(),
                    tracking_number: s.tracking_number.clone(),
                    created_at: rfc3339(s.created_at),
                })
                .collect(),
            cancel_reason: o.cancel_reason.clone(),
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
            expires_at: (o.status == OrderStatus::PendingPayment).then(|| rfc3339(o.expires_at)),
            version: o.version,
            timeline: None,
        }
    }
}

impl From<&OrderDetail> for OrderResponse {
    fn from(d: &OrderDetail) -> Self {
        let mut r = Self::from(&d.order);
        r.timeline = Some(
            d.timeline
                .iter()
                .map(|e| TimelineEntry {
                    event_type: e.event_type.clone(),
                    occurred_at: rfc3339(e.occurred_at),
                    data: e.payload.clone(),
                })
                .collect(),
        );
        r
    }
}

/// The body of an answer about an order: the same function renders what the store keeps
/// with the order (its receipt) and what the first request is answered.
fn render_order(order: &Order) -> Result<String, String> {
    serde_json::to_string(&OrderResponse::from(order)).map_err(|e| e.to_string())
}

/// Runs an idempotent order operation at most once per key (see [`idempotency::once`]). A
/// success's answer (201 and the order) is written by the store with the order itself; a
/// refusal's after it.
async fn order_once<F, Fut>(
    state: &AppState,
    key: keel_kernel::idempotency::IdempotencyKey,
    request: idempotency::Fingerprint,
    work: F,
) -> Result<Response, Problem>
where
    F: FnOnce(OrderReceipt) -> Fut + Send,
    Fut: Future<Output = Result<Order, Problem>> + Send,
{
    let receipt = OrderReceipt {
        key: key.clone(),
        status: StatusCode::CREATED.as_u16(),
        render: render_order,
    };
    idempotency::once(state, key, request, async move {
        match work(receipt).await {
            Ok(order) => match render_order(&order) {
                Ok(body) => {
                    let mut res = (
                        StatusCode::CREATED,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response();
                    res.extensions_mut().insert(idempotency::StoredWithWork);
                    res
                }
                Err(e) => Problem::internal(&std::io::Error::other(e)).into_response(),
            },
            Err(p) => p.into_response(),
        }
    })
    .await
}

/// The body of a POST that takes no parameters: none, `null` or an empty JSON object. Checked inside
/// the idempotent work, after the fingerprint (which counts the body) was compared, so a retry
/// with another body is `idempotency_key_reused`, and a first request with parameters gets a
/// 422 naming them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NoParameters {}

fn no_parameters(body: &[u8]) -> Result<(), Problem> {
    if body.is_empty() {
        return Ok(());
    }
    // Read as a JSON value first: serde would also take `[]` for a struct without fields.
    match parse_json::<serde_json::Value>(body)? {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(members) if members.is_empty() => Ok(()),
        serde_json::Value::Object(members) => Err(Problem::validation(
            members
                .keys()
                .map(|k| crate::problem::FieldError {
                    pointer: format!("/{}", extract::pointer_token(k)),
                    message: "this route takes no parameters".into(),
                })
                .collect(),
        )),
        _ => Err(Problem::invalid_field(
            "",
            "must be an object with no members, or none",
        )),
    }
}

#[derive(Serialize, ToSchema)]
struct OrderList {
    data: Vec<OrderResponse>,
    next_cursor: Option<String>,
}

fn order_list(page: &keel_kernel::page::Page<Order>) -> OrderList {
    OrderList {
        data: page.items.iter().map(OrderResponse::from).collect(),
        next_cursor: page.next_cursor.map(keel_kernel::page::Cursor::encode),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    carts::router().merge(admin::router())
}
