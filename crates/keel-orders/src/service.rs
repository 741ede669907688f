//! Orders use cases: pricing setup, carts, checkout, payment, staff operations and the expiry
//! job. Every state change writes its events in the same transaction.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use keel_catalog::{
    VariantId,
    domain::{FieldIssue, Issues, ProductStatus, Reservation, ReservationId, VariantForSale},
    ports::{CatalogStore, InventoryStore},
};
use keel_identity::customer::CustomerId;
use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::{NewEvent, RecordedEvent},
    money::Currency,
    page::{Page, PageRequest},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::{
    cart::{
        AddressInput, Cart, CartId, CartLine, CartStatus, LINES_MAX, LineId, QUANTITY_MAX,
        QUANTITY_MIN, parse_email,
    },
    exact::Percent,
    order::{Order, OrderError, OrderId, OrderLine, OrderStatus, PaymentStatus, RefundRequest},
    ports::{
        CART_CHANGED, CartStore, INSUFFICIENT_STOCK, OrderFilter, OrderReceipt, OrderStore,
        PROMOTION_CUSTOMER_LIMIT, PROMOTION_EXHAUSTED, PlaceOrder, PricingLookup, PricingRecords,
        PricingSettings, PromotionUse, SETUP_KEY_CONSTRAINT, SetupKind, SetupRecord, SetupStore,
        StockChange, UNPAID_ORDER_LIMIT, UnpaidHolder, UnpaidLimits, VERSION_CONFLICT,
    },
    pricing::{Breakdown, Discount, LineInput, PricingInput, ShippingInput, price},
    pricing_cache::PricingCache,
    setup::{
        Promotion, PromotionId, PromotionInput, PromotionPatch, PromotionValue, ShippingOption,
        ShippingOptionId, ShippingOptionInput, ShippingOptionPatch, TaxRate, TaxRateId,
        TaxRateInput, TaxRatePatch, normalise_code,
    },
};

