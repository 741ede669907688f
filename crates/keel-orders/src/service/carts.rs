//! Carts: reading one the caller may reach, pricing it, and every change a shopper makes.

#[allow(clippy::wildcard_imports)]
use super::*;

impl OrdersService {
    /// Reads a cart the caller may reach: its customer's, or a guest cart with its secret.
    /// Anything else is `NotFound`, like a missing cart.
    pub(super) async fn cart_for(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
    ) -> Result<Cart, OrdersError> {
        Ok(self.cart_with_hash_for(tenant, id, access).await?.0)
    }

    /// [`Self::cart_for`], with the hash of the guest cart's secret (which the order keeps).
    pub(super) async fn cart_with_hash_for(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
    ) -> Result<(Cart, Option<String>), OrdersError> {
        let (cart, hash) = self.carts.get_cart(tenant, id).await?;
        // A cart left alone for the idle time is gone, whoever asks (maintenance deletes it).
        if self.clock.now() >= cart.updated_at + self.settings.cart_idle_ttl {
            return Err(OrdersError::NotFound);
        }
        let allowed = match (cart.customer_id, &hash) {
            (Some(owner), _) => access.customer == Some(owner),
            (None, Some(h)) => access
                .secret
                .as_deref()
                .is_some_and(|s| same_hash(&hash_secret(s), h)),
            (None, None) => false,
        };
        if allowed {
            Ok((cart, hash))
        } else {
            Err(OrdersError::NotFound)
        }
    }

    /// The pricing cache's hits and misses (ADR 0021), for `/metrics`.
    pub fn counters(&self) -> Vec<keel_kernel::health::StoreCounter> {
        self.pricing.counters()
    }

    /// Prices a cart answer with the shop's setup as this node last read it, for at most the
    /// configured time (ADR 0021).
    pub async fn price_cart(
        &self,
        tenant: TenantId,
        cart: Cart,
    ) -> Result<PricedCart, OrdersError> {
        let lookup = Self::pricing_lookup(&cart);
        let now = self.clock.now();
        let found = if let Some(found) = self.pricing.get(tenant, &lookup, now) {
            found
        } else {
            let ticket = self.pricing.ticket();
            let found = self.setup.pricing_records(tenant, &lookup).await?;
            self.pricing.put(tenant, &lookup, &found, ticket, now);
            found
        };
        self.price_with(cart, &lookup, &found)
    }

    /// Prices a cart with the shop's setup as it is now: what an order is charged.
    pub(super) async fn price_cart_fresh(
        &self,
        tenant: TenantId,
        cart: Cart,
    ) -> Result<PricedCart, OrdersError> {
        let lookup = Self::pricing_lookup(&cart);
        let found = self.setup.pricing_records(tenant, &lookup).await?;
        self.price_with(cart, &lookup, &found)
    }

    pub(super) fn price_with(
        &self,
        cart: Cart,
        lookup: &PricingLookup,
        found: &PricingRecords,
    ) -> Result<PricedCart, OrdersError> {
        let settings = found.settings;
        // The region's rate, else the country's, else none.
        let tax: Option<TaxRate> = [&lookup.tax_region, &lookup.tax_country]
            .into_iter()
            .flatten()
            .find_map(|key| found.by_key(SetupKind::TaxRate, key))
            .map(value_of)
            .transpose()?;
        let shipping_option = lookup
            .shipping_option
            .and_then(|id| found.by_id(SetupKind::ShippingOption, id))
            .map(value_of::<ShippingOption>)
            .transpose()?
            .filter(|o| applies(o, &cart));
        let promotion: Option<Promotion> = lookup
            .promotion_code
            .as_deref()
            .and_then(|code| found.by_key(SetupKind::Promotion, code))
            .map(value_of)
            .transpose()?;
        let now = self.clock.now();
        let discount = match &promotion {
            Some(p) if p.is_live(now) => match &p.value {
                PromotionValue::Percent { percent } => Discount::Percent(*percent),
                PromotionValue::FixedAmount { amounts } => amounts
                    .iter()
                    .find(|m| m.currency() == cart.currency)
                    .map_or(Discount::None, |m| Discount::Fixed(m.minor())),
            },
            _ => Discount::None,
        };
        let shipping = shipping_option.as_ref().and_then(|o| {
            o.amount_in(cart.currency).map(|a| ShippingInput {
                amount: a.minor(),
                free_over: o
                    .free_over_in(cart.currency)
                    .map(keel_kernel::money::Money::minor),
            })
        });
        let tax_rate = tax.as_ref().map_or(Percent::ZERO, |t| t.rate);
        let breakdown = price(&PricingInput {
            lines: cart
                .lines
                .iter()
                .map(|l| LineInput {
                    unit_price: l.unit_price,
                    quantity: l.quantity,
                })
                .collect(),
            discount,
            shipping,
            tax_rate,
            shipping_taxable: tax.as_ref().is_some_and(|t| t.shipping_taxable),
            tax_inclusive: settings.prices_include_tax,
        })
        .map_err(|_| {
            cart_error(
                "amount_out_of_range",
                "The cart's amounts are out of range.",
            )
        })?;
        Ok(PricedCart {
            cart,
            breakdown,
            shipping_option,
            promotion,
            tax_rate,
        })
    }

