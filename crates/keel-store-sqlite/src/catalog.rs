//! Products, variants and prices on SQLite.

use std::collections::HashMap;

use async_trait::async_trait;
use keel_catalog::{
    domain::{Handle, Product, ProductId, ProductStatus, Sku, Variant, VariantForSale, VariantId},
    ports::{
        CatalogStore, ProductCursor, ProductFilter, ProductPage, ProductSort, STOCK_RESERVED,
        SaveProduct, VERSION_CONFLICT,
    },
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    money::{Currency, Money},
    page::Limit,
};

use crate::db::{self, Get};
use crate::{SqliteStore, error::map_err, tenants::insert_events, to_micros};
use keel_store_common::rows::catalog::{product as product_from_row, variant as variant_from_row};

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt catalog row: {what}"))
}

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

/// A JSON array of the ids' hex forms: the one bind parameter of an `IN` list
/// (`IN (SELECT unhex(value) FROM json_each(?))`), so no SQL is assembled from input.
fn id_list(ids: impl IntoIterator<Item = uuid::Uuid>) -> String {
    serde_json::Value::from(
        ids.into_iter()
            .map(|u| u.simple().to_string())
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// Loads the variants and prices of `products` (two queries, whatever their number) and
/// attaches them in creation order.
fn attach_variants(
    conn: &rusqlite::Connection,
    tenant: TenantId,
    products: &mut [Product],
) -> Result<(), StoreError> {
    if products.is_empty() {
        return Ok(());
    }
    let ids = id_list(products.iter().map(|p| p.id.as_uuid()));
    let rows = db::query(concat!(
        variant_select!(),
        " WHERE tenant_id = ?1 AND product_id IN (SELECT unhex(value) FROM json_each(?2)) ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_all(conn)?;
    let mut variants = rows
        .iter()
        .map(variant_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let price_rows = db::query(
        "SELECT variant_id, currency, amount FROM variant_prices WHERE tenant_id = ?1 AND variant_id IN \
         (SELECT id FROM variants WHERE tenant_id = ?1 AND product_id IN (SELECT unhex(value) FROM json_each(?2))) \
         ORDER BY variant_id, currency",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_all(conn)?;
    let mut prices: HashMap<uuid::Uuid, Vec<Money>> = HashMap::new();
    for r in &price_rows {
        let code: String = r.col("currency")?;
        let currency = Currency::parse(&code).map_err(|_| corrupt("currency"))?;
        prices
            .entry(r.col("variant_id")?)
            .or_default()
            .push(Money::new(r.col("amount")?, currency));
    }
    for v in &mut variants {
        v.prices = prices.remove(&v.id.as_uuid()).unwrap_or_default();
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
            .ok_or_else(|| corrupt("variant of another product"))?;
        products[i].variants.push(v);
    }
    Ok(())
}

/// One product with its variants and prices.
fn load_product(
    conn: &rusqlite::Connection,
    tenant: TenantId,
    id: ProductId,
) -> Result<Product, StoreError> {
    let r = db::query(concat!(
        product_select!(),
        " WHERE tenant_id = ?1 AND id = ?2"
    ))
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(conn)?;
    let mut products = [product_from_row(&r)?];
    attach_variants(conn, tenant, &mut products)?;
    let [p] = products;
    Ok(p)
}

fn write_variant(tx: &rusqlite::Connection, v: &Variant) -> Result<(), StoreError> {
    let values = serde_json::to_string(&v.option_values).map_err(StoreError::other)?;
    db::query(
        "INSERT INTO variants (tenant_id, id, product_id, sku, title, option_values, weight_grams, created_at, updated_at, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET sku = excluded.sku, title = excluded.title, \
         option_values = excluded.option_values, weight_grams = excluded.weight_grams, \
         updated_at = excluded.updated_at, version = excluded.version",
    )
    .bind(v.tenant_id.as_uuid())
    .bind(v.id.as_uuid())
    .bind(v.product_id.as_uuid())
    .bind(v.sku.as_str())
    .bind(v.title.as_deref())
    .bind(values)
    .bind(v.weight_grams.map(i64::from))
    .bind(to_micros(v.created_at)?)
    .bind(to_micros(v.updated_at)?)
    .bind(v.version)
    .execute(tx)?;
    db::query("DELETE FROM variant_prices WHERE tenant_id = ?1 AND variant_id = ?2")
        .bind(v.tenant_id.as_uuid())
        .bind(v.id.as_uuid())
        .execute(tx)?;
    for m in &v.prices {
        db::query(
            "INSERT INTO variant_prices (tenant_id, variant_id, currency, amount) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(v.tenant_id.as_uuid())
        .bind(v.id.as_uuid())
        .bind(m.currency().code())
        .bind(m.minor())
        .execute(tx)?;
    }
    Ok(())
}

/// Deletes a variant with its prices and inventory levels, refusing while stock is reserved.
fn remove_variant(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    id: uuid::Uuid,
) -> Result<(), StoreError> {
    let reserved: i64 = db::query(
        "SELECT count(*) FROM inventory_levels WHERE tenant_id = ?1 AND variant_id = ?2 AND reserved > 0",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .scalar(tx)?;
    if reserved > 0 {
        return Err(StoreError::Conflict {
            constraint: STOCK_RESERVED.into(),
        });
    }
    for sql in [
        "DELETE FROM inventory_levels WHERE tenant_id = ?1 AND variant_id = ?2",
        "DELETE FROM variant_prices WHERE tenant_id = ?1 AND variant_id = ?2",
        "DELETE FROM variants WHERE tenant_id = ?1 AND id = ?2",
    ] {
        db::query(sql).bind(tenant.as_uuid()).bind(id).execute(tx)?;
    }
    Ok(())
}

/// Inserts or replaces (at the expected version) one product and all its variants.
fn write_product(
    tx: &rusqlite::Connection,
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
            db::query(
                "INSERT INTO products (tenant_id, id, title, handle, description, status, options, metadata, created_at, updated_at, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .bind(tenant.as_uuid())
            .bind(p.id.as_uuid())
            .bind(&p.title)
            .bind(p.handle.as_str())
            .bind(&p.description)
            .bind(p.status.as_str())
            .bind(options)
            .bind(metadata)
            .bind(to_micros(p.created_at)?)
            .bind(to_micros(p.updated_at)?)
            .bind(p.version)
            .execute(tx)?;
        }
        Some(expected) => {
            let done = db::query(
                "UPDATE products SET title = ?3, handle = ?4, description = ?5, status = ?6, options = ?7, \
                 metadata = ?8, updated_at = ?9, version = ?10 WHERE tenant_id = ?1 AND id = ?2 AND version = ?11",
            )
            .bind(tenant.as_uuid())
            .bind(p.id.as_uuid())
            .bind(&p.title)
            .bind(p.handle.as_str())
            .bind(&p.description)
            .bind(p.status.as_str())
            .bind(options)
            .bind(metadata)
            .bind(to_micros(p.updated_at)?)
            .bind(p.version)
            .bind(expected)
            .execute(tx)?;
            if done.rows_affected() != 1 {
                let exists: i64 =
                    db::query("SELECT count(*) FROM products WHERE tenant_id = ?1 AND id = ?2")
                        .bind(tenant.as_uuid())
                        .bind(p.id.as_uuid())
                        .scalar(tx)?;
                return Err(if exists == 0 {
                    StoreError::NotFound
                } else {
                    StoreError::Conflict {
                        constraint: VERSION_CONFLICT.into(),
                    }
                });
            }
            let stored: Vec<uuid::Uuid> =
                db::query("SELECT id FROM variants WHERE tenant_id = ?1 AND product_id = ?2")
                    .bind(tenant.as_uuid())
                    .bind(p.id.as_uuid())
                    .scalars(tx)?;
            for id in stored {
                if !p.variants.iter().any(|v| v.id.as_uuid() == id) {
                    remove_variant(tx, tenant, id)?;
                }
            }
        }
    }
    for v in &p.variants {
        write_variant(tx, v)?;
    }
    Ok(())
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn save_products(
        &self,
        tenant: TenantId,
        products: &[SaveProduct<'_>],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        for save in products {
            if let Err(e) = write_product(&tx, tenant, save) {
                tx.rollback().map_err(map_err)?;
                return Err(e);
            }
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_product(&self, tenant: TenantId, id: ProductId) -> Result<Product, StoreError> {
        self.read(|conn| load_product(conn, tenant, id))
    }

    async fn get_product_by_handle(
        &self,
        tenant: TenantId,
        handle: &Handle,
    ) -> Result<Product, StoreError> {
        self.read(|conn| {
            let r = db::query(concat!(
                product_select!(),
                " WHERE tenant_id = ?1 AND handle = ?2"
            ))
            .bind(tenant.as_uuid())
            .bind(handle.as_str())
            .fetch_one(conn)?;
            let mut products = [product_from_row(&r)?];
            attach_variants(conn, tenant, &mut products)?;
            let [p] = products;
            Ok(p)
        })
    }

    async fn variant_for_sale(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<VariantForSale, StoreError> {
        let r = self.read(|conn| {
            db::query(
                "SELECT v.product_id, p.status, p.title AS product_title, v.sku, v.title AS variant_title, \
                 vp.amount FROM variants v \
                 JOIN products p ON p.tenant_id = v.tenant_id AND p.id = v.product_id \
                 LEFT JOIN variant_prices vp ON vp.tenant_id = v.tenant_id AND vp.variant_id = v.id \
                 AND vp.currency = ?3 \
                 WHERE v.tenant_id = ?1 AND v.id = ?2",
            )
            .bind(tenant.as_uuid())
            .bind(variant.as_uuid())
            .bind(currency.code())
            .fetch_one(conn)
        })?;
        let status: String = r.col("status")?;
        let sku: String = r.col("sku")?;
        let amount: Option<i64> = r.col("amount")?;
        Ok(VariantForSale {
            variant_id: variant,
            product_id: ProductId::from_uuid(r.col("product_id")?),
            product_status: ProductStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            product_title: r.col("product_title")?,
            sku: Sku::parse(&sku).map_err(|_| corrupt("sku"))?,
            variant_title: r.col("variant_title")?,
            price: amount.map(|a| Money::new(a, currency)),
        })
    }

    async fn products_by_handles(
        &self,
        tenant: TenantId,
        handles: &[Handle],
    ) -> Result<Vec<Product>, StoreError> {
        let list = serde_json::Value::from(handles.iter().map(Handle::as_str).collect::<Vec<_>>())
            .to_string();
        self.read(|conn| {
            let rows = db::query(concat!(
                product_select!(),
                " WHERE tenant_id = ?1 AND handle IN (SELECT value FROM json_each(?2))"
            ))
            .bind(tenant.as_uuid())
            .bind(list)
            .fetch_all(conn)?;
            let mut products = rows
                .iter()
                .map(product_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            attach_variants(conn, tenant, &mut products)?;
            Ok(products)
        })
    }

    async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, StoreError> {
        // One statement per sort order; every filter is a bound parameter that is NULL when
        // unused.
        let sql = match filter.sort {
            ProductSort::Created => concat!(
                product_select!(),
                " p WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR updated_at >= ?3) \
                 AND (?4 IS NULL OR instr(lower(title), lower(?4)) > 0 OR EXISTS (SELECT 1 FROM variants v \
                 WHERE v.tenant_id = p.tenant_id AND v.product_id = p.id AND instr(lower(v.sku), lower(?4)) > 0)) \
                 AND (?5 IS NULL OR id > ?5) ORDER BY id LIMIT ?7"
            ),
            ProductSort::Title => concat!(
                product_select!(),
                " p WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR updated_at >= ?3) \
                 AND (?4 IS NULL OR instr(lower(title), lower(?4)) > 0 OR EXISTS (SELECT 1 FROM variants v \
                 WHERE v.tenant_id = p.tenant_id AND v.product_id = p.id AND instr(lower(v.sku), lower(?4)) > 0)) \
                 AND (?5 IS NULL OR title > ?6 OR (title = ?6 AND id > ?5)) ORDER BY title, id LIMIT ?7"
            ),
        };
        let updated_since = filter.updated_since.map(to_micros).transpose()?;
        self.read(|conn| {
            let rows = db::query(sql)
                .bind(tenant.as_uuid())
                .bind(filter.status.map(ProductStatus::as_str))
                .bind(updated_since)
                .bind(filter.q.as_deref())
                .bind(after.map(|c| c.after_id))
                .bind(after.and_then(|c| c.after_title.as_deref()))
                .bind(limit.fetch_count())
                .fetch_all(conn)?;
            let mut products = rows
                .iter()
                .map(product_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let keep = usize::try_from(limit.get()).expect("a limit of at most 100 fits in usize");
            let next_cursor = if products.len() > keep {
                products.truncate(keep);
                products
                    .last()
                    .map(|p| ProductCursor::after(p, filter.sort))
            } else {
                None
            };
            attach_variants(conn, tenant, &mut products)?;
            Ok(ProductPage {
                items: products,
                next_cursor,
            })
        })
    }

    async fn sku_owners(
        &self,
        tenant: TenantId,
        skus: &[Sku],
    ) -> Result<Vec<(Sku, ProductId)>, StoreError> {
        let list =
            serde_json::Value::from(skus.iter().map(Sku::as_str).collect::<Vec<_>>()).to_string();
        let rows = self.read(|c| db::query(
            "SELECT sku, product_id FROM variants WHERE tenant_id = ?1 AND sku IN (SELECT value FROM json_each(?2))",
        )
        .bind(tenant.as_uuid())
        .bind(list)
        .fetch_all(c))?;
        rows.iter()
            .map(|r| {
                let sku: String = r.col("sku")?;
                Ok((
                    Sku::parse(&sku).map_err(|_| corrupt("sku"))?,
                    ProductId::from_uuid(r.col("product_id")?),
                ))
            })
            .collect()
    }

    async fn delete_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        let version: Option<i64> =
            db::query("SELECT version FROM products WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .scalar_optional(&tx)?;
        let outcome = match version {
            None => Err(StoreError::NotFound),
            Some(v) if expected_version.is_some_and(|e| e != v) => Err(StoreError::Conflict {
                constraint: VERSION_CONFLICT.into(),
            }),
            Some(_) => delete_product_rows(&tx, tenant, id),
        };
        if let Err(e) = outcome {
            tx.rollback().map_err(map_err)?;
            return Err(e);
        }
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }
}

fn delete_product_rows(
    tx: &rusqlite::Connection,
    tenant: TenantId,
    id: ProductId,
) -> Result<(), StoreError> {
    let variants: Vec<uuid::Uuid> =
        db::query("SELECT id FROM variants WHERE tenant_id = ?1 AND product_id = ?2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .scalars(tx)?;
    for v in variants {
        remove_variant(tx, tenant, v)?;
    }
    db::query("DELETE FROM products WHERE tenant_id = ?1 AND id = ?2")
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .execute(tx)?;
    Ok(())
}
