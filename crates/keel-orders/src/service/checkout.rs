//! Checkout and payment: a cart becomes an order with its stock held, the shopper reads it
//! and pays it; every order change goes through one guarded transition.

#[allow(clippy::wildcard_imports)]
use super::*;

impl OrdersService {
    /// Checks out a cart: revalidates prices and stock, reserves stock, counts the promotion
    /// and creates the order `pending_payment` with frozen totals, in one transaction.
    pub async fn checkout(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        let (cart, access_hash) = self.cart_with_hash_for(tenant, id, access).await?;
        let address = Self::ready_for_checkout(&cart)?;
        self.refresh_prices(tenant, &cart).await?;
        let promotion = match &cart.promotion_code {
            Some(code) => Some(self.usable_promotion(tenant, &cart, code).await?),
            None => None,
        };
        let priced = self.price_cart_fresh(tenant, cart.clone()).await?;
        if priced.shipping_option.is_none() {
            return Err(cart_error(
                "shipping_option_unavailable",
                "The cart's shipping option is no longer offered; choose another.",
            ));
        }
        let now = self.clock.now();
        let order_id = OrderId::new();
        let (lines, mut reservations) = self
            .hold_stock(tenant, &cart, &priced.breakdown, now)
            .await?;
        reservations.sort_by_key(|r| stock_lock_order(r.variant_id, r.location_id));
        let (customer_key, holder) = Self::buyer(tenant, &cart, access, promotion.as_ref())?;
        let mut order = Order {
            id: order_id,
            tenant_id: tenant,
            number: 0,
            currency: cart.currency,
            customer_id: cart.customer_id,
            email: cart.email.clone(),
            status: OrderStatus::PendingPayment,
            payment_status: PaymentStatus::Unpaid,
            lines,
            totals: priced.breakdown.clone(),
            shipping_address: address,
            shipping_option_id: cart.shipping_option_id,
            promotion_id: promotion.as_ref().map(|p| p.id),
            promotion_code: promotion.as_ref().map(|p| p.code.clone()),
            tax_rate: priced.tax_rate,
            captured: 0,
            refunded: 0,
            refunded_shipping: 0,
            payments: Vec::new(),
            refunds: Vec::new(),
            fulfilments: Vec::new(),
            shipments: Vec::new(),
            access_hash,
            cancel_reason: None,
            created_at: now,
            updated_at: now,
            expires_at: now + self.settings.unpaid_order_ttl,
            version: 1,
        };
        let e = event(
            tenant,
            "order.placed",
            &serde_json::json!({
                "order_id": order.id, "cart_id": cart.id, "total": order.totals.total, "currency": order.currency,
                "promotion": order.promotion_code,
            }),
            now,
        )?;
        let place = PlaceOrder {
            order: &order,
            converted: converted_cart(&cart, &order),
            cart_version: cart.version,
            reservations: &reservations,
            first_number: FIRST_ORDER_NUMBER,
            promotion: promotion.as_ref().map(|p| PromotionUse {
                promotion_id: p.id,
                customer_key: customer_key.clone().unwrap_or_default(),
                per_customer_limit: p.per_customer_limit,
            }),
            holder,
            limits: UnpaidLimits {
                per_customer: self.settings.unpaid_per_customer,
                per_email: self.settings.unpaid_per_email,
                per_client: self.settings.unpaid_per_address,
                now,
            },
        };
        order.number = self
            .orders
            .place_order(&place, &[e], receipt)
            .await
            .map_err(Self::checkout_conflict)?;
        tracing::info!(tenant_id = %tenant, order_id = %order.id, number = order.number, "order placed");
        Ok(order)
    }

    /// Who a checkout is for, as the limits count it: the key a promotion's uses per customer
    /// count by (the account, or a guest's email as a buyer key; never the cart, since a new
    /// cart must not be a new customer), and the holder the unpaid-order caps count.
    pub(super) fn buyer(
        tenant: TenantId,
        cart: &Cart,
        access: &ShopperAccess,
        promotion: Option<&Promotion>,
    ) -> Result<(Option<String>, UnpaidHolder), OrdersError> {
        let guest_key = cart
            .customer_id
            .is_none()
            .then(|| cart.email.as_deref().and_then(crate::cart::buyer_key))
            .flatten();
        let customer_key = cart
            .customer_id
            .map(|c| c.to_string())
            .or_else(|| guest_key.as_ref().map(|e| format!("email:{e}")));
        if promotion.is_some_and(|p| p.per_customer_limit.is_some()) && customer_key.is_none() {
            return Err(cart_error(
                "promotion_not_applicable",
                "This promotion is limited per customer: sign in, or give the cart an email address.",
            ));
        }
        let holder = UnpaidHolder {
            customer: cart.customer_id,
            email_key: guest_key,
            // Guests only: a signed-in customer answers for their orders by their account,
            // and must not be blocked by strangers behind the same address (a NAT).
            client_key: access
                .client
                .filter(|_| cart.customer_id.is_none())
                .map(|a| client_key(tenant, a)),
        };
        Ok((customer_key, holder))
    }

