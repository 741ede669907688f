//! Products, variants and prices, written once for both backends (ADR 0032). A product is
//! written as a whole (its row, every variant, every price) under its version; it is read back
//! with its variants and prices in two more statements, whatever the number of products.

use std::collections::HashMap;

use keel_catalog::{
    domain::{Handle, Product, ProductId, ProductStatus, Sku, Variant, VariantForSale, VariantId},
    ports::{
        ProductCursor, ProductFilter, ProductPage, ProductSort, STOCK_RESERVED, SaveProduct,
        VERSION_CONFLICT,
    },
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    money::{Currency, Money},
    page::Limit,
};
use uuid::Uuid;

use crate::{
    args,
    exec::{Arg, Exec, decode, pick},
    rows::{
        ReadRow,
        catalog::{
            price as price_from_row, product as product_from_row, sku_owner as sku_owner_from_row,
            variant as variant_from_row, variant_for_sale as variant_for_sale_from_row,
        },
        corrupt,
    },
    store::tenants::insert_events,
};

macro_rules! product_select {
    () => {
        "SELECT tenant_id, id, title, handle, description, status, options, metadata, \
         created_at, updated_at, version FROM products"
    };
}

macro_rules! variant_select {
    () => {
        "SELECT tenant_id, id, product_id, sku, title, option_values, weight_grams, \
         created_at, updated_at, version FROM variants"
    };
}

/// A product list's statement: the filters, then `$rest` (the cursor, the order and the limit).
/// Every filter is a bound parameter that is NULL when unused. `$find` is the dialect's
/// substring position: `strpos` on PostgreSQL, `instr` on SQLite (neither has the other's).
macro_rules! product_list {
    ($find:literal, $rest:literal) => {
        concat!(
            product_select!(),
            " p WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR updated_at >= $3) AND ($4 IS NULL OR ",
            $find,
            "(lower(title), lower($4)) > 0 OR EXISTS (SELECT 1 FROM variants v \
             WHERE v.tenant_id = p.tenant_id AND v.product_id = p.id AND ",
            $find,
            "(lower(v.sku), lower($4)) > 0)) AND ",
            $rest
        )
    };
}

/// Loads the variants and prices of `products` (two queries, whatever their number) and
/// attaches them in creation order.
async fn attach_variants<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    products: &mut [Product],
) -> Result<(), StoreError> {
    if products.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = products.iter().map(|p| p.id.as_uuid()).collect();
    // A list of ids: an array on PostgreSQL, a JSON array of hex forms on SQLite.
    let rows = e
        .all(
            pick::<E>(
                concat!(
                    variant_select!(),
                    " WHERE tenant_id = $1 AND product_id = ANY($2) ORDER BY id"
                ),
                concat!(
                    variant_select!(),
                    " WHERE tenant_id = $1 \
                     AND product_id IN (SELECT unhex(value) FROM json_each($2)) ORDER BY id"
                ),
            ),
            args![tenant.as_uuid(), &ids],
        )
        .await?;
    let mut variants = decode(&rows, variant_from_row)?;
    // The same list, as above.
    let price_rows = e
        .all(
            pick::<E>(
                "SELECT variant_id, currency, amount FROM variant_prices WHERE tenant_id = $1 \
                 AND variant_id IN (SELECT id FROM variants WHERE tenant_id = $1 \
                 AND product_id = ANY($2)) ORDER BY variant_id, currency",
                "SELECT variant_id, currency, amount FROM variant_prices WHERE tenant_id = $1 \
                 AND variant_id IN (SELECT id FROM variants WHERE tenant_id = $1 \
                 AND product_id IN (SELECT unhex(value) FROM json_each($2))) \
                 ORDER BY variant_id, currency",
            ),
            args![tenant.as_uuid(), &ids],
        )
        .await?;
    let mut prices: HashMap<VariantId, Vec<Money>> = HashMap::new();
    for (owner, money) in decode(&price_rows, price_from_row)? {
        prices.entry(owner).or_default().push(money);
    }
    for v in &mut variants {
        v.prices = prices.remove(&v.id).unwrap_or_default();
    }
    let index: HashMap<ProductId, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, i))
        .collect();
    for v in variants {
        let i = index
            .get(&v.product_id)
            .copied()
            .ok_or_else(|| corrupt("catalog", "variant of another product"))?;
        products[i].variants.push(v);
    }
    Ok(())
}

/// One product with its variants and prices attached.
async fn with_variants<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    product: Product,
) -> Result<Product, StoreError> {
    let mut products = [product];
    attach_variants(e, tenant, &mut products).await?;
    let [p] = products;
    Ok(p)
}

