//! Catalog and inventory rows: products, variants, stock locations and levels.

use keel_catalog::domain::{
    Handle, InventoryLevel, Location, LocationId, Metadata, Product, ProductId, ProductOption,
    ProductStatus, Sku, Variant, VariantForSale, VariantId,
};
use keel_kernel::{
    StoreError, TenantId,
    money::{Currency, Money},
};

use super::{ReadRow, corrupt, json};

/// A product without its variants (they are attached from their own rows).
pub fn product(r: &impl ReadRow) -> Result<Product, StoreError> {
    let bad = |what| corrupt("catalog", what);
    Ok(Product {
        id: ProductId::from_uuid(r.uuid("id")?),
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        title: r.text("title")?,
        handle: Handle::parse(&r.text("handle")?).map_err(|_| bad("handle"))?,
        description: r.text("description")?,
        status: ProductStatus::parse(&r.text("status")?).ok_or_else(|| bad("status"))?,
        options: json::<Vec<ProductOption>>(r, "options", "catalog")?,
        metadata: json::<Metadata>(r, "metadata", "catalog")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.int("version")?,
        variants: Vec::new(),
    })
}

/// A variant without its prices (they are attached from their own rows).
pub fn variant(r: &impl ReadRow) -> Result<Variant, StoreError> {
    let bad = |what| corrupt("catalog", what);
    Ok(Variant {
        id: VariantId::from_uuid(r.uuid("id")?),
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        product_id: ProductId::from_uuid(r.uuid("product_id")?),
        sku: Sku::parse(&r.text("sku")?).map_err(|_| bad("sku"))?,
        title: r.opt_text("title")?,
        option_values: json(r, "option_values", "catalog")?,
        weight_grams: r
            .opt_int("weight_grams")?
            .map(|w| u32::try_from(w).map_err(|_| bad("weight")))
            .transpose()?,
        prices: Vec::new(),
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.int("version")?,
    })
}

pub fn location(r: &impl ReadRow) -> Result<Location, StoreError> {
    Ok(Location {
        id: LocationId::from_uuid(r.uuid("id")?),
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        name: r.text("name")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.int("version")?,
    })
}

pub fn level(r: &impl ReadRow) -> Result<InventoryLevel, StoreError> {
    Ok(InventoryLevel {
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        variant_id: VariantId::from_uuid(r.uuid("variant_id")?),
        location_id: LocationId::from_uuid(r.uuid("location_id")?),
        on_hand: r.int("on_hand")?,
        reserved: r.int("reserved")?,
        updated_at: r.time("updated_at")?,
    })
}

/// One price of a variant (`variant_id`, `currency`, `amount`).
pub fn price(r: &impl ReadRow) -> Result<(VariantId, Money), StoreError> {
    let currency =
        Currency::parse(&r.text("currency")?).map_err(|_| corrupt("catalog", "currency"))?;
    Ok((
        VariantId::from_uuid(r.uuid("variant_id")?),
        Money::new(r.int("amount")?, currency),
    ))
}

/// A variant as a cart line sees it: its product's status and titles, and its `amount` in
/// `currency` (none when the variant has no price in it).
pub fn variant_for_sale(
    r: &impl ReadRow,
    variant: VariantId,
    currency: Currency,
) -> Result<VariantForSale, StoreError> {
    let bad = |what| corrupt("catalog", what);
    Ok(VariantForSale {
        variant_id: variant,
        product_id: ProductId::from_uuid(r.uuid("product_id")?),
        product_status: ProductStatus::parse(&r.text("status")?).ok_or_else(|| bad("status"))?,
        product_title: r.text("product_title")?,
        sku: Sku::parse(&r.text("sku")?).map_err(|_| bad("sku"))?,
        variant_title: r.opt_text("variant_title")?,
        price: r.opt_int("amount")?.map(|a| Money::new(a, currency)),
    })
}

/// The product a SKU belongs to (`sku`, `product_id`).
pub fn sku_owner(r: &impl ReadRow) -> Result<(Sku, ProductId), StoreError> {
    Ok((
        Sku::parse(&r.text("sku")?).map_err(|_| corrupt("catalog", "sku"))?,
        ProductId::from_uuid(r.uuid("product_id")?),
    ))
}
