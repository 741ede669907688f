//! The storefront: a shopper's cart (`/v1/store/carts*`), checkout and payment, and the
//! shopper's orders (`/v1/store/orders/{id}`, `/v1/store/me/orders`).

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// Creates a cart: a signed-in customer's, or a guest's (the answer holds its secret).
#[utoipa::path(post, path = "/v1/store/carts", tag = "carts", request_body = CreateCartRequest,
    params(("Keel-Publishable-Key" = String, Header)),
    responses((status = 201, body = NewCartResponse), (status = 422, body = ProblemBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`, `RateLimit-Policy`, `RateLimit`): nothing was done.", body = ProblemBody)))]
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
    Id(id): Id<CartId>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .get_cart(shopper.tenant_id, id, &shopper.access)
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
    Id(id): Id<CartId>,
    extract::Json(req): extract::Json<AddItemRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .add_item(
            shopper.tenant_id,
            id,
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
            path_id::<CartId>(&id)?,
            &shopper.access,
            path_id::<LineId>(&item)?,
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
            path_id::<CartId>(&id)?,
            &shopper.access,
            path_id::<LineId>(&item)?,
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
    Id(id): Id<CartId>,
    extract::Json(req): extract::Json<AddressInput>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .set_address(shopper.tenant_id, id, &shopper.access, &req)
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
    Id(id): Id<CartId>,
    extract::Json(req): extract::Json<ShippingOptionRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .set_shipping_option(
            shopper.tenant_id,
            id,
            &shopper.access,
            &req.shipping_option_id,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
}

/// Applies a promotion code (one per cart; a new one replaces it).
#[utoipa::path(post, path = "/v1/store/carts/{id}/promotions", tag = "carts", request_body = PromotionCodeRequest,
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = CartResponse), (status = 409, description = "`promotion_not_applicable` or `promotion_exhausted`.", body = ProblemBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`, `RateLimit-Policy`, `RateLimit`): nothing was done.", body = ProblemBody)))]
async fn apply_promotion(
    State(state): State<AppState>,
    shopper: Shopper,
    Id(id): Id<CartId>,
    extract::Json(req): extract::Json<PromotionCodeRequest>,
) -> Result<Json<CartResponse>, Problem> {
    let cart = state
        .orders
        .apply_promotion(shopper.tenant_id, id, &shopper.access, &req.code)
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
        .remove_promotion(
            shopper.tenant_id,
            path_id::<CartId>(&id)?,
            &shopper.access,
            &code,
        )
        .await?;
    Ok(Json(CartResponse::from(&cart)))
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
        (status = 429, description = "`rate_limited` (with `Retry-After`, `RateLimit-Policy`, `RateLimit`): nothing was done.", body = ProblemBody),
    ))]
async fn checkout(
    State(state): State<AppState>,
    shopper: Shopper,
    Id(id): Id<CartId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency::required_key(&headers)?;
    checkout_once(&state, &shopper, key, id, &body).await
}

/// `POST /v1/store/carts/{id}/checkout` for any transport: `body` is the REST body (none,
/// `null` or `{}`), `key` the `Idempotency-Key`, scoped to the shopper as over REST.
pub async fn checkout_once(
    state: &AppState,
    shopper: &Shopper,
    key: String,
    cart: CartId,
    body: &[u8],
) -> Result<Response, Problem> {
    idempotency::check_key(&key)?;
    let path = format!("/v1/store/carts/{cart}/checkout");
    let request = idempotency::Fingerprint::of("POST", &path, body, b"");
    let key = shopper.idempotency_key(key);
    let orders = &state.orders;
    order_once(state, key, request, |receipt| async move {
        no_parameters(body)?;
        Ok(orders
            .checkout(shopper.tenant_id, cart, &shopper.access, Some(&receipt))
            .await?)
    })
    .await
}

/// The order's payment session with the shop's payment provider (Stripe): the
/// `client_secret` the shopper's browser confirms the payment with. One per order: asking
/// again answers the same session (the provider's idempotency key is the order's id), so a
/// retry never creates a second payment. The order becomes `paid` only when the provider says
/// so, through its signed webhook (or reconciliation), for exactly the order's total.
#[utoipa::path(post, path = "/v1/store/orders/{id}/payment-sessions", tag = "carts",
    request_body(content = Option<NoParameters>, description = "None, `null` or `{}`: the session takes no parameters."),
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header, description = "Accepted and not needed: the session is one per order."), ("id" = String, Path)),
    responses((status = 201, body = PaymentSessionResponse), (status = 404, body = ProblemBody),
        (status = 409, description = "`order_not_payable`, `payment_provider_not_configured`.", body = ProblemBody),
        (status = 502, description = "`payment_provider_refused`.", body = ProblemBody),
        (status = 503, description = "`payment_provider_unavailable` (with `Retry-After`): nothing was charged, the order stays payable.", body = ProblemBody)))]
async fn payment_session(
    State(state): State<AppState>,
    shopper: Shopper,
    Id(id): Id<OrderId>,
    body: Bytes,
) -> Result<(StatusCode, Json<PaymentSessionResponse>), Problem> {
    no_parameters(&body)?;
    let view = state
        .payments
        .open_session(shopper.tenant_id, id, &shopper.access)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PaymentSessionResponse::from(&view)),
    ))
}

/// One of the shopper's orders (its customer's token, or the cart's secret).
#[utoipa::path(get, path = "/v1/store/orders/{id}", tag = "carts",
    params(("Keel-Publishable-Key" = String, Header), ("Keel-Cart-Secret" = Option<String>, Header), ("id" = String, Path)),
    responses((status = 200, body = OrderResponse), (status = 404, body = ProblemBody)))]
async fn shopper_order(
    State(state): State<AppState>,
    shopper: Shopper,
    Id(id): Id<OrderId>,
) -> Result<Json<OrderResponse>, Problem> {
    let order = state
        .orders
        .shopper_order(shopper.tenant_id, id, &shopper.access)
        .await?;
    Ok(Json(OrderResponse::from(&order)))
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

pub(super) fn router() -> OpenApiRouter<AppState> {
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
        .routes(routes!(payment_session))
        .routes(routes!(shopper_order))
        .routes(routes!(my_orders))
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
