//! Storage ports of the catalog context. Every method that changes state takes the events to
//! write and commits them in the same transaction as the change.

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    money::Currency,
    page::{Limit, Page, PageRequest},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Adjustment, Handle, InventoryLevel, Location, LocationId, Product, ProductId, ProductStatus,
    Reservation, ReservationId, Sku, VariantForSale, VariantId,
};

/// Canonical constraint names, the same on every backend.
pub const HANDLE_CONSTRAINT: &str = "products_handle_key";
pub const SKU_CONSTRAINT: &str = "variants_sku_key";
pub const LOCATION_NAME_CONSTRAINT: &str = "stock_locations_name_key";
/// The row changed since the caller read it (optimistic concurrency).
pub const VERSION_CONFLICT: &str = "version_conflict";
/// Not enough unreserved stock for a reservation, or an adjustment would leave less on hand
/// than is reserved.
pub const INSUFFICIENT_STOCK: &str = "insufficient_stock";
/// The variant (or product) still has reserved stock.
pub const STOCK_RESERVED: &str = "stock_reserved";
/// The location still holds stock.
pub const LOCATION_IN_USE: &str = "location_in_use";

/// How a product list is ordered (both ascending, ties broken by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProductSort {
    /// Creation order (ids are time-ordered).
    #[default]
    Created,
    Title,
}

/// Filters of a product list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    pub status: Option<ProductStatus>,
    pub updated_since: Option<OffsetDateTime>,
    /// Case-insensitive substring of the title or of any variant's SKU.
    pub q: Option<String>,
    pub sort: ProductSort,
}

/// Where a product list continues: after this row, in the list's order. For a title sort the
/// title travels in the cursor, so pages stay stable however rows are inserted or renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductCursor {
    pub after_id: Uuid,
    pub after_title: Option<String>,
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API issued")]
pub struct ProductCursorError;

const CURSOR_CREATED: u8 = 1;
const CURSOR_TITLE: u8 = 2;

impl ProductCursor {
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(17 + self.after_title.as_ref().map_or(0, String::len));
        bytes.push(if self.after_title.is_some() {
            CURSOR_TITLE
        } else {
            CURSOR_CREATED
        });
        bytes.extend_from_slice(self.after_id.as_bytes());
        if let Some(t) = &self.after_title {
            bytes.extend_from_slice(t.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses the wire form for a list sorted by `sort`; a cursor of another sort is refused.
    pub fn decode(s: &str, sort: ProductSort) -> Result<Self, ProductCursorError> {
        // A title is at most 255 characters of at most 4 bytes; refuse anything longer early.
        if s.len() > 2000 {
            return Err(ProductCursorError);
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| ProductCursorError)?;
        let (&kind, rest) = bytes.split_first().ok_or(ProductCursorError)?;
        if rest.len() < 16 {
            return Err(ProductCursorError);
        }
        let (id, title) = rest.split_at(16);
        let after_id = Uuid::from_slice(id).map_err(|_| ProductCursorError)?;
        match (kind, sort) {
            (CURSOR_CREATED, ProductSort::Created) if title.is_empty() => Ok(Self {
                after_id,
                after_title: None,
            }),
            (CURSOR_TITLE, ProductSort::Title) => Ok(Self {
                after_id,
                after_title: Some(
                    String::from_utf8(title.to_vec()).map_err(|_| ProductCursorError)?,
                ),
            }),
            _ => Err(ProductCursorError),
        }
    }

    /// The cursor after `p` in a list ordered by `sort`.
    pub fn after(p: &Product, sort: ProductSort) -> Self {
        Self {
            after_id: p.id.as_uuid(),
            after_title: (sort == ProductSort::Title).then(|| p.title.clone()),
        }
    }
}

/// One page of products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<ProductCursor>,
}

/// A product to write: new (`expected_version: None`) or replacing the stored one if its
/// version is still `expected_version`.
#[derive(Debug, Clone, Copy)]
pub struct SaveProduct<'a> {
    pub product: &'a Product,
    pub expected_version: Option<i64>,
}

