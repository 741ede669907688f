//! Orders for staff (`/v1/admin/orders*`: `orders:read` to read, `orders:write` to change):
//! the list, one order, and the lifecycle steps (fulfil, ship, deliver, cancel, refund).

#[allow(clippy::wildcard_imports)]
use super::*;

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
    Id(id): Id<OrderId>,
) -> Result<Response, Problem> {
    let d = state
        .orders
        .order_detail(auth.principal.tenant_id, id)
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

/// The idempotent skeleton of a staff POST on an order: key, fingerprint, once. The key's
/// scope is the staff member or secret key, whatever the transport (REST or GraphQL).
async fn staff_once<F, Fut>(
    state: &AppState,
    auth: &crate::auth::AdminPrincipal,
    key: String,
    path: String,
    body: &[u8],
    work: F,
) -> Result<Response, Problem>
where
    F: FnOnce(OrderReceipt) -> Fut + Send,
    Fut: Future<Output = Result<Order, Problem>> + Send,
{
    idempotency::check_key(&key)?;
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
    Id(id): Id<OrderId>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    fulfil_once(&state, &auth.principal, key, id, if_match, &body).await
}

/// `POST /v1/admin/orders/{id}/fulfillments` for any transport: `body` is the REST body,
/// `key` the `Idempotency-Key`; answers 201 and the order, or the stored answer of the key.
pub async fn fulfil_once(
    state: &AppState,
    principal: &crate::auth::AdminPrincipal,
    key: String,
    order: OrderId,
    if_match: Option<i64>,
    body: &[u8],
) -> Result<Response, Problem> {
    let path = format!("/v1/admin/orders/{order}/fulfillments");
    let (orders, tenant) = (&state.orders, principal.tenant_id);
    staff_once(state, principal, key, path, body, |receipt| async move {
        let req: FulfilRequest = parse_json(body)?;
        let lines = parse_lines(&req.lines, "/lines")?;
        Ok(orders
            .fulfil(tenant, order, &lines, if_match, Some(&receipt))
            .await?)
    })
    .await
}

/// Records a shipment (carrier and tracking number) of a fulfilled order.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/shipments", tag = "orders", security(("bearer" = [])), request_body = ShipRequest,
    params(("id" = String, Path)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`order_not_shippable`.", body = ProblemBody)))]
async fn ship(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Id(id): Id<OrderId>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<ShipRequest>,
) -> Result<(StatusCode, Json<OrderResponse>), Problem> {
    let order = state
        .orders
        .ship(
            auth.principal.tenant_id,
            id,
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
    Id(id): Id<OrderId>,
    IfMatch(if_match): IfMatch,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .orders
        .deliver(auth.principal.tenant_id, id, if_match)
        .await?;
    Ok(Json(OrderResponse::from(&order)))
}

/// Cancels an order not yet completely fulfilled: held stock is released, what was captured
/// is refunded (through the payment's provider: the refund is `pending` until it answers).
#[utoipa::path(post, path = "/v1/admin/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), request_body = CancelRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 409, description = "`order_not_cancellable`.", body = ProblemBody)))]
async fn cancel(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Id(id): Id<OrderId>,
    IfMatch(if_match): IfMatch,
    extract::Json(req): extract::Json<CancelRequest>,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .payments
        .cancel(
            auth.principal.tenant_id,
            id,
            req.reason.as_deref().unwrap_or("cancelled by staff"),
            if_match,
        )
        .await?;
    Ok(Json(OrderResponse::from(&order)))
}

/// Refunds part of the payment, by amount or by lines; never more than captured (refunds
/// still pending count). An order paid through a provider is refunded there, with the
/// refund's own idempotency key: the answer shows the refund `pending`; it becomes
/// `succeeded` (event `order.refunded`) or `failed` (event `refund.failed`, the amount is
/// refundable again) when the provider answers, at once or through the retry job. Needs an
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/refunds", tag = "orders", security(("bearer" = [])), request_body = RefundBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`over_refund`, `order_not_refundable`.", body = ProblemBody)))]
async fn refund(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Id(id): Id<OrderId>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    refund_once(&state, &auth.principal, key, id, if_match, &body).await
}

