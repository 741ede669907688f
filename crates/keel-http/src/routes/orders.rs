//! Carts, checkout and payment at the storefront (`/v1/store/carts*`, `/v1/store/orders*`,
//! `/v1/store/me/orders`), and orders for staff (`/v1/admin/orders*`: `orders:read` to read,
//! `orders:write` to change). Checkout, payments, fulfilments and refunds need an
//! `Idempotency-Key`.

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
struct CartLineResponse {
    id: String,
    variant_id: String,
    product_id: String,
    sku: String,
    title: String,
    quantity: i64,
    unit_price: MoneyResponse,
    subtotal: MoneyResponse,
    discount: MoneyResponse,
    tax: MoneyResponse,
    total: MoneyResponse,
}

#[derive(Serialize, ToSchema)]
struct ShippingChoice {
    id: String,
    name: String,
}

#[derive(Serialize, ToSchema)]
struct CartResponse {
    id: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    currency: &'static str,
    /// `open` or `converted` (checked out).
    status: &'static str,
    email: Option<String>,
    lines: Vec<CartLineResponse>,
    shipping_address: Option<Address>,
    shipping_option: Option<ShippingChoice>,
    promotion_code: Option<String>,
    /// The tax rate applied (exact decimal percent).
    tax_rate: String,
    totals: TotalsResponse,
    /// The order it became, once checked out.
    order_id: Option<String>,
    version: i64,
}

impl From<&PricedCart> for CartResponse {
    fn from(p: &PricedCart) -> Self {
        let c = &p.cart;
        let cur = c.currency;
        Self {
            id: c.id.to_string(),
            currency: cur.code(),
            status: match c.status {
                keel_orders::cart::CartStatus::Open => "open",
                keel_orders::cart::CartStatus::Converted => "converted",
            },
            email: c.email.clone(),
            lines: c
                .lines
                .iter()
                .zip(&p.breakdown.lines)
                .map(|(l, a)| CartLineResponse {
                    id: l.id.to_string(),
                    variant_id: l.variant_id.to_string(),
                    product_id: l.product_id.to_string(),
                    sku: l.sku.clone(),
                    title: l.title.clone(),
                    quantity: l.quantity,
                    unit_price: money(l.unit_price, cur),
                    subtotal: money(a.subtotal, cur),
                    discount: money(a.discount, cur),
                    tax: money(a.tax, cur),
                    total: money(a.total, cur),
                })
                .collect(),
            shipping_address: c.shipping_address.clone(),
            shipping_option: p.shipping_option.as_ref().map(|o| ShippingChoice {
                id: o.id.to_string(),
                name: o.name.clone(),
            }),
            promotion_code: c.promotion_code.clone(),
            tax_rate: p.tax_rate.to_string(),
            totals: totals(&p.breakdown, cur),
            order_id: c.order_id.map(|o| o.to_string()),
            version: c.version,
        }
    }
}