/// Products with their variants and prices. A product is written as a whole (its row, every
/// variant, every price), so its version guards all of it.
#[async_trait]
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Writes every product in one transaction with the events: all or nothing. A new product
    /// is inserted; an existing one is replaced only if its version is still the expected one
    /// (else `Conflict { VERSION_CONFLICT }`, or `NotFound` if it is gone). Variants missing
    /// from a replaced product are deleted with their zero-reservation inventory levels
    /// (`Conflict { STOCK_RESERVED }` if one holds reserved stock). A taken handle or SKU is
    /// `Conflict { HANDLE_CONSTRAINT | SKU_CONSTRAINT }`.
    async fn save_products(
        &self,
        tenant: TenantId,
        products: &[SaveProduct<'_>],
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    async fn get_product(&self, tenant: TenantId, id: ProductId) -> Result<Product, StoreError>;
    async fn get_product_by_handle(
        &self,
        tenant: TenantId,
        handle: &Handle,
    ) -> Result<Product, StoreError>;
    /// What a cart needs to sell `variant` in `currency`, read in one statement (it runs for
    /// every line a shopper adds and again for every line at checkout). `NotFound` if the
    /// tenant has no such variant.
    async fn variant_for_sale(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<VariantForSale, StoreError>;
    /// [`CatalogStore::variant_for_sale`] for several variants at once (one read); variants
    /// the tenant does not have are missing from the answer.
    async fn variants_for_sale(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
        currency: Currency,
    ) -> Result<Vec<VariantForSale>, StoreError>;
    /// Products by handle (those that exist), for batch upserts.
    async fn products_by_handles(
        &self,
        tenant: TenantId,
        handles: &[Handle],
    ) -> Result<Vec<Product>, StoreError>;
    /// One page of products with their variants and prices, loaded in a fixed number of
    /// queries whatever the page size (products, then variants and prices of the whole page).
    async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, StoreError>;
    /// Which of `skus` are in use, and by which product.
    async fn sku_owners(
        &self,
        tenant: TenantId,
        skus: &[Sku],
    ) -> Result<Vec<(Sku, ProductId)>, StoreError>;
    /// Deletes a product with its variants, prices and inventory levels, if its version is the
    /// expected one (when given). `Conflict { STOCK_RESERVED }` while stock is reserved.
    async fn delete_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}

/// What the storefront may show about stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorefrontSettings {
    /// Show exact available counts, not only in stock or not.
    pub show_stock_counts: bool,
}

/// Stock locations, inventory levels, the adjustment ledger and reservations.
#[async_trait]
pub trait InventoryStore: Send + Sync + std::fmt::Debug {
    /// `Conflict { LOCATION_NAME_CONSTRAINT }` for a taken name.
    async fn create_location(&self, l: &Location, events: &[NewEvent]) -> Result<(), StoreError>;
    async fn get_location(&self, tenant: TenantId, id: LocationId) -> Result<Location, StoreError>;
    async fn list_locations(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Location>, StoreError>;
    /// Replaces the location if its version is still `expected_version`.
    async fn update_location(
        &self,
        l: &Location,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Deletes a location that holds no stock (`Conflict { LOCATION_IN_USE }` otherwise).
    async fn delete_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
    /// Levels, optionally of one variant and/or one location, in a stable order.
    async fn list_levels(
        &self,
        tenant: TenantId,
        variant: Option<VariantId>,
        location: Option<LocationId>,
        page: PageRequest,
    ) -> Result<Page<InventoryLevel>, StoreError>;
    /// The first location (by level id) holding at least `quantity` unreserved units of the
    /// variant, if any: where checkout asks to reserve (the reservation stays conditional).
    async fn location_with_stock(
        &self,
        tenant: TenantId,
        variant: VariantId,
        quantity: i64,
    ) -> Result<Option<LocationId>, StoreError>;
    /// Applies an adjustment with one conditional update (creating the level at zero first if
    /// there is none) and appends it to the ledger, with the events, in one transaction. The
    /// result may not leave `on_hand` below `reserved` or above the quantity bound:
    /// `Conflict { INSUFFICIENT_STOCK }`. `NotFound` for an unknown variant or location.
    async fn adjust(
        &self,
        adjustment: &Adjustment,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError>;
    /// Reserves `quantity` with one conditional update (`on_hand - reserved >= quantity`), so
    /// no interleaving of concurrent reservations can reserve more than is on hand:
    /// `Conflict { INSUFFICIENT_STOCK }` when short.
    async fn reserve(
        &self,
        reservation: &Reservation,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError>;
    /// Releases a reservation once (idempotent: a released one changes nothing and answers
    /// false).
    async fn release(
        &self,
        tenant: TenantId,
        id: ReservationId,
        at: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;
    /// Available stock (`on_hand - reserved`, over all locations) per variant, for the given
    /// variants (absent ones have none), in one query.
    async fn available(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
    ) -> Result<Vec<(VariantId, i64)>, StoreError>;
    async fn storefront_settings(&self, tenant: TenantId)
    -> Result<StorefrontSettings, StoreError>;
    async fn set_storefront_settings(
        &self,
        tenant: TenantId,
        settings: StorefrontSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;
}
