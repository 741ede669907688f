//! Storage ports of the orders context. Every method that changes state takes the events to
//! write and commits them in the same transaction as the change.

use async_trait::async_trait;
use keel_catalog::domain::Reservation;
use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    idempotency::IdempotencyKey,
    page::{Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{
    cart::{Cart, CartId},
    order::{Order, OrderId, OrderStatus, StockMove},
    setup::PromotionId,
};

/// The row changed since it was read (optimistic concurrency).
pub const VERSION_CONFLICT: &str = "version_conflict";
/// A setup record's unique key (tax rate country+region, promotion code) is taken.
pub const SETUP_KEY_CONSTRAINT: &str = "pricing_records_key";
/// A promotion reached its usage limit.
pub const PROMOTION_EXHAUSTED: &str = "promotion_exhausted";
/// A customer (or guest email) reached a promotion's per-customer limit.
pub const PROMOTION_CUSTOMER_LIMIT: &str = "promotion_customer_limit";
/// The cart changed (or was checked out) since it was read.
pub const CART_CHANGED: &str = "cart_changed";
/// The buyer already holds the most unpaid orders allowed (per customer, guest email or
/// client address).
pub const UNPAID_ORDER_LIMIT: &str = "unpaid_order_limit";
/// Reused from the catalog: not enough unreserved stock.
pub use keel_catalog::ports::INSUFFICIENT_STOCK;

/// Which kind of pricing setup a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupKind {
    TaxRate,
    ShippingOption,
    Promotion,
}

impl SetupKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TaxRate => "tax_rate",
            Self::ShippingOption => "shipping_option",
            Self::Promotion => "promotion",
        }
    }
}

/// A pricing setup record as stored: the typed value as JSON, its unique key within its
/// kind, and (for promotions) the usage counters the checkout updates conditionally.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupRecord {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub kind: SetupKind,
    /// Unique per tenant and kind: `US/NY` for a tax rate, the code of a promotion, the id of
    /// a shipping option.
    pub key: String,
    pub body: serde_json::Value,
    pub usage_limit: Option<i64>,
    pub times_used: i64,
    pub version: i64,
}

/// Tenant-wide pricing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PricingSettings {
    /// Catalog prices include tax (the tax is the part inside them).
    pub prices_include_tax: bool,
}

/// The setup records pricing one cart needs, read together (a cart answer is priced on every
/// change, so each was a statement, a round trip on PostgreSQL, per answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PricingLookup {
    /// The region's tax rate key (`US/NY`), tried first.
    pub tax_region: Option<String>,
    /// The country's tax rate key (`US`).
    pub tax_country: Option<String>,
    pub shipping_option: Option<uuid::Uuid>,
    pub promotion_code: Option<String>,
}

/// What a [`PricingLookup`] found: the settings and whichever records exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricingRecords {
    pub settings: PricingSettings,
    pub records: Vec<SetupRecord>,
}

impl PricingRecords {
    /// The record of `kind` with `key`, if it was found.
    pub fn by_key(&self, kind: SetupKind, key: &str) -> Option<&SetupRecord> {
        self.records.iter().find(|r| r.kind == kind && r.key == key)
    }

    /// The record of `kind` with `id`, if it was found.
    pub fn by_id(&self, kind: SetupKind, id: uuid::Uuid) -> Option<&SetupRecord> {
        self.records.iter().find(|r| r.kind == kind && r.id == id)
    }
}

/// Tax rates, shipping options and promotions.
#[async_trait]
pub trait SetupStore: Send + Sync + std::fmt::Debug {
    /// `Conflict { SETUP_KEY_CONSTRAINT }` when the key is taken.
    async fn create_record(&self, r: &SetupRecord, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
    ) -> Result<SetupRecord, StoreError>;
    async fn find_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        key: &str,
    ) -> Result<Option<SetupRecord>, StoreError>;
    async fn list_records(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        page: PageRequest,
    ) -> Result<Page<SetupRecord>, StoreError>;
    /// Replaces body and usage limit if the version is still `expected_version` (the usage
    /// count is the store's own).
    async fn update_record(
        &self,
        r: &SetupRecord,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn delete_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, StoreError>;
    /// The settings and the records of the lookup, in one read.
    async fn pricing_records(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
    ) -> Result<PricingRecords, StoreError>;
    async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}

/// Carts.
#[async_trait]
pub trait CartStore: Send + Sync + std::fmt::Debug {
    /// Stores a new cart with the SHA-256 of its secret (guest carts).
    async fn create_cart(
        &self,
        cart: &Cart,
        secret_hash: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// The cart and the hash of its secret.
    async fn get_cart(
        &self,
        tenant: TenantId,
        id: CartId,
    ) -> Result<(Cart, Option<String>), StoreError>;
    /// Replaces the cart if its version is still `expected_version`.
    async fn save_cart(
        &self,
        cart: &Cart,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Retention: deletes up to `limit` carts (open or converted) last changed before
    /// `before`. Answers how many went.
    async fn prune_carts(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError>;
}

/// Who holds an unpaid order, as the caps count it: the customer account, or a guest's email
/// (normalised, see `cart::buyer_key`), and the client address (pseudonymised).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpaidHolder {
    pub customer: Option<keel_kernel::id::CustomerId>,
    pub email_key: Option<String>,
    pub client_key: Option<String>,
}

/// The exact caps on open unpaid orders (pending payment, not expired at `now`) one holder
/// may have; checkout refuses the one that would go past any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpaidLimits {
    pub per_customer: i64,
    pub per_email: i64,
    pub per_client: i64,
    pub now: OffsetDateTime,
}

/// A promotion redemption taken at checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionUse {
    pub promotion_id: PromotionId,
    /// The customer id, or `email:<address>` for a guest.
    pub customer_key: String,
    pub per_customer_limit: Option<i64>,
}