/// A new cart; `cart_secret` (guests only) is shown once and reaches the cart and its order.
#[derive(Serialize, ToSchema)]
struct NewCartResponse {
    cart: CartResponse,
    /// Send as `Keel-Cart-Secret` on every request about this cart or its order.
    cart_secret: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateCartRequest {
    /// ISO 4217; fixed for the cart's life.
    #[schema(value_type = crate::openapi::CurrencyCode)]
    currency: String,
    email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddItemRequest {
    variant_id: String,
    #[schema(minimum = 1, maximum = 999)]
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QuantityRequest {
    #[schema(minimum = 1, maximum = 999)]
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShippingOptionRequest {
    shipping_option_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PromotionCodeRequest {
    code: String,
}

fn cart_id(s: &str) -> Result<CartId, Problem> {
    s.parse()
        .map_err(|_| Problem::new(ProblemKind::NOT_FOUND, "No such cart."))
}

fn order_id(s: &str) -> Result<OrderId, Problem> {
    s.parse()
        .map_err(|_| Problem::new(ProblemKind::NOT_FOUND, "No such order."))
}

fn line_id(s: &str) -> Result<LineId, Problem> {
    s.parse()
        .map_err(|_| Problem::new(ProblemKind::NOT_FOUND, "No such cart line."))
}

/// Creates a cart: a signed-in customer's, or a guest's (the answer holds its secret).
#[utoipa::path(post, path = "/v1/store/carts", tag = "carts", request_body = CreateCartRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 201, body = NewCartResponse), (status = 422, body = ProblemBody)))]
async fn create_cart(
    State(state): State<AppState>,
    shopper: Shopper,
    extract::Json(req): extract::Json<CreateCartRequest>,
) -> Result<(StatusCode, Json<NewCartResponse>), Problem> {
    let (cart, secret) = state
        .orders
        .create_cart(
            shopper.tenant_id,
            shopper.access.customer,
            &req.currency,
            req.email.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewCartResponse {
            cart: CartResponse::from(&cart),
            cart_secret: secret,
        }),
    ))
}

/// A cart with its full breakdown (its customer's token, or `Keel-Cart-Secret`).
#[utoipa::path(get, path = "/v1/store/carts/{id}", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 404, body = ProblemBody)))]
async fn get_cart(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .get_cart(shopper.tenant_id, cart_id(&id)?, &shopper.access)
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Adds a variant (or more of it); its current price in the cart's currency is snapshotted.
#[utoipa::path(post, path = "/v1/store/carts/{id}/items", tag = "carts", request_body = AddItemRequest,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn add_item(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    extract::Json(req): extract::Json<AddItemRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .add_item(
            shopper.tenant_id,
            cart_id(&id)?,
            &shopper.access,
            &req.variant_id,
            req.quantity,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Sets a line's quantity (1 to 999).
#[utoipa::path(patch, path = "/v1/store/carts/{id}/items/{item_id}", tag = "carts", request_body = QuantityRequest,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn update_item(
    State(state): State<AppState>,
    shopper: Shopper,
    Path((id, item)): Path<(String, String)>,
    extract::Json(req): extract::Json<QuantityRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .set_item_quantity(
            shopper.tenant_id,
            cart_id(&id)?,
            &shopper.access,
            line_id(&item)?,
            req.quantity,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Removes a line.
#[utoipa::path(delete, path = "/v1/store/carts/{id}/items/{item_id}", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 404, body = ProblemBody)))]
async fn remove_item(
    State(state): State<AppState>,
    shopper: Shopper,
    Path((id, item)): Path<(String, String)>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .remove_item(
            shopper.tenant_id,
            cart_id(&id)?,
            &shopper.access,
            line_id(&item)?,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Sets the shipping address (it selects the tax rate).
#[utoipa::path(put, path = "/v1/store/carts/{id}/shipping-address", tag = "carts", request_body = AddressInput,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 422, body = ProblemBody)))]
async fn set_address(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    extract::Json(req): extract::Json<AddressInput>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .set_address(shopper.tenant_id, cart_id(&id)?, &shopper.access, &req)
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Chooses a shipping option that ships to the address's country in the cart's currency.
#[utoipa::path(put, path = "/v1/store/carts/{id}/shipping-option", tag = "carts", request_body = ShippingOptionRequest,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
async fn set_shipping_option(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    extract::Json(req): extract::Json<ShippingOptionRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .set_shipping_option(
            shopper.tenant_id,
            cart_id(&id)?,
            &shopper.access,
            &req.shipping_option_id,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Applies a promotion code (one per cart; a new one replaces it).
#[utoipa::path(post, path = "/v1/store/carts/{id}/promotions", tag = "carts", request_body = PromotionCodeRequest,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 409, description = "`promotion_not_applicable` or `promotion_exhausted`.", body = ProblemBody)))]
async fn apply_promotion(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    extract::Json(req): extract::Json<PromotionCodeRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .apply_promotion(shopper.tenant_id, cart_id(&id)?, &shopper.access, &req.code)
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Removes the promotion code.
#[utoipa::path(delete, path = "/v1/store/carts/{id}/promotions/{code}", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path), ("code" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 404, body = ProblemBody)))]
async fn remove_promotion(
    State(state): State<AppState>,
    shopper: Shopper,
    Path((id, code)): Path<(String, String)>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .remove_promotion(shopper.tenant_id, cart_id(&id)?, &shopper.access, &code)
        .await?;
    Ok(Json(CartResponse::from(&cart)))
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

/// Checks out the cart: prices and stock are revalidated, stock is reserved and the order is
/// created `pending_payment` with frozen totals, in one transaction. Needs an
/// `Idempotency-Key`; a retry with the same key replays the first answer.
#[utoipa::path(post, path = "/v1/store/carts/{id}/checkout", tag = "carts",
    request_body(content = Option<NoParameters>, description = "None, `null` or `{}`: checkout takes no parameters."),
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("Idempotency-Key" = String, Header), ("id" = String, Path)),
    responses(
        (status = 201, description = "The order.", body = OrderResponse),
        (status = 409, description = "`insufficient_stock`, `cart_prices_changed`, `shipping_option_unavailable`, `promotion_exhausted`, `idempotency_request_in_progress`, …", body = ProblemBody),
        (status = 422, description = "`idempotency_key_reused`; `validation_failed` for a body with members (the route takes none).", body = ProblemBody),
    ))]
async fn checkout(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    let cart = cart_id(&id)?;
    let path = format!("/v1/store/carts/{cart}/checkout");
    let request = idempotency::Fingerprint::of("POST", &path, &body, b"");
    let key = shopper.idempotency_key(key);
    let orders = &state.orders;
    order_once(&state, key, request, |receipt| async move {
        no_parameters(&body)?;
        Ok(orders
            .checkout(shopper.tenant_id, cart, &shopper.access, Some(&receipt))
            .await?)
    })
    .await
}

/// Pays the order with the built-in `manual` provider (captured at once; the order becomes
/// `paid`). Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/store/orders/{id}/payments", tag = "carts",
    request_body(content = Option<NoParameters>, description = "None, `null` or `{}`: the manual payment takes no parameters."),
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("Idempotency-Key" = String, Header), ("id" = String, Path)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`order_not_payable`.", body = ProblemBody),
        (status = 422, description = "`idempotency_key_reused`; `validation_failed` for a body with members (the route takes none).", body = ProblemBody)))]
async fn pay(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    let order = order_id(&id)?;
    let path = format!("/v1/store/orders/{order}/payments");
    let request = idempotency::Fingerprint::of("POST", &path, &body, b"");
    let key = shopper.idempotency_key(key);
    let orders = &state.orders;
    order_once(&state, key, request, |receipt| async move {
        no_parameters(&body)?;
        Ok(orders
            .pay(shopper.tenant_id, order, &shopper.access, Some(&receipt))
            .await?)
    })
    .await
}

/// One of the shopper's orders (its customer's token, or the cart's secret).
#[utoipa::path(get, path = "/v1/store/orders/{id}", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 404, body = ProblemBody)))]
async fn shopper_order(
    State(state): State<AppState>,
    shopper: Shopper,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .orders
        .shopper_order(shopper.tenant_id, order_id(&id)?, &shopper.access)
        .await?;
    Ok(Json(OrderResponse::from(&order)))
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

/// The signed-in customer's orders, newest first.
#[utoipa::path(get, path = "/v1/store/me/orders", tag = "carts", security(("bearer" = [])),
    params(("Keel-Publishable-Key" = String, Header), PageParams),
    responses((status = 200, body = OrderList), (status = 401, body = ProblemBody)))]
async fn my_orders(
    State(state): State<AppState>,
    Customer(p): Customer,
    ListQuery(page): ListQuery,
) -> Result<Json<OrderList>, Problem> {
    let filter = OrderFilter {
        customer: Some(p.customer_id),
        ..OrderFilter::default()
    };
    let page = state.orders.list_orders(p.tenant_id, &filter, page).await?;
    Ok(Json(order_list(&page)))
}

/// `?status=&created_from=&created_to=&customer=&q=` of the staff order list.
struct OrderQuery(OrderFilter);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OrderQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = form_pairs(parts.uri.query().unwrap_or_default());
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let bad = |m: &'static str| Problem::new(ProblemKind::BAD_REQUEST, m);
        let time = |k: &str, m: &'static str| {
            get(k)
                .map(|v| {
                    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| bad(m))
                })
                .transpose()
        };
        Ok(Self(OrderFilter {
            status: get("status")
                .map(|s| {
                    OrderStatus::parse(s)
                        .ok_or_else(|| bad("`status` must be an order status such as `paid`."))
                })
                .transpose()?,
            created_from: time("created_from", "`created_from` must be an RFC 3339 time.")?,
            created_to: time("created_to", "`created_to` must be an RFC 3339 time.")?,
            customer: get("customer")
                .map(|c| {
                    c.parse()
                        .map_err(|_| bad("`customer` must be a customer id (`cus_…`)."))
                })
                .transpose()?,
            q: get("q")
                .map(|q| {
                    let q = q.trim();
                    if q.is_empty() || q.len() > 254 {
                        Err(bad("`q` must be 1 to 254 characters."))
                    } else {
                        Ok(q.to_owned())
                    }
                })
                .transpose()?,
        }))
    }
}

/// The shop's orders, newest first, filtered.
#[utoipa::path(get, path = "/v1/admin/orders", tag = "orders", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query), ("created_from" = Option<String>, Query), ("created_to" = Option<String>, Query),
        ("customer" = Option<String>, Query), ("q" = Option<String>, Query, description = "Order number (`1001` or `#1001`) or part of the email"),
        PageParams,
    ),
    responses((status = 200, body = OrderList), (status = 400, body = ProblemBody)))]