    /// Prices may have changed since the lines were added: refresh the snapshot, and tell the
    /// shopper rather than charging a price they did not see.
    pub(super) async fn refresh_prices(
        &self,
        tenant: TenantId,
        cart: &Cart,
    ) -> Result<(), OrdersError> {
        let mut fresh = cart.clone();
        let variants: Vec<VariantId> = cart.lines.iter().map(|l| l.variant_id).collect();
        // Every line's price in one read (issue 25: one round trip, not one per line).
        let prices = self.sellables(tenant, &variants, cart.currency).await?;
        for line in &mut fresh.lines {
            line.unit_price = *prices
                .get(&line.variant_id)
                .ok_or_else(|| invalid("/variant_id", "is not a variant of an active product"))?;
        }
        if fresh.lines != cart.lines {
            let now = self.clock.now();
            fresh.version += 1;
            fresh.updated_at = now;
            let e = event(
                tenant,
                "cart.updated",
                &serde_json::json!({"cart_id": cart.id, "version": fresh.version, "reason": "prices_changed"}),
                now,
            )?;
            match self.carts.save_cart(&fresh, cart.version, &[e]).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            return Err(cart_error(
                "cart_prices_changed",
                "Prices changed since the items were added; review the cart and check out again.",
            ));
        }
        Ok(())
    }

    /// The shopper's words for a checkout transaction that refused to commit.
    pub(super) fn checkout_conflict(e: StoreError) -> OrdersError {
        if e.is_conflict_on(INSUFFICIENT_STOCK) {
            cart_error(
                "insufficient_stock",
                "Not enough stock for every item in the cart.",
            )
        } else if e.is_conflict_on(CART_CHANGED) {
            cart_error(
                "cart_changed",
                "The cart changed or was checked out meanwhile; read it again.",
            )
        } else if e.is_conflict_on(PROMOTION_EXHAUSTED) {
            cart_error(
                PROMOTION_EXHAUSTED,
                "This promotion has been used as often as it may be.",
            )
        } else if e.is_conflict_on(PROMOTION_CUSTOMER_LIMIT) {
            cart_error(
                PROMOTION_CUSTOMER_LIMIT,
                "This promotion was used as often as one customer may.",
            )
        } else if e.is_conflict_on(UNPAID_ORDER_LIMIT) {
            cart_error(
                "too_many_unpaid_orders",
                "This shopper already holds the most unpaid orders allowed; pay for or cancel one first.",
            )
        } else {
            e.into()
        }
    }

    /// The cart's address when the cart can be checked out; otherwise what is missing.
    pub(super) fn ready_for_checkout(cart: &Cart) -> Result<crate::cart::Address, OrdersError> {
        if cart.status != CartStatus::Open {
            return Err(cart_error(
                "cart_checked_out",
                "This cart was checked out already.",
            ));
        }
        if cart.lines.is_empty() {
            return Err(cart_error("cart_empty", "Add items before checking out."));
        }
        let Some(address) = cart.shipping_address.clone() else {
            return Err(cart_error(
                "shipping_address_required",
                "Set the shipping address first.",
            ));
        };
        if cart.shipping_option_id.is_none() {
            return Err(cart_error(
                "shipping_option_required",
                "Choose a shipping option first.",
            ));
        }
        Ok(address)
    }

    /// Chooses a location for every line and builds the order lines with their reservations.
    pub(super) async fn hold_stock(
        &self,
        tenant: TenantId,
        cart: &Cart,
        breakdown: &Breakdown,
        now: OffsetDateTime,
    ) -> Result<(Vec<OrderLine>, Vec<Reservation>), OrdersError> {
        let mut reservations = Vec::with_capacity(cart.lines.len());
        let mut lines = Vec::with_capacity(cart.lines.len());
        for (line, amounts) in cart.lines.iter().zip(&breakdown.lines) {
            let location = self
                .location_for(tenant, line.variant_id, line.quantity)
                .await?;
            let r = Reservation {
                id: ReservationId::new(),
                tenant_id: tenant,
                variant_id: line.variant_id,
                location_id: location,
                quantity: line.quantity,
                created_at: now,
                released_at: None,
            };
            lines.push(OrderLine {
                id: line.id,
                variant_id: line.variant_id,
                product_id: line.product_id,
                sku: line.sku.clone(),
                title: line.title.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
                amounts: *amounts,
                reservation_id: r.id,
                location_id: location,
                fulfilled: 0,
                refunded_quantity: 0,
                refunded_amount: 0,
            });
            reservations.push(r);
        }
        Ok((lines, reservations))
    }