async fn write_variant<E: Exec>(e: &mut E, v: &Variant) -> Result<(), StoreError> {
    let values = serde_json::to_string(&v.option_values).map_err(StoreError::other)?;
    e.run(
        "INSERT INTO variants (tenant_id, id, product_id, sku, title, option_values, weight_grams, \
         created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET sku = excluded.sku, title = excluded.title, \
         option_values = excluded.option_values, weight_grams = excluded.weight_grams, \
         updated_at = excluded.updated_at, version = excluded.version",
        args![
            v.tenant_id.as_uuid(),
            v.id.as_uuid(),
            v.product_id.as_uuid(),
            v.sku.as_str(),
            v.title.as_deref(),
            Arg::json(&values),
            v.weight_grams,
            v.created_at,
            v.updated_at,
            v.version
        ],
    )
    .await?;
    e.run(
        "DELETE FROM variant_prices WHERE tenant_id = $1 AND variant_id = $2",
        args![v.tenant_id.as_uuid(), v.id.as_uuid()],
    )
    .await?;
    for m in &v.prices {
        e.run(
            "INSERT INTO variant_prices (tenant_id, variant_id, currency, amount) \
             VALUES ($1, $2, $3, $4)",
            args![
                v.tenant_id.as_uuid(),
                v.id.as_uuid(),
                m.currency().code(),
                m.minor()
            ],
        )
        .await?;
    }
    Ok(())
}

/// Deletes a variant with its prices and inventory levels, refusing while stock is reserved.
async fn remove_variant<E: Exec>(e: &mut E, tenant: TenantId, id: Uuid) -> Result<(), StoreError> {
    let reserved = e
        .one(
            "SELECT count(*) AS n FROM inventory_levels WHERE tenant_id = $1 AND variant_id = $2 \
             AND reserved > 0",
            args![tenant.as_uuid(), id],
        )
        .await?
        .int("n")?;
    if reserved > 0 {
        return Err(StoreError::Conflict {
            constraint: STOCK_RESERVED.into(),
        });
    }
    for sql in [
        "DELETE FROM inventory_levels WHERE tenant_id = $1 AND variant_id = $2",
        "DELETE FROM variant_prices WHERE tenant_id = $1 AND variant_id = $2",
        "DELETE FROM variants WHERE tenant_id = $1 AND id = $2",
    ] {
        e.run(sql, args![tenant.as_uuid(), id]).await?;
    }
    Ok(())
}

/// The ids of a product's stored variants.
async fn variant_ids<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    product: ProductId,
) -> Result<Vec<Uuid>, StoreError> {
    let rows = e
        .all(
            "SELECT id FROM variants WHERE tenant_id = $1 AND product_id = $2",
            args![tenant.as_uuid(), product.as_uuid()],
        )
        .await?;
    decode(&rows, |r| r.uuid("id"))
}

/// Replaces a stored product's row at the expected version, and deletes the stored variants
/// it no longer has.
async fn update_product<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    p: &Product,
    expected: i64,
    options: &str,
    metadata: &str,
) -> Result<(), StoreError> {
    let done = e
        .run(
            "UPDATE products SET title = $3, handle = $4, description = $5, status = $6, \
             options = $7, metadata = $8, updated_at = $9, version = $10 \
             WHERE tenant_id = $1 AND id = $2 AND version = $11",
            args![
                tenant.as_uuid(),
                p.id.as_uuid(),
                &p.title,
                p.handle.as_str(),
                &p.description,
                p.status.as_str(),
                Arg::json(options),
                Arg::json(metadata),
                p.updated_at,
                p.version,
                expected
            ],
        )
        .await?;
    if done != 1 {
        let exists = e
            .one(
                "SELECT count(*) AS n FROM products WHERE tenant_id = $1 AND id = $2",
                args![tenant.as_uuid(), p.id.as_uuid()],
            )
            .await?
            .int("n")?;
        return Err(if exists == 0 {
            StoreError::NotFound
        } else {
            StoreError::Conflict {
                constraint: VERSION_CONFLICT.into(),
            }
        });
    }
    for id in variant_ids(e, tenant, p.id).await? {
        if !p.variants.iter().any(|v| v.id.as_uuid() == id) {
            remove_variant(e, tenant, id).await?;
        }
    }
    Ok(())
}