    /// The cart's shipping option while it still applies. The shop may delete an option, or
    /// drop its price in the cart's currency, after a shopper chose it: the cart then prices
    /// without shipping and shows no option (rather than failing every read of the cart, or
    /// checking out at no shipping cost), and checkout asks for a new choice.
    pub(super) async fn chosen_shipping(
        &self,
        tenant: TenantId,
        cart: &Cart,
    ) -> Result<Option<ShippingOption>, OrdersError> {
        let Some(id) = cart.shipping_option_id else {
            return Ok(None);
        };
        match self.get_setup::<ShippingOption>(tenant, id.as_uuid()).await {
            Ok(o) if applies(&o, cart) => Ok(Some(o)),
            Ok(_) | Err(OrdersError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a cart in `currency`, owned by the customer or (guest) reachable with the
    /// returned secret.
    pub async fn create_cart(
        &self,
        tenant: TenantId,
        customer: Option<CustomerId>,
        currency: &str,
        email: Option<&str>,
    ) -> Result<(PricedCart, Option<String>), OrdersError> {
        let mut issues = Issues::default();
        let currency = Currency::parse(currency)
            .map_err(|_| {
                issues.push(
                    "/currency",
                    "must be an ISO 4217 currency code such as `USD`",
                );
            })
            .ok();
        let email = email.map(|e| {
            parse_email(e)
                .ok_or_else(|| issues.push("/email", "must be an email address"))
                .ok()
        });
        let (Some(currency), true) = (currency, issues.is_empty()) else {
            return Err(OrdersError::Invalid(issues.into_vec()));
        };
        let now = self.clock.now();
        let cart = Cart {
            id: CartId::new(),
            tenant_id: tenant,
            currency,
            customer_id: customer,
            email: email.flatten(),
            lines: Vec::new(),
            shipping_address: None,
            shipping_option_id: None,
            promotion_code: None,
            status: CartStatus::Open,
            order_id: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let secret = customer.is_none().then(|| {
            let mut bytes = [0_u8; 32];
            getrandom::fill(&mut bytes).expect("the OS random source is available");
            format!("cs_{}", URL_SAFE_NO_PAD.encode(bytes))
        });
        let e = event(
            tenant,
            "cart.created",
            &serde_json::json!({"cart_id": cart.id, "currency": currency}),
            now,
        )?;
        self.carts
            .create_cart(&cart, secret.as_deref().map(hash_secret).as_deref(), &[e])
            .await?;
        Ok((self.price_cart(tenant, cart).await?, secret))
    }

    pub async fn get_cart(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
    ) -> Result<PricedCart, OrdersError> {
        let cart = self.cart_for(tenant, id, access).await?;
        self.price_cart(tenant, cart).await
    }

    /// Reads, changes and saves an open cart, retrying a lost race. `read` is the cart as the
    /// caller already read it through [`Self::cart_for`], used for the first attempt.
    pub(super) async fn modify_cart(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        mut read: Option<Cart>,
        change: impl Fn(&mut Cart) -> Result<(), OrdersError> + Send + Sync,
    ) -> Result<PricedCart, OrdersError> {
        let kind = "cart.updated";
        for _ in 0..SAVE_ATTEMPTS {
            let mut cart = match read.take() {
                Some(cart) => cart,
                None => self.cart_for(tenant, id, access).await?,
            };
            if cart.status != CartStatus::Open {
                return Err(cart_error(
                    "cart_checked_out",
                    "This cart was checked out; start a new one.",
                ));
            }
            let read = cart.version;
            change(&mut cart)?;
            let now = self.clock.now();
            cart.version = read + 1;
            cart.updated_at = now;
            let e = event(
                tenant,
                kind,
                &serde_json::json!({"cart_id": cart.id, "version": cart.version}),
                now,
            )?;
            match self.carts.save_cart(&cart, read, &[e]).await {
                Ok(()) => return self.price_cart(tenant, cart).await,
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrdersError::Contended)
    }

    /// The current unit price of a variant in `currency`, with what a cart line shows of it
    /// (active products only).
    pub(super) async fn sellable(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<(VariantForSale, i64), OrdersError> {
        let v = match self
            .catalog
            .variant_for_sale(tenant, variant, currency)
            .await
        {
            Ok(v) if v.product_status == ProductStatus::Active => v,
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(invalid(
                    "/variant_id",
                    "is not a variant of an active product",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let price = v
            .price
            .ok_or_else(|| invalid("/variant_id", format!("has no price in {currency}")))?;
        Ok((v, price.minor()))
    }

    /// [`Self::sellable`]'s unit prices for several variants in one read: each an active
    /// product's variant with a price in `currency`, else the same refusal.
    pub(super) async fn sellables(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
        currency: Currency,
    ) -> Result<std::collections::HashMap<VariantId, i64>, OrdersError> {
        let found = self
            .catalog
            .variants_for_sale(tenant, variants, currency)
            .await?;
        let mut prices = std::collections::HashMap::with_capacity(found.len());
        for v in found {
            if v.product_status != ProductStatus::Active {
                continue;
            }
            let price = v
                .price
                .ok_or_else(|| invalid("/variant_id", format!("has no price in {currency}")))?;
            prices.insert(v.variant_id, price.minor());
        }
        Ok(prices)
    }

    pub(super) fn check_quantity(q: i64) -> Result<(), OrdersError> {
        if (QUANTITY_MIN..=QUANTITY_MAX).contains(&q) {
            Ok(())
        } else {
            Err(invalid(
                "/quantity",
                format!("must be a whole number from {QUANTITY_MIN} to {QUANTITY_MAX}"),
            ))
        }
    }

    /// Adds a variant (or more of one already in the cart), snapshotting its current price.
    pub async fn add_item(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        variant: &str,
        quantity: i64,
    ) -> Result<PricedCart, OrdersError> {
        let variant: VariantId = variant
            .parse()
            .map_err(|_| invalid("/variant_id", "must be a variant id (`var_…`)"))?;
        Self::check_quantity(quantity)?;
        let cart = self.cart_for(tenant, id, access).await?;
        let (v, unit_price) = self.sellable(tenant, variant, cart.currency).await?;
        self.modify_cart(tenant, id, access, Some(cart), |cart| {
            if let Some(line) = cart.lines.iter_mut().find(|l| l.variant_id == variant) {
                let q = line.quantity + quantity;
                Self::check_quantity(q)?;
                line.quantity = q;
                line.unit_price = unit_price;
            } else {
                if cart.lines.len() >= LINES_MAX {
                    return Err(invalid(
                        "",
                        format!("a cart holds at most {LINES_MAX} lines"),
                    ));
                }
                cart.lines.push(CartLine {
                    id: LineId::new(),
                    variant_id: variant,
                    product_id: v.product_id,
                    sku: v.sku.as_str().to_owned(),
                    title: v.variant_title.as_ref().map_or_else(
                        || v.product_title.clone(),
                        |t| format!("{} — {t}", v.product_title),
                    ),
                    quantity,
                    unit_price,
                });
            }
            Ok(())
        })
        .await
    }

    pub async fn set_item_quantity(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        line: LineId,
        quantity: i64,
    ) -> Result<PricedCart, OrdersError> {
        Self::check_quantity(quantity)?;
        let cart = self.cart_for(tenant, id, access).await?;
        let variant = cart
            .lines
            .iter()
            .find(|l| l.id == line)
            .ok_or(OrdersError::NotFound)?
            .variant_id;
        let (_, unit_price) = self.sellable(tenant, variant, cart.currency).await?;
        self.modify_cart(tenant, id, access, Some(cart), |cart| {
            let l = cart
                .lines
                .iter_mut()
                .find(|l| l.id == line)
                .ok_or(OrdersError::NotFound)?;
            l.quantity = quantity;
            l.unit_price = unit_price;
            Ok(())
        })
        .await
    }

    pub async fn remove_item(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        line: LineId,
    ) -> Result<PricedCart, OrdersError> {
        self.modify_cart(tenant, id, access, None, |cart| {
            let before = cart.lines.len();
            cart.lines.retain(|l| l.id != line);
            if cart.lines.len() == before {
                Err(OrdersError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    pub async fn set_address(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        input: &AddressInput,
    ) -> Result<PricedCart, OrdersError> {
        let address = input.parse().map_err(OrdersError::Invalid)?;
        // A chosen shipping option for another country (or one that no longer applies) is
        // dropped with the new address.
        let cart = self.cart_for(tenant, id, access).await?;
        let chosen = cart.shipping_option_id;
        let keep = self
            .chosen_shipping(tenant, &cart)
            .await?
            .is_some_and(|o| o.country == address.country);
        self.modify_cart(tenant, id, access, Some(cart), |cart| {
            if !keep && cart.shipping_option_id == chosen {
                cart.shipping_option_id = None;
            }
            cart.shipping_address = Some(address.clone());
            Ok(())
        })
        .await
    }

    pub async fn set_shipping_option(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        option: &str,
    ) -> Result<PricedCart, OrdersError> {
        let option: ShippingOptionId = option.parse().map_err(|_| {
            invalid(
                "/shipping_option_id",
                "must be a shipping option id (`ship_…`)",
            )
        })?;
        let o: ShippingOption = match self.get_setup(tenant, option.as_uuid()).await {
            Ok(o) => o,
            Err(OrdersError::NotFound) => {
                return Err(invalid(
                    "/shipping_option_id",
                    "is not a shipping option of this shop",
                ));
            }
            Err(e) => return Err(e),
        };
        self.modify_cart(tenant, id, access, None, |cart| {
            let Some(address) = &cart.shipping_address else {
                return Err(cart_error(
                    "shipping_address_required",
                    "Set the shipping address first.",
                ));
            };
            if o.country != address.country {
                return Err(invalid(
                    "/shipping_option_id",
                    format!("does not ship to {}", address.country),
                ));
            }
            if o.amount_in(cart.currency).is_none() {
                return Err(invalid(
                    "/shipping_option_id",
                    format!("has no price in {}", cart.currency),
                ));
            }
            cart.shipping_option_id = Some(o.id);
            Ok(())
        })
        .await
    }

    /// A promotion the cart may use now.
    pub(super) async fn usable_promotion(
        &self,
        tenant: TenantId,
        cart: &Cart,
        code: &str,
    ) -> Result<Promotion, OrdersError> {
        let not_applicable = || {
            cart_error(
                "promotion_not_applicable",
                "This promotion code cannot be used with this cart.",
            )
        };
        let p = self
            .find_promotion(tenant, code)
            .await?
            .ok_or_else(not_applicable)?;
        if !p.is_live(self.clock.now()) {
            return Err(not_applicable());
        }
        if let PromotionValue::FixedAmount { amounts } = &p.value
            && !amounts.iter().any(|m| m.currency() == cart.currency)
        {
            return Err(not_applicable());
        }
        if p.usage_limit.is_some_and(|limit| p.times_used >= limit) {
            return Err(cart_error(
                PROMOTION_EXHAUSTED,
                "This promotion has been used as often as it may be.",
            ));
        }
        Ok(p)
    }

    pub async fn apply_promotion(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        code: &str,
    ) -> Result<PricedCart, OrdersError> {
        let code = normalise_code(code)
            .ok_or_else(|| invalid("/code", "must be 1 to 32 letters, digits, `-` or `_`"))?;
        let cart = self.cart_for(tenant, id, access).await?;
        let p = self.usable_promotion(tenant, &cart, &code).await?;
        self.modify_cart(tenant, id, access, Some(cart), |cart| {
            cart.promotion_code = Some(p.code.clone());
            Ok(())
        })
        .await
    }

    pub async fn remove_promotion(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
        code: &str,
    ) -> Result<PricedCart, OrdersError> {
        let code = normalise_code(code).ok_or(OrdersError::NotFound)?;
        self.modify_cart(tenant, id, access, None, |cart| {
            if cart.promotion_code.as_deref() == Some(code.as_str()) {
                cart.promotion_code = None;
                Ok(())
            } else {
                Err(OrdersError::NotFound)
            }
        })
        .await
    }
}