/// Everything a checkout writes, in one transaction. The decisions are made here, in the
/// context, and reach the store as data: the cart as the checkout leaves it, the order in
/// which stock rows are locked, and where the shop's order numbers start.
#[derive(Debug, Clone)]
pub struct PlaceOrder<'a> {
    /// The order; its `number` is assigned by the store, the next of the shop's sequence.
    pub order: &'a Order,
    /// The cart converted into the order ([`converted_cart`]).
    pub converted: Cart,
    /// The version the cart had when priced; the cart is marked converted only if unchanged.
    pub cart_version: i64,
    /// In [`stock_lock_order`]: the store takes the rows' locks in this order.
    pub reservations: &'a [Reservation],
    /// The shop's first order number, used when it has none yet.
    pub first_number: i64,
    pub promotion: Option<PromotionUse>,
    /// Who the order counts against, and the caps it must stay under.
    pub holder: UnpaidHolder,
    pub limits: UnpaidLimits,
}

/// The answer to an idempotent request about an order (checkout, payment, fulfilment,
/// refund), which the store writes to the request's `Idempotency-Key` in the same transaction
/// as the order: the key is done exactly when the work is. (Stored in a transaction of its own
/// afterwards, a crash between the two left the key in flight, and a retry once its lock
/// lapsed ran the work again and answered something else: `cart_checked_out` instead of the
/// order.) A service method given a receipt writes it on every success: the HTTP layer stores
/// nothing more for a success.
#[derive(Debug, Clone)]
pub struct OrderReceipt {
    pub key: IdempotencyKey,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The answer's body for the order as written (with its number); the caller answers with
    /// the same function, so the stored and the first answer are the same bytes.
    pub render: fn(&Order) -> Result<String, String>,
}

impl OrderReceipt {
    /// The answer's body for `order` as the store writes it.
    pub fn body(&self, order: &Order) -> Result<String, StoreError> {
        (self.render)(order).map_err(StoreError::other)
    }
}

/// Stock to move with an order change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// Fulfilled: take the units out of stock (`on_hand` and `reserved` both drop).
    Commit(StockMove),
    /// Cancelled or expired: hand the units back (`reserved` drops).
    Release(StockMove),
}

impl StockChange {
    /// Its place in [`stock_lock_order`].
    pub fn lock_key(&self) -> (uuid::Uuid, uuid::Uuid) {
        match self {
            Self::Commit(m) | Self::Release(m) => stock_lock_order(m.variant_id, m.location_id),
        }
    }
}

/// The cart as a checkout leaves it: converted into `order`, one version on.
pub fn converted_cart(cart: &Cart, order: &Order) -> Cart {
    let mut converted = cart.clone();
    converted.status = crate::cart::CartStatus::Converted;
    converted.order_id = Some(order.id);
    converted.version = cart.version + 1;
    converted.updated_at = order.created_at;
    converted
}

/// The one global order in which a write locks stock rows (variant, then location): two
/// writes that touch the same rows, listed in different orders, cannot deadlock. Every list
/// of stock a port method takes is sorted by it before it reaches the store.
pub fn stock_lock_order(
    variant: keel_catalog::domain::VariantId,
    location: keel_catalog::domain::LocationId,
) -> (uuid::Uuid, uuid::Uuid) {
    (variant.as_uuid(), location.as_uuid())
}

/// Filters of the staff order list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub created_from: Option<OffsetDateTime>,
    pub created_to: Option<OffsetDateTime>,
    pub customer: Option<keel_kernel::id::CustomerId>,
    /// The order number (`1001` or `#1001`) or a substring of the email.
    pub q: Option<String>,
}

/// Orders.
#[async_trait]
pub trait OrderStore: Send + Sync + std::fmt::Debug {
    /// The checkout transaction: marks the cart converted (only at `cart_version`, else
    /// `Conflict { CART_CHANGED }`), reserves every line's stock with conditional updates
    /// (`Conflict { INSUFFICIENT_STOCK }`), counts the promotion use against its limits
    /// (`Conflict { PROMOTION_EXHAUSTED | PROMOTION_CUSTOMER_LIMIT }`), counts the holder's
    /// open unpaid orders against the caps (`Conflict { UNPAID_ORDER_LIMIT }` when one already
    /// holds its limit; counted after the shop's order counter is taken, so concurrent
    /// checkouts of a shop count one after another), assigns the shop's next order number and
    /// inserts the order, with the events and the receipt. All or nothing. Answers the number.
    async fn place_order(
        &self,
        place: &PlaceOrder<'_>,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<i64, StoreError>;
    async fn get_order(&self, tenant: TenantId, id: OrderId) -> Result<Order, StoreError>;
    /// Newest first.
    async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, StoreError>;
    /// Replaces the order if its version is still `expected_version`, moving the stock
    /// (conditional updates in the order given, which is [`stock_lock_order`]; ledger rows
    /// for commits) and, with `return_redemption`, giving
    /// the order's promotion redemption back (its row deleted and the promotion's use count
    /// lowered, only if the row was there: exactly once), with the events and the receipt, in
    /// one transaction.
    async fn save_order(
        &self,
        order: &Order,
        expected_version: i64,
        stock: &[StockChange],
        return_redemption: bool,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<(), StoreError>;
    /// The order's events, oldest first (its timeline).
    async fn order_events(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RecordedEvent>, StoreError>;
    /// Unpaid orders whose expiry passed at `now`, oldest first, at most `limit`.
    async fn expired_unpaid(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>, StoreError>;
}