/// Inserts or replaces (at the expected version) one product and all its variants.
async fn write_product<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    save: &SaveProduct<'_>,
) -> Result<(), StoreError> {
    let p = save.product;
    if p.tenant_id != tenant {
        return Err(StoreError::other("a product of another tenant"));
    }
    let options = serde_json::to_string(&p.options).map_err(StoreError::other)?;
    let metadata = serde_json::to_string(&p.metadata).map_err(StoreError::other)?;
    match save.expected_version {
        None => {
            e.run(
                "INSERT INTO products (tenant_id, id, title, handle, description, status, options, \
                 metadata, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                args![
                    tenant.as_uuid(),
                    p.id.as_uuid(),
                    &p.title,
                    p.handle.as_str(),
                    &p.description,
                    p.status.as_str(),
                    Arg::json(&options),
                    Arg::json(&metadata),
                    p.created_at,
                    p.updated_at,
                    p.version
                ],
            )
            .await?;
        }
        Some(expected) => update_product(e, tenant, p, expected, &options, &metadata).await?,
    }
    for v in &p.variants {
        write_variant(e, v).await?;
    }
    Ok(())
}

/// Writes the products (each at its expected version) and appends the events; the caller's
/// transaction rolls back on an error.
pub async fn save_products<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    products: &[SaveProduct<'_>],
    events: &[NewEvent],
) -> Result<(), StoreError> {
    for save in products {
        write_product(e, tenant, save).await?;
    }
    insert_events(e, events).await
}

/// One product with its variants and prices.
pub async fn get_product<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: ProductId,
) -> Result<Product, StoreError> {
    let row = e
        .one(
            concat!(product_select!(), " WHERE tenant_id = $1 AND id = $2"),
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    with_variants(e, tenant, product_from_row(&row)?).await
}

pub async fn get_product_by_handle<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    handle: &Handle,
) -> Result<Product, StoreError> {
    let row = e
        .one(
            concat!(product_select!(), " WHERE tenant_id = $1 AND handle = $2"),
            args![tenant.as_uuid(), handle.as_str()],
        )
        .await?;
    with_variants(e, tenant, product_from_row(&row)?).await
}

pub async fn variant_for_sale<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variant: VariantId,
    currency: Currency,
) -> Result<VariantForSale, StoreError> {
    let row = e
        .one(
            "SELECT v.product_id, p.status, p.title AS product_title, v.sku, \
             v.title AS variant_title, vp.amount FROM variants v \
             JOIN products p ON p.tenant_id = v.tenant_id AND p.id = v.product_id \
             LEFT JOIN variant_prices vp ON vp.tenant_id = v.tenant_id AND vp.variant_id = v.id \
             AND vp.currency = $3 \
             WHERE v.tenant_id = $1 AND v.id = $2",
            args![tenant.as_uuid(), variant.as_uuid(), currency.code()],
        )
        .await?;
    variant_for_sale_from_row(&row, variant, currency)
}

/// [`variant_for_sale`] for several variants in one statement (checkout re-reads every
/// line's price: one round trip instead of one per line); variants the shop does not have are
/// missing from the answer.
pub async fn variants_for_sale<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    variants: &[VariantId],
    currency: Currency,
) -> Result<Vec<VariantForSale>, StoreError> {
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = variants.iter().map(VariantId::as_uuid).collect();
    // A list of ids: an array on PostgreSQL, a JSON array of hex forms on SQLite.
    let rows = e
        .all(
            pick::<E>(
                "SELECT v.id, v.product_id, p.status, p.title AS product_title, v.sku, \
                 v.title AS variant_title, vp.amount FROM variants v \
                 JOIN products p ON p.tenant_id = v.tenant_id AND p.id = v.product_id \
                 LEFT JOIN variant_prices vp ON vp.tenant_id = v.tenant_id AND vp.variant_id = v.id \
                 AND vp.currency = $3 \
                 WHERE v.tenant_id = $1 AND v.id = ANY($2)",
                "SELECT v.id, v.product_id, p.status, p.title AS product_title, v.sku, \
                 v.title AS variant_title, vp.amount FROM variants v \
                 JOIN products p ON p.tenant_id = v.tenant_id AND p.id = v.product_id \
                 LEFT JOIN variant_prices vp ON vp.tenant_id = v.tenant_id AND vp.variant_id = v.id \
                 AND vp.currency = $3 \
                 WHERE v.tenant_id = $1 AND v.id IN (SELECT unhex(value) FROM json_each($2))",
            ),
            args![tenant.as_uuid(), &ids, currency.code()],
        )
        .await?;
    decode(&rows, |r| {
        variant_for_sale_from_row(r, VariantId::from_uuid(r.uuid("id")?), currency)
    })
}