/// What can go wrong, in the orders context's words.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("invalid input")]
    Invalid(Vec<FieldIssue>),
    #[error("not found")]
    NotFound,
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    /// An illegal transition of an order (409 with its code).
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A cart state that does not allow the request (409 with its code).
    #[error("{message}")]
    Cart { code: &'static str, message: String },
    #[error("the resource is being changed concurrently")]
    Contended,
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for OrdersError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

fn invalid(pointer: &str, message: impl Into<String>) -> OrdersError {
    OrdersError::Invalid(vec![FieldIssue {
        pointer: pointer.to_owned(),
        message: message.into(),
    }])
}

/// Whether a shipping option the cart chose still applies to it: the shop may have dropped its
/// price in the cart's currency since (a deleted option is not found at all).
fn applies(option: &ShippingOption, cart: &Cart) -> bool {
    option.amount_in(cart.currency).is_some()
}

fn cart_error(code: &'static str, message: impl Into<String>) -> OrdersError {
    OrdersError::Cart {
        code,
        message: message.into(),
    }
}

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, OrdersError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| OrdersError::Internal(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, OrdersError> {
    serde_json::to_value(v).map_err(|e| OrdersError::Internal(e.to_string()))
}

fn from_json<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, OrdersError> {
    serde_json::from_value(v.clone())
        .map_err(|e| OrdersError::Internal(format!("corrupt record: {e}")))
}

/// The client address as unpaid-order caps count it: its key ([`keel_kernel::net::client_key`],
/// IPv6 by /64) hashed with the shop's id, so the orders table holds no readable address.
fn client_key(tenant: TenantId, addr: std::net::IpAddr) -> String {
    let digest = Sha256::digest(
        format!("client:{tenant}:{}", keel_kernel::net::client_key(addr)).as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// SHA-256 of a secret, base64url (how cart secrets are stored and compared).
fn hash_secret(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two stored hashes without an early exit on the first differing byte.
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Exact settings of the orders context.
#[derive(Debug, Clone, Copy)]
pub struct OrdersSettings {
    /// How long an unpaid order holds its stock before the expiry job cancels it.
    pub unpaid_order_ttl: Duration,
    /// How long this node prices cart answers with the setup records it read (ADR 0021);
    /// zero: every answer reads them. Checkout always reads them afresh.
    pub pricing_cache: Duration,
    /// A cart unchanged for this long is gone: not found, then deleted by maintenance.
    pub cart_idle_ttl: Duration,
    /// Open unpaid orders one customer account may hold at once.
    pub unpaid_per_customer: i64,
    /// Open unpaid orders one guest email (its buyer key) may hold at once.
    pub unpaid_per_email: i64,
    /// Open unpaid orders one client address (IPv6: its /64) may hold at once, per shop.
    pub unpaid_per_address: i64,
}

/// Who is asking for a cart or an order at the storefront.
#[derive(Debug, Clone, Default)]
pub struct ShopperAccess {
    /// The signed-in customer, if any.
    pub customer: Option<CustomerId>,
    /// The guest cart secret presented (`Keel-Cart-Secret`), if any.
    pub secret: Option<String>,
    /// The client's address (behind trusted proxies, the forwarded one), for the cap on
    /// unpaid orders per address.
    pub client: Option<std::net::IpAddr>,
}

/// A cart with its full price breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCart {
    pub cart: Cart,
    pub breakdown: Breakdown,
    pub shipping_option: Option<ShippingOption>,
    pub promotion: Option<Promotion>,
    pub tax_rate: Percent,
}

/// An order with its timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDetail {
    pub order: Order,
    pub timeline: Vec<RecordedEvent>,
}

/// The storage ports the orders context works with.
#[derive(Debug, Clone)]
pub struct OrdersPorts {
    pub setup: Arc<dyn SetupStore>,
    pub carts: Arc<dyn CartStore>,
    pub orders: Arc<dyn OrderStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub inventory: Arc<dyn InventoryStore>,
}

/// Orders use cases.
#[derive(Debug, Clone)]
pub struct OrdersService {
    setup: Arc<dyn SetupStore>,
    carts: Arc<dyn CartStore>,
    orders: Arc<dyn OrderStore>,
    catalog: Arc<dyn CatalogStore>,
    inventory: Arc<dyn InventoryStore>,
    clock: Arc<dyn Clock>,
    settings: OrdersSettings,
    pricing: Arc<PricingCache>,
}

/// How many times a write without `If-Match` re-reads and retries after losing a race.
const SAVE_ATTEMPTS: usize = 3;

/// A typed pricing-setup value: how it is keyed and stored.
trait SetupValue: Serialize + DeserializeOwned {
    const KIND: SetupKind;
    const NAME: &'static str;
    fn id(&self) -> uuid::Uuid;
    fn key(&self) -> String;
    fn version(&self) -> i64;
    fn bump(&mut self, now: OffsetDateTime);
    fn usage_limit(&self) -> Option<i64> {
        None
    }
    fn set_times_used(&mut self, _n: i64) {}
}

impl SetupValue for TaxRate {
    const KIND: SetupKind = SetupKind::TaxRate;
    const NAME: &'static str = "tax_rate";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        match &self.region {
            Some(r) => format!("{}/{r}", self.country),
            None => self.country.to_string(),
        }
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
}

impl SetupValue for ShippingOption {
    const KIND: SetupKind = SetupKind::ShippingOption;
    const NAME: &'static str = "shipping_option";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        self.id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
}

impl SetupValue for Promotion {
    const KIND: SetupKind = SetupKind::Promotion;
    const NAME: &'static str = "promotion";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        self.code.clone()
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
    fn usage_limit(&self) -> Option<i64> {
        self.usage_limit
    }
    fn set_times_used(&mut self, n: i64) {
        self.times_used = n;
    }
}

fn record_of<T: SetupValue>(tenant: TenantId, v: &T) -> Result<SetupRecord, OrdersError> {
    Ok(SetupRecord {
        id: v.id(),
        tenant_id: tenant,
        kind: T::KIND,
        key: v.key(),
        body: to_json(v)?,
        usage_limit: v.usage_limit(),
        times_used: 0,
        version: v.version(),
    })
}

fn value_of<T: SetupValue>(r: &SetupRecord) -> Result<T, OrdersError> {
    let mut v: T = from_json(&r.body)?;
    v.set_times_used(r.times_used);
    Ok(v)
}

fn taken_key_issue(kind: SetupKind) -> OrdersError {
    match kind {
        SetupKind::TaxRate => invalid(
            "/region",
            "a rate for this country and region exists already",
        ),
        SetupKind::Promotion => invalid("/code", "is already the code of another promotion"),
        SetupKind::ShippingOption => invalid("", "exists already"),
    }
}

impl OrdersService {
    pub fn new(ports: OrdersPorts, clock: Arc<dyn Clock>, settings: OrdersSettings) -> Self {
        Self {
            setup: ports.setup,
            carts: ports.carts,
            orders: ports.orders,
            catalog: ports.catalog,
            inventory: ports.inventory,
            clock,
            pricing: Arc::new(PricingCache::new(settings.pricing_cache)),
            settings,
        }
    }

    // ---- pricing setup (generic over the three kinds) ----

    async fn create_setup<T: SetupValue>(&self, tenant: TenantId, v: T) -> Result<T, OrdersError> {
        let now = self.clock.now();
        let r = record_of(tenant, &v)?;
        let e = event(
            tenant,
            const_created(T::KIND),
            &serde_json::json!({"id": v.key(), "kind": T::NAME}),
            now,
        )?;
        let created = self.setup.create_record(&r, &[e]).await;
        self.pricing.invalidate();
        match created {
            Ok(()) => Ok(v),
            Err(e) if e.is_conflict_on(SETUP_KEY_CONSTRAINT) => Err(taken_key_issue(T::KIND)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
    ) -> Result<T, OrdersError> {
        value_of(&self.setup.get_record(tenant, T::KIND, id).await?)
    }

    async fn list_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<T>, OrdersError> {
        let p = self.setup.list_records(tenant, T::KIND, page).await?;
        Ok(Page {
            items: p.items.iter().map(value_of).collect::<Result<_, _>>()?,
            next_cursor: p.next_cursor,
        })
    }

    async fn update_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        if_match: Option<i64>,
        change: impl Fn(&mut T) -> Result<(), Vec<FieldIssue>>,
    ) -> Result<T, OrdersError> {
        for _ in 0..SAVE_ATTEMPTS {
            let mut v: T = self.get_setup(tenant, id).await?;
            let read = v.version();
            if if_match.is_some_and(|m| m != read) {
                return Err(OrdersError::PreconditionFailed);
            }
            change(&mut v).map_err(OrdersError::Invalid)?;
            let now = self.clock.now();
            v.bump(now);
            let r = record_of(tenant, &v)?;
            let e = event(
                tenant,
                const_updated(T::KIND),
                &serde_json::json!({"id": v.key(), "version": v.version()}),
                now,
            )?;
            let updated = self.setup.update_record(&r, read, &[e]).await;
            self.pricing.invalidate();
            match updated {
                Ok(()) => return Ok(v),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) && if_match.is_none() => {}
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    return Err(OrdersError::PreconditionFailed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrdersError::Contended)
    }

    async fn delete_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            const_deleted(T::KIND),
            &serde_json::json!({"kind": T::NAME, "record_id": id.to_string()}),
            now,
        )?;
        let deleted = self
            .setup
            .delete_record(tenant, T::KIND, id, if_match, &[e])
            .await;
        self.pricing.invalidate();
        match deleted {
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => Err(OrdersError::PreconditionFailed),
            other => Ok(other?),
        }
    }

    pub async fn create_tax_rate(
        &self,
        tenant: TenantId,
        input: &TaxRateInput,
    ) -> Result<TaxRate, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn tax_rate(&self, tenant: TenantId, id: TaxRateId) -> Result<TaxRate, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn tax_rates(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<TaxRate>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_tax_rate(
        &self,
        tenant: TenantId,
        id: TaxRateId,
        patch: &TaxRatePatch,
        if_match: Option<i64>,
    ) -> Result<TaxRate, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |t| patch.apply(t))
            .await
    }
    pub async fn delete_tax_rate(
        &self,
        tenant: TenantId,
        id: TaxRateId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<TaxRate>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn create_shipping_option(
        &self,
        tenant: TenantId,
        input: &ShippingOptionInput,
    ) -> Result<ShippingOption, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
    ) -> Result<ShippingOption, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn shipping_options(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ShippingOption>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
        patch: &ShippingOptionPatch,
        if_match: Option<i64>,
    ) -> Result<ShippingOption, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |o| patch.apply(o))
            .await
    }
    pub async fn delete_shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<ShippingOption>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn create_promotion(
        &self,
        tenant: TenantId,
        input: &PromotionInput,
    ) -> Result<Promotion, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
    ) -> Result<Promotion, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn promotions(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Promotion>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
        patch: &PromotionPatch,
        if_match: Option<i64>,
    ) -> Result<Promotion, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |p| patch.apply(p))
            .await
    }
    pub async fn delete_promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<Promotion>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, OrdersError> {
        Ok(self.setup.pricing_settings(tenant).await?)
    }

    pub async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
    ) -> Result<(), OrdersError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "pricing.settings_changed",
            &serde_json::json!({"prices_include_tax": settings.prices_include_tax}),
            now,
        )?;
        let set = self
            .setup
            .set_pricing_settings(tenant, settings, &[e])
            .await;
        // Whatever the outcome: a write whose answer was lost may still have landed.
        self.pricing.invalidate();
        Ok(set?)
    }

    async fn find_promotion(
        &self,
        tenant: TenantId,
        code: &str,
    ) -> Result<Option<Promotion>, OrdersError> {
        match self
            .setup
            .find_record(tenant, SetupKind::Promotion, code)
            .await?
        {
            Some(r) => Ok(Some(value_of(&r)?)),
            None => Ok(None),
        }
    }

    /// What pricing `cart` reads: the tax rate of its address (its region's key, then its
    /// country's), its shipping option and its promotion code.
    fn pricing_lookup(cart: &Cart) -> PricingLookup {
        let address = cart.shipping_address.as_ref();
        PricingLookup {
            tax_region: address
                .and_then(|a| a.region.as_ref().map(|r| format!("{}/{r}", a.country))),
            tax_country: address.map(|a| a.country.code().to_owned()),
            shipping_option: cart.shipping_option_id.map(|o| o.as_uuid()),
            promotion_code: cart.promotion_code.clone(),
        }
    }

    // ---- carts ----

    /// Reads a cart the caller may reach: its customer's, or a guest cart with its secret.
    /// Anything else is `NotFound`, like a missing cart.
    async fn cart_for(
        &self,
        tenant: TenantId,
        id: CartId,
        access: &ShopperAccess,
    ) -> Result<Cart, OrdersError> {
        Ok(self.cart_with_hash_for(tenant, id, access).await?.0)
    }

    /// [`Self::cart_for`], with the hash of the guest cart's secret (which the order keeps).
    async fn cart_with_hash_for(
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
    async fn price_cart_fresh(
        &self,
        tenant: TenantId,
        cart: Cart,
    ) -> Result<PricedCart, OrdersError> {
        let lookup = Self::pricing_lookup(&cart);
        let found = self.setup.pricing_records(tenant, &lookup).await?;
        self.price_with(cart, &lookup, &found)
    }

    fn price_with(
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
    async fn chosen_shipping(
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
    async fn modify_cart(
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
    async fn sellable(
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

    fn check_quantity(q: i64) -> Result<(), OrdersError> {
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
    async fn usable_promotion(
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

    // ---- checkout and payment ----

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
        let (lines, reservations) = self
            .hold_stock(tenant, &cart, &priced.breakdown, now)
            .await?;
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
            cart: &cart,
            cart_version: cart.version,
            reservations: &reservations,
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
    fn buyer(
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
    async fn refresh_prices(&self, tenant: TenantId, cart: &Cart) -> Result<(), OrdersError> {
        let mut fresh = cart.clone();
        for line in &mut fresh.lines {
            line.unit_price = self
                .sellable(tenant, line.variant_id, cart.currency)
                .await?
                .1;
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
    fn checkout_conflict(e: StoreError) -> OrdersError {
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
    fn ready_for_checkout(cart: &Cart) -> Result<crate::cart::Address, OrdersError> {
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
    async fn hold_stock(
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
    async fn location_for(
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
    async fn order_for(
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
    async fn transition<F>(
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
            let (stock, events) = change(&mut order, now)?;
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

    /// Pays an order with the built-in `manual` provider: captured at once, order `paid`.
    pub async fn pay(
        &self,
        tenant: TenantId,
        id: OrderId,
        access: &ShopperAccess,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        let order = Box::new(self.order_for(tenant, id, access).await?);
        self.transition(tenant, id, None, Some(order), receipt, |order, now| {
            let total = order.totals.total;
            let reference = format!("manual_{}", order.id);
            let payment = order.pay(total, reference, now)?.clone();
            let e = event(tenant, "order.paid", &serde_json::json!({"order_id": order.id, "payment_id": payment.id, "amount": payment.amount, "currency": order.currency}), now)?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    // ---- staff ----

    pub async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, OrdersError> {
        Ok(self.orders.list_orders(tenant, filter, page).await?)
    }

    pub async fn order_detail(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<OrderDetail, OrdersError> {
        let order = self.orders.get_order(tenant, id).await?;
        let timeline = self.orders.order_events(tenant, id).await?;
        Ok(OrderDetail { order, timeline })
    }

    pub async fn fulfil(
        &self,
        tenant: TenantId,
        id: OrderId,
        lines: &[(LineId, i64)],
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        self.transition(tenant, id, if_match, None, receipt, |order, now| {
            let moves = order.fulfil(lines, now)?;
            let kind = if order.status == OrderStatus::Fulfilled {
                "order.fulfilled"
            } else {
                "order.partially_fulfilled"
            };
            let f = order.fulfilments.last().expect("just fulfilled");
            let e = event(
                tenant,
                kind,
                &serde_json::json!({"order_id": order.id, "fulfilment_id": f.id, "lines": f.lines}),
                now,
            )?;
            Ok((
                moves.into_iter().map(StockChange::Commit).collect(),
                vec![e],
            ))
        })
        .await
    }

    pub async fn ship(
        &self,
        tenant: TenantId,
        id: OrderId,
        carrier: &str,
        tracking: &str,
        if_match: Option<i64>,
    ) -> Result<Order, OrdersError> {
        let mut issues = Issues::default();
        for (pointer, v) in [("/carrier", carrier), ("/tracking_number", tracking)] {
            if v.trim().is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
                issues.push(pointer, "must be 1 to 100 characters");
            }
        }
        issues.finish(()).map_err(OrdersError::Invalid)?;
        self.transition(tenant, id, if_match, None, None, |order, now| {
            let s = order.ship(carrier.trim().to_owned(), tracking.trim().to_owned(), now)?.clone();
            let e = event(tenant, "order.shipped", &serde_json::json!({"order_id": order.id, "shipment_id": s.id, "carrier": s.carrier, "tracking_number": s.tracking_number}), now)?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    pub async fn deliver(
        &self,
        tenant: TenantId,
        id: OrderId,
        if_match: Option<i64>,
    ) -> Result<Order, OrdersError> {
        self.transition(tenant, id, if_match, None, None, |order, now| {
            order.deliver(now)?;
            let e = event(
                tenant,
                "order.delivered",
                &serde_json::json!({"order_id": order.id}),
                now,
            )?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    /// Cancels an order: releases its held stock and refunds what is left of its payment.
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: OrderId,
        reason: &str,
        if_match: Option<i64>,
    ) -> Result<Order, OrdersError> {
        if reason.chars().count() > 500 {
            return Err(invalid("/reason", "must be at most 500 characters"));
        }
        self.transition(tenant, id, if_match, None, None, |order, now| {
            let (moves, refund) = order.cancel(reason, now)?;
            let mut events = vec![event(tenant, "order.cancelled", &serde_json::json!({"order_id": order.id, "reason": reason}), now)?];
            if let Some(r) = refund {
                events.push(event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency}), now)?);
            }
            Ok((moves.into_iter().map(StockChange::Release).collect(), events))
        })
        .await
    }

    pub async fn refund(
        &self,
        tenant: TenantId,
        id: OrderId,
        request: &RefundRequest,
        reason: Option<String>,
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        self.transition(tenant, id, if_match, None, receipt, |order, now| {
            let r = order.refund(request, reason.clone(), now)?;
            let e = event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency}), now)?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    /// Retention of carts: deletes up to `batch` carts idle for the configured time (they
    /// already answer 404). Answers how many went.
    pub async fn prune_carts(&self, batch: i64) -> Result<u64, OrdersError> {
        let before = self.clock.now() - self.settings.cart_idle_ttl;
        Ok(self.carts.prune_carts(before, batch).await?)
    }

    /// The scheduled job: cancels unpaid orders whose time ran out and releases their stock,
    /// at most `batch` per call. Answers how many it cancelled.
    pub async fn expire_unpaid(&self, batch: i64) -> Result<u64, OrdersError> {
        let now = self.clock.now();
        let due = self.orders.expired_unpaid(now, batch).await?;
        let mut cancelled = 0;
        for (tenant, id) in due {
            let outcome = self
                .transition(tenant, id, None, None, None, |order, now| {
                    let moves = order.expire(now)?;
                    let e = event(
                        tenant,
                        "order.cancelled",
                        &serde_json::json!({"order_id": order.id, "reason": "expired unpaid"}),
                        now,
                    )?;
                    Ok((
                        moves.into_iter().map(StockChange::Release).collect(),
                        vec![e],
                    ))
                })
                .await;
            match outcome {
                Ok(_) => cancelled += 1,
                // Paid or cancelled meanwhile: nothing to do.
                Err(OrdersError::Order(_) | OrdersError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if cancelled > 0 {
            tracing::info!(cancelled, "unpaid orders expired");
        }
        Ok(cancelled)
    }
}

const fn const_created(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.created",
        SetupKind::ShippingOption => "shipping_option.created",
        SetupKind::Promotion => "promotion.created",
    }
}

const fn const_updated(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.updated",
        SetupKind::ShippingOption => "shipping_option.updated",
        SetupKind::Promotion => "promotion.updated",
    }
}

const fn const_deleted(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.deleted",
        SetupKind::ShippingOption => "shipping_option.deleted",
        SetupKind::Promotion => "promotion.deleted",
    }
}