async fn list_orders(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersRead>,
    OrderQuery(filter): OrderQuery,
    ListQuery(page): ListQuery,
) -> Result<Json<OrderList>, Problem> {
    let page = state
        .orders
        .list_orders(auth.principal.tenant_id, &filter, page)
        .await?;
    Ok(Json(order_list(&page)))
}

/// One order with its timeline (its events, oldest first).
#[utoipa::path(get, path = "/v1/admin/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 404, body = ProblemBody)))]
async fn get_order(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let d = state
        .orders
        .order_detail(auth.principal.tenant_id, order_id(&id)?)
        .await?;
    let mut res = Json(OrderResponse::from(&d)).into_response();
    res.headers_mut().insert(
        axum::http::header::ETAG,
        crate::caching::version_etag(d.order.version),
    );
    Ok(res)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LineQuantity {
    line_id: String,
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FulfilRequest {
    lines: Vec<LineQuantity>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShipRequest {
    carrier: String,
    tracking_number: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    reason: Option<String>,
}

/// A refund: `amount` (minor units, split over what is left, shipping included) or `lines`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    amount: Option<i64>,
    lines: Option<Vec<LineQuantity>>,
    reason: Option<String>,
}

fn parse_lines(lines: &[LineQuantity], pointer: &str) -> Result<Vec<(LineId, i64)>, Problem> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.line_id.parse().map(|id| (id, l.quantity)).map_err(|_| {
                Problem::invalid_field(
                    &format!("{pointer}/{i}/line_id"),
                    "must be an order line id (`item_…`)",
                )
            })
        })
        .collect()
}