pub async fn products_by_handles<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    handles: &[Handle],
) -> Result<Vec<Product>, StoreError> {
    let list: Vec<&str> = handles.iter().map(Handle::as_str).collect();
    // A list of handles: an array on PostgreSQL, a JSON array on SQLite.
    let rows = e
        .all(
            pick::<E>(
                concat!(
                    product_select!(),
                    " WHERE tenant_id = $1 AND handle = ANY($2)"
                ),
                concat!(
                    product_select!(),
                    " WHERE tenant_id = $1 AND handle IN (SELECT value FROM json_each($2))"
                ),
            ),
            args![tenant.as_uuid(), Arg::Strs(&list)],
        )
        .await?;
    let mut products = decode(&rows, product_from_row)?;
    attach_variants(e, tenant, &mut products).await?;
    Ok(products)
}

/// The rows of one page of products (one more than `limit`, to tell whether another follows).
async fn product_rows<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    filter: &ProductFilter,
    limit: Limit,
    after: Option<&ProductCursor>,
) -> Result<Vec<E::Row>, StoreError> {
    let status = filter.status.map(ProductStatus::as_str);
    let after_id = after.map(|c| c.after_id);
    // One statement per sort order. The title order compares bytes on both: PostgreSQL's "C"
    // collation, SQLite's default `BINARY` (which has no collation named "C").
    match filter.sort {
        ProductSort::Created => {
            e.all(
                pick::<E>(
                    product_list!("strpos", "($5 IS NULL OR id > $5) ORDER BY id LIMIT $6"),
                    product_list!("instr", "($5 IS NULL OR id > $5) ORDER BY id LIMIT $6"),
                ),
                args![
                    tenant.as_uuid(),
                    status,
                    filter.updated_since,
                    filter.q.as_deref(),
                    after_id,
                    limit.fetch_count()
                ],
            )
            .await
        }
        ProductSort::Title => {
            e.all(
                pick::<E>(
                    product_list!(
                        "strpos",
                        "($5 IS NULL OR title COLLATE \"C\" > $6 OR (title = $6 AND id > $5)) \
                         ORDER BY title COLLATE \"C\", id LIMIT $7"
                    ),
                    product_list!(
                        "instr",
                        "($5 IS NULL OR title > $6 OR (title = $6 AND id > $5)) \
                         ORDER BY title, id LIMIT $7"
                    ),
                ),
                args![
                    tenant.as_uuid(),
                    status,
                    filter.updated_since,
                    filter.q.as_deref(),
                    after_id,
                    after.and_then(|c| c.after_title.as_deref()),
                    limit.fetch_count()
                ],
            )
            .await
        }
    }
}

pub async fn list_products<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    filter: &ProductFilter,
    limit: Limit,
    after: Option<&ProductCursor>,
) -> Result<ProductPage, StoreError> {
    let rows = product_rows(e, tenant, filter, limit, after).await?;
    let mut products = decode(&rows, product_from_row)?;
    let keep = usize::try_from(limit.get()).expect("a limit of at most 100 fits in usize");
    let next_cursor = if products.len() > keep {
        products.truncate(keep);
        products
            .last()
            .map(|p| ProductCursor::after(p, filter.sort))
    } else {
        None
    };
    attach_variants(e, tenant, &mut products).await?;
    Ok(ProductPage {
        items: products,
        next_cursor,
    })
}

pub async fn sku_owners<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    skus: &[Sku],
) -> Result<Vec<(Sku, ProductId)>, StoreError> {
    let list: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    // A list of SKUs: an array on PostgreSQL, a JSON array on SQLite.
    let rows = e
        .all(
            pick::<E>(
                "SELECT sku, product_id FROM variants WHERE tenant_id = $1 AND sku = ANY($2)",
                "SELECT sku, product_id FROM variants WHERE tenant_id = $1 \
                 AND sku IN (SELECT value FROM json_each($2))",
            ),
            args![tenant.as_uuid(), Arg::Strs(&list)],
        )
        .await?;
    decode(&rows, sku_owner_from_row)
}

/// Deletes a product (at the expected version, if given) with its variants, their prices and
/// inventory levels, refusing while any of its stock is reserved; appends the events.
pub async fn delete_product<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: ProductId,
    expected_version: Option<i64>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let version = e
        .opt(
            "SELECT version FROM products WHERE tenant_id = $1 AND id = $2",
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?
        .map(|r| r.int("version"))
        .transpose()?;
    match version {
        None => return Err(StoreError::NotFound),
        Some(v) if expected_version.is_some_and(|x| x != v) => {
            return Err(StoreError::Conflict {
                constraint: VERSION_CONFLICT.into(),
            });
        }
        Some(_) => {}
    }
    for variant in variant_ids(e, tenant, id).await? {
        remove_variant(e, tenant, variant).await?;
    }
    e.run(
        "DELETE FROM products WHERE tenant_id = $1 AND id = $2",
        args![tenant.as_uuid(), id.as_uuid()],
    )
    .await?;
    insert_events(e, events).await
}