/// `POST /v1/admin/orders/{id}/refunds` for any transport (see [`fulfil_once`]).
pub async fn refund_once(
    state: &AppState,
    principal: &crate::auth::AdminPrincipal,
    key: String,
    order: OrderId,
    if_match: Option<i64>,
    body: &[u8],
) -> Result<Response, Problem> {
    let path = format!("/v1/admin/orders/{order}/refunds");
    let (payments, tenant) = (&state.payments, principal.tenant_id);
    staff_once(state, principal, key, path, body, |receipt| async move {
        let req: RefundBody = parse_json(body)?;
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
        Ok(payments
            .refund(
                tenant,
                order,
                &request,
                req.reason.clone(),
                if_match,
                Some(&receipt),
            )
            .await?)
    })
    .await
}

/// A manual payment recorded by staff.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ManualPaymentRequest {
    /// Staff's reference for the money (a bank transfer's reference, a receipt number); 1 to
    /// 200 characters. Defaults to `manual_<order id>`.
    reference: Option<String>,
}

/// Records an offline payment (cash on delivery, bank transfer) with the `manual` provider:
/// exactly the order's total, captured, the order becomes `paid` (`order.paid`). Staff only
/// (`orders:write`): the storefront can never mark an order paid. Needs an `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/payments", tag = "orders", security(("bearer" = [])),
    request_body(content = Option<ManualPaymentRequest>, description = "None, `null` or an object with an optional `reference`."),
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = OrderResponse), (status = 409, description = "`order_not_payable`.", body = ProblemBody),
        (status = 422, description = "`idempotency_key_reused`, `validation_failed`.", body = ProblemBody)))]
async fn record_payment(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Id(id): Id<OrderId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    record_payment_once(&state, &auth.principal, key, id, &body).await
}

/// `POST /v1/admin/orders/{id}/payments` for any transport (see [`fulfil_once`]).
pub async fn record_payment_once(
    state: &AppState,
    principal: &crate::auth::AdminPrincipal,
    key: String,
    order: OrderId,
    body: &[u8],
) -> Result<Response, Problem> {
    let path = format!("/v1/admin/orders/{order}/payments");
    let (orders, tenant) = (&state.orders, principal.tenant_id);
    staff_once(state, principal, key, path, body, |receipt| async move {
        let req: Option<ManualPaymentRequest> = if body.is_empty() {
            None
        } else {
            parse_json(body)?
        };
        let reference = req.and_then(|r| r.reference);
        Ok(orders
            .record_manual_payment(tenant, order, reference.as_deref(), Some(&receipt))
            .await?)
    })
    .await
}

/// Captures the order's payment authorised at the provider (the shop's capture mode
/// `manual`): exactly the order's total; the order becomes `paid` (`order.paid`) when the
/// provider has taken it. Capture before the order's `expires_at`: an expired order's
/// authorisation is released.
#[utoipa::path(post, path = "/v1/admin/orders/{id}/capture", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = OrderResponse),
        (status = 409, description = "`order_not_payable`, `payment_not_capturable`.", body = ProblemBody),
        (status = 502, description = "`payment_provider_refused`.", body = ProblemBody),
        (status = 503, description = "`payment_provider_unavailable` (with `Retry-After`).", body = ProblemBody)))]
async fn capture(
    State(state): State<AppState>,
    auth: RequirePermission<OrdersWrite>,
    Id(id): Id<OrderId>,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state.payments.capture(auth.principal.tenant_id, id).await?;
    Ok(Json(OrderResponse::from(&order)))
}

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(fulfil))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .routes(routes!(cancel))
        .routes(routes!(refund))
        .routes(routes!(record_payment))
        .routes(routes!(capture))
}