/// The idempotent skeleton of a staff POST on an order: key, fingerprint, once.
async fn staff_once<F, Fut>(
    state: &AppState,
    auth: &crate::auth::AdminPrincipal,
    headers: &HeaderMap,
    path: String,
    body: &[u8],
    work: F,
) -> Result<Response, Problem>
where
    F: FnOnce(OrderReceipt) -> Fut + Send,
    Fut: Future<Output = Result<Order, Problem>> + Send,
{
    let key = idempotency::required_key(headers)?;
    let scope = match &auth.actor {
        crate::auth::AdminActor::Staff(s) => format!("usr:{}", s.user_id),
        crate::auth::AdminActor::Key(k) => format!("key:{}", k.key_id),
    };
    let request = idempotency::Fingerprint::of("POST", &path, body, body);
    let key = keel_kernel::idempotency::IdempotencyKey {
        tenant_id: auth.tenant_id,
        scope,
        key,
    };
    order_once(state, key, request, work).await
}

/// Fulfils lines (partially allowed, never more than ordered); the stock leaves the
/// reservation and the shelf. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/fulfillments", tag = "orders", security(("bearer" = [])), request_body = FulfilRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`order_not_fulfillable`, `over_fulfilment`.", body = ProblemBody)))]
async fn fulfil(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let order = order_id(&id)?;
    let path = format!("/v1/admin/orders/{order}/fulfillments");
    let (orders, tenant, bytes) = (&state.orders, auth.principal.tenant_id, &body);
    staff_once(
        &state,
        &auth.principal,
        &headers,
        path,
        &body,
        |receipt| async move {
            let req: FulfilRequest = parse_json(bytes)?;
            let lines = parse_lines(&req.lines, "/lines")?;
            Ok(orders
                .fulfil(tenant, order, &lines, if_match, Some(&receipt))
                .await?)
        },
    )
    .await
}

