//! Orders use cases: pricing setup, carts, checkout, payment, staff operations and the expiry
//! job. Every state change writes its events in the same transaction.
//!
//! One service, one module per use case: `setup` (tax rates, shipping options, promotions,
//! pricing settings), `carts`, `checkout` (checkout, payment, the guarded transition every
//! order change goes through) and `lifecycle` (staff operations, retention jobs). What they
//! share (errors, settings, the service's ports) is here.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use keel_catalog::{
    VariantId,
    domain::{FieldIssue, Issues, ProductStatus, Reservation, ReservationId, VariantForSale},
    ports::{CatalogStore, InventoryStore},
};
use keel_kernel::id::CustomerId;
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
    order::{
        FIRST_ORDER_NUMBER, MANUAL_PROVIDER, Order, OrderError, OrderId, OrderLine, OrderStatus,
        PaymentStatus,
    },
    ports::{
        CART_CHANGED, CartStore, INSUFFICIENT_STOCK, OrderFilter, OrderReceipt, OrderStore,
        PROMOTION_CUSTOMER_LIMIT, PROMOTION_EXHAUSTED, PlaceOrder, PricingLookup, PricingRecords,
        PricingSettings, PromotionUse, SETUP_KEY_CONSTRAINT, SetupKind, SetupRecord, SetupStore,
        StockChange, UNPAID_ORDER_LIMIT, UnpaidHolder, UnpaidLimits, VERSION_CONFLICT,
        converted_cart, stock_lock_order,
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

    /// Drops this node's copy of `tenant`'s pricing setup: a staff write through another
    /// node may have changed it (ADR 0041).
    pub fn forget_pricing(&self, tenant: keel_kernel::TenantId) {
        self.pricing.forget_tenant(tenant);
    }
}

mod carts;
mod checkout;
mod lifecycle;
mod setup;

use setup::value_of;