    /// A location that holds enough available stock of the variant (the first by level id);
    /// the reservation itself is still conditional.
    pub(super) async fn location_for(
        &self,
        tenant: TenantId,
        variant: VariantId,
        quantity: i64,
    ) -> Result<keel_catalog::LocationId, OrdersError> {
        self.inventory
            .location_with_stock(tenant, variant, quantity)
            .await?
            .ok_or_else(|| {
                cart_error(
                    "insufficient_stock",
                    "Not enough stock for every item in the cart.",
                )
            })
    }

    /// An order the shopper may reach: their own, or a guest order with its cart's secret.
    pub(super) async fn order_for(
        &self,
        tenant: TenantId,
        id: OrderId,
        access: &ShopperAccess,
    ) -> Result<Order, OrdersError> {
        let order = self.orders.get_order(tenant, id).await?;
        let allowed = match (order.customer_id, &order.access_hash) {
            (Some(owner), _) => access.customer == Some(owner),
            (None, Some(h)) => access
                .secret
                .as_deref()
                .is_some_and(|s| same_hash(&hash_secret(s), h)),
            (None, None) => false,
        };
        if allowed {
            Ok(order)
        } else {
            Err(OrdersError::NotFound)
        }
    }

    pub async fn shopper_order(
        &self,
        tenant: TenantId,
        id: OrderId,
        access: &ShopperAccess,
    ) -> Result<Order, OrdersError> {
        self.order_for(tenant, id, access).await
    }

    /// Applies a transition to an order and saves it with its stock moves and events; with
    /// `if_match`, only at that version. Retries a lost race otherwise. `read` is the order as
    /// the caller already read it, used for the first attempt (boxed: it would otherwise sit
    /// in every caller's future).
    pub(super) async fn transition<F>(
        &self,
        tenant: TenantId,
        id: OrderId,
        if_match: Option<i64>,
        mut read: Option<Box<Order>>,
        receipt: Option<&OrderReceipt>,
        mut change: F,
    ) -> Result<Order, OrdersError>
    where
        F: FnMut(
            &mut Order,
            OffsetDateTime,
        ) -> Result<(Vec<StockChange>, Vec<NewEvent>), OrdersError>,
    {
        for _ in 0..SAVE_ATTEMPTS {
            let mut order = match read.take() {
                Some(order) => *order,
                None => self.orders.get_order(tenant, id).await?,
            };
            let read = order.version;
            if if_match.is_some_and(|v| v != read) {
                return Err(OrdersError::PreconditionFailed);
            }
            let now = self.clock.now();
            let unpaid = order.status == OrderStatus::PendingPayment
                && order.payment_status == PaymentStatus::Unpaid;
            let (mut stock, events) = change(&mut order, now)?;
            stock.sort_by_key(StockChange::lock_key);
            // An unpaid order cancelled (by staff or by expiry) gives its promotion use back:
            // an abandoned checkout must not burn a limited code.
            let return_redemption =
                unpaid && order.status == OrderStatus::Cancelled && order.promotion_id.is_some();
            match self
                .orders
                .save_order(&order, read, &stock, return_redemption, &events, receipt)
                .await
            {
                Ok(()) => return Ok(order),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) && if_match.is_none() => {}
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    return Err(OrdersError::PreconditionFailed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrdersError::Contended)
    }

    /// Records an offline payment (cash on delivery, bank transfer) taken by staff with the
    /// `manual` provider: the exact total, captured at once, order `paid`. Staff only: the
    /// storefront can never mark an order paid (a provider's payment comes through its
    /// signed webhook, `keel-payments`).
    pub async fn record_manual_payment(
        &self,
        tenant: TenantId,
        id: OrderId,
        reference: Option<&str>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        if let Some(r) = reference
            && (r.is_empty() || r.chars().count() > 200 || r.chars().any(char::is_control))
        {
            return Err(invalid(
                "/reference",
                "must be 1 to 200 characters without control characters",
            ));
        }
        self.transition(tenant, id, None, None, receipt, |order, now| {
            let total = order.totals.total;
            let reference = reference.map_or_else(|| format!("manual_{}", order.id), str::to_owned);
            let payment = order.pay(MANUAL_PROVIDER, total, reference, now)?.clone();
            let e = event(tenant, "order.paid", &serde_json::json!({"order_id": order.id, "payment_id": payment.id, "provider": MANUAL_PROVIDER, "amount": payment.amount, "currency": order.currency}), now)?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }
}