/// Records a shipment (carrier and tracking number) of a fulfilled order.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/shipments", tag = "orders", security(("bearer" = [])), request_body = ShipRequest,
    params(("id" = String, Path)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`order_not_shippable`.", body = ProblemBody)))]
async fn ship(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<ShipRequest>,
) -> Result<(StatusCode, Json<OrderResponse>), Problem> {
    let order = state
        .orders
        .ship(
            auth.principal.tenant_id,
            order_id(&id)?,
            &req.carrier,
            &req.tracking_number,
            if_match,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(OrderResponse::from(&order))))
}

/// Marks a shipped order delivered.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/deliver", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 409, description = "`order_not_deliverable`.", body = ProblemBody)))]
async fn deliver(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .orders
        .deliver(auth.principal.tenant_id, order_id(&id)?, if_match)
        .await?;
    Ok(Json(OrderResponse::from(&order)))
}

/// Cancels an order not yet completely fulfilled: held stock is released, what was captured
/// is refunded.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), request_body = CancelRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 409, description = "`order_not_cancellable`.", body = ProblemBody)))]
async fn cancel(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<CancelRequest>,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .orders
        .cancel(
            auth.principal.tenant_id,
            order_id(&id)?,
            req.reason.as_deref().unwrap_or("cancelled by staff"),
            if_match,
        )
        .await?;
    Ok(Json(OrderResponse::from(&order)))
}

/// Refunds part of the payment, by amount or by lines; never more than captured. Needs an
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/refunds", tag = "orders", security(("bearer" = [])), request_body = RefundBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`over_refund`, `order_not_refundable`.", body = ProblemBody)))]
async fn refund(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let order = order_id(&id)?;
    let path = format!("/v1/admin/orders/{order}/refunds");
    let (orders, tenant, bytes) = (&state.orders, auth.principal.tenant_id, &body);
    staff_once(
        &state,
        &auth.principal,
        &headers,
        path,
        &body,
        |receipt| async move {
            let req: RefundBody = parse_json(bytes)?;
            let request = match (req.amount, &req.lines) {
                (Some(a), None) => RefundRequest::Amount(a),
                (None, Some(lines)) => RefundRequest::Lines(parse_lines(lines, "/lines")?),
                _ => {
                    return Err(Problem::invalid_field(
                        "",
                        "give exactly one of `amount` or `lines`",
                    ));
                }
            };
            if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
                return Err(Problem::invalid_field(
                    "/reason",
                    "must be at most 500 characters",
                ));
            }
            Ok(orders
                .refund(
                    tenant,
                    order,
                    &request,
                    req.reason.clone(),
                    if_match,
                    Some(&receipt),
                )
                .await?)
        },
    )
    .await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_cart))
        .routes(routes!(get_cart))
        .routes(routes!(add_item))
        .routes(routes!(update_item, remove_item))
        .routes(routes!(set_address))
        .routes(routes!(set_shipping_option))
        .routes(routes!(apply_promotion))
        .routes(routes!(remove_promotion))
        .routes(routes!(checkout))
        .routes(routes!(pay))
        .routes(routes!(shopper_order))
        .routes(routes!(my_orders))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(fulfil))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .routes(routes!(cancel))
        .routes(routes!(refund))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema as _;

    /// The document's quantity bounds are the cart's own (attributes cannot name a constant).
    #[test]
    fn quantity_bounds_in_the_document_are_the_carts() {
        for schema in [
            super::AddItemRequest::schema(),
            super::QuantityRequest::schema(),
        ] {
            let schema = serde_json::to_value(schema).expect("schema");
            let quantity = &schema["properties"]["quantity"];
            assert_eq!(
                quantity["minimum"],
                keel_orders::cart::QUANTITY_MIN,
                "{schema}"
            );
            assert_eq!(
                quantity["maximum"],
                keel_orders::cart::QUANTITY_MAX,
                "{schema}"
            );
        }
    }
}
