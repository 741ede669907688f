//! Products, variants and prices on PostgreSQL.

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
use sqlx::{PgConnection, Row};

use crate::{PgStore, error::map_err, tenants::insert_events};
use keel_store_common::rows::catalog::{product as product_from_row, variant as variant_from_row};

fn corrupt(what: &str) -> StoreError {
    StoreError::other(format!("corrupt catalog row: {what}"))
}

macro_rules! product_select {
    () => {
        "SELECT tenant_id, id, title, handle, description, status, options::text AS options, \
         metadata::text AS metadata, created_at, updated_at, version FROM products"
    };
}

macro_rules! variant_select {
    () => {
        "SELECT tenant_id, id, product_id, sku, title, option_values::text AS option_values, \
         weight_grams, created_at, updated_at, version FROM variants"
    };
}

/// Loads the variants and prices of `products` (two queries, whatever their number) and
/// attaches them in creation order.
async fn attach_variants(
    conn: &mut PgConnection,
    tenant: TenantId,
    products: &mut [Product],
) -> Result<(), StoreError> {
    if products.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = products.iter().map(|p| p.id.as_uuid()).collect();
    let rows = sqlx::query(concat!(
        variant_select!(),
        " WHERE tenant_id = $1 AND product_id = ANY($2) ORDER BY id"
    ))
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut variants = rows
        .iter()
        .map(variant_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let price_rows = sqlx::query(
        "SELECT variant_id, currency, amount FROM variant_prices WHERE tenant_id = $1 AND variant_id IN \
         (SELECT id FROM variants WHERE tenant_id = $1 AND product_id = ANY($2)) \
         ORDER BY variant_id, currency",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut prices: HashMap<uuid::Uuid, Vec<Money>> = HashMap::new();
    for r in &price_rows {
        let code: String = r.try_get("currency").map_err(map_err)?;
        let currency = Currency::parse(&code).map_err(|_| corrupt("currency"))?;
        prices
            .entry(r.try_get("variant_id").map_err(map_err)?)
            .or_default()
            .push(Money::new(r.try_get("amount").map_err(map_err)?, currency));
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

async fn write_variant(tx: &mut PgConnection, v: &Variant) -> Result<(), StoreError> {
    let values = serde_json::to_string(&v.option_values).map_err(StoreError::other)?;
    sqlx::query(
        "INSERT INTO variants (tenant_id, id, product_id, sku, title, option_values, weight_grams, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10) \
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
    .bind(v.created_at)
    .bind(v.updated_at)
    .bind(v.version)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query("DELETE FROM variant_prices WHERE tenant_id = $1 AND variant_id = $2")
        .bind(v.tenant_id.as_uuid())
        .bind(v.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    for m in &v.prices {
        sqlx::query(
            "INSERT INTO variant_prices (tenant_id, variant_id, currency, amount) VALUES ($1, $2, $3, $4)",
        )
        .bind(v.tenant_id.as_uuid())
        .bind(v.id.as_uuid())
        .bind(m.currency().code())
        .bind(m.minor())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// Deletes a variant with its prices and inventory levels, refusing while stock is reserved.
async fn remove_variant(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: uuid::Uuid,
) -> Result<(), StoreError> {
    let reserved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory_levels WHERE tenant_id = $1 AND variant_id = $2 AND reserved > 0",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
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
        sqlx::query(sql)
            .bind(tenant.as_uuid())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// Inserts or replaces (at the expected version) one product and all its variants.
async fn write_product(
    tx: &mut PgConnection,
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
            sqlx::query(
                "INSERT INTO products (tenant_id, id, title, handle, description, status, options, metadata, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11)",
            )
            .bind(tenant.as_uuid())
            .bind(p.id.as_uuid())
            .bind(&p.title)
            .bind(p.handle.as_str())
            .bind(&p.description)
            .bind(p.status.as_str())
            .bind(options)
            .bind(metadata)
            .bind(p.created_at)
            .bind(p.updated_at)
            .bind(p.version)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        Some(expected) => {
            let done = sqlx::query(
                "UPDATE products SET title = $3, handle = $4, description = $5, status = $6, options = $7::jsonb, \
                 metadata = $8::jsonb, updated_at = $9, version = $10 WHERE tenant_id = $1 AND id = $2 AND version = $11",
            )
            .bind(tenant.as_uuid())
            .bind(p.id.as_uuid())
            .bind(&p.title)
            .bind(p.handle.as_str())
            .bind(&p.description)
            .bind(p.status.as_str())
            .bind(options)
            .bind(metadata)
            .bind(p.updated_at)
            .bind(p.version)
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if done.rows_affected() != 1 {
                let exists: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM products WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(p.id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                return Err(if exists == 0 {
                    StoreError::NotFound
                } else {
                    StoreError::Conflict {
                        constraint: VERSION_CONFLICT.into(),
                    }
                });
            }
            let stored: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT id FROM variants WHERE tenant_id = $1 AND product_id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(p.id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            for id in stored {
                if !p.variants.iter().any(|v| v.id.as_uuid() == id) {
                    remove_variant(tx, tenant, id).await?;
                }
            }
        }
    }
    for v in &p.variants {
        write_variant(tx, v).await?;
    }
    Ok(())
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn save_products(
        &self,
        tenant: TenantId,
        products: &[SaveProduct<'_>],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for save in products {
            if let Err(e) = write_product(&mut tx, tenant, save).await {
                tx.rollback().await.map_err(map_err)?;
                return Err(e);
            }
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_product(&self, tenant: TenantId, id: ProductId) -> Result<Product, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let r = sqlx::query(concat!(
            product_select!(),
            " WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut products = [product_from_row(&r)?];
        attach_variants(&mut conn, tenant, &mut products).await?;
        conn.release();
        let [p] = products;
        Ok(p)
    }

    async fn get_product_by_handle(
        &self,
        tenant: TenantId,
        handle: &Handle,
    ) -> Result<Product, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let r = sqlx::query(concat!(
            product_select!(),
            " WHERE tenant_id = $1 AND handle = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(handle.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut products = [product_from_row(&r)?];
        attach_variants(&mut conn, tenant, &mut products).await?;
        conn.release();
        let [p] = products;
        Ok(p)
    }

    async fn variant_for_sale(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<VariantForSale, StoreError> {
        let r = sqlx::query(
            "SELECT v.product_id, p.status, p.title AS product_title, v.sku, v.title AS variant_title, \
             vp.amount FROM variants v \
             JOIN products p ON p.tenant_id = v.tenant_id AND p.id = v.product_id \
             LEFT JOIN variant_prices vp ON vp.tenant_id = v.tenant_id AND vp.variant_id = v.id \
             AND vp.currency = $3 \
             WHERE v.tenant_id = $1 AND v.id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(variant.as_uuid())
        .bind(currency.code())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        let status: String = r.try_get("status").map_err(map_err)?;
        let sku: String = r.try_get("sku").map_err(map_err)?;
        let amount: Option<i64> = r.try_get("amount").map_err(map_err)?;
        Ok(VariantForSale {
            variant_id: variant,
            product_id: ProductId::from_uuid(r.try_get("product_id").map_err(map_err)?),
            product_status: ProductStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            product_title: r.try_get("product_title").map_err(map_err)?,
            sku: Sku::parse(&sku).map_err(|_| corrupt("sku"))?,
            variant_title: r.try_get("variant_title").map_err(map_err)?,
            price: amount.map(|a| Money::new(a, currency)),
        })
    }

    async fn products_by_handles(
        &self,
        tenant: TenantId,
        handles: &[Handle],
    ) -> Result<Vec<Product>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let list: Vec<&str> = handles.iter().map(Handle::as_str).collect();
        let rows = sqlx::query(concat!(
            product_select!(),
            " WHERE tenant_id = $1 AND handle = ANY($2)"
        ))
        .bind(tenant.as_uuid())
        .bind(&list)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut products = rows
            .iter()
            .map(product_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        attach_variants(&mut conn, tenant, &mut products).await?;
        conn.release();
        Ok(products)
    }

    async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        // One statement per sort order; every filter is a bound parameter that is NULL when
        // unused.
        let sql = match filter.sort {
            ProductSort::Created => concat!(
                product_select!(),
                " p WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR updated_at >= $3) \
                 AND ($4::text IS NULL OR strpos(lower(title), lower($4)) > 0 OR EXISTS (SELECT 1 FROM variants v \
                 WHERE v.tenant_id = p.tenant_id AND v.product_id = p.id AND strpos(lower(v.sku), lower($4)) > 0)) \
                 AND ($5::uuid IS NULL OR id > $5) ORDER BY id LIMIT $6"
            ),
            ProductSort::Title => concat!(
                product_select!(),
                " p WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR updated_at >= $3) \
                 AND ($4::text IS NULL OR strpos(lower(title), lower($4)) > 0 OR EXISTS (SELECT 1 FROM variants v \
                 WHERE v.tenant_id = p.tenant_id AND v.product_id = p.id AND strpos(lower(v.sku), lower($4)) > 0)) \
                 AND ($5::uuid IS NULL OR title COLLATE \"C\" > $6 OR (title = $6 AND id > $5)) ORDER BY title COLLATE \"C\", id LIMIT $7"
            ),
        };
        let query = sqlx::query(sql)
            .bind(tenant.as_uuid())
            .bind(filter.status.map(ProductStatus::as_str))
            .bind(filter.updated_since)
            .bind(filter.q.as_deref())
            .bind(after.map(|c| c.after_id));
        // `$6` (the cursor's title) exists only in the title-sorted statement.
        let query = match filter.sort {
            ProductSort::Created => query,
            ProductSort::Title => query.bind(after.and_then(|c| c.after_title.as_deref())),
        };
        let rows = query
            .bind(limit.fetch_count())
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
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
        attach_variants(&mut conn, tenant, &mut products).await?;
        conn.release();
        Ok(ProductPage {
            items: products,
            next_cursor,
        })
    }

    async fn sku_owners(
        &self,
        tenant: TenantId,
        skus: &[Sku],
    ) -> Result<Vec<(Sku, ProductId)>, StoreError> {
        let list: Vec<&str> = skus.iter().map(Sku::as_str).collect();
        let rows = sqlx::query(
            "SELECT sku, product_id FROM variants WHERE tenant_id = $1 AND sku = ANY($2)",
        )
        .bind(tenant.as_uuid())
        .bind(&list)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let sku: String = r.try_get("sku").map_err(map_err)?;
                Ok((
                    Sku::parse(&sku).map_err(|_| corrupt("sku"))?,
                    ProductId::from_uuid(r.try_get("product_id").map_err(map_err)?),
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM products WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let outcome = match version {
            None => Err(StoreError::NotFound),
            Some(v) if expected_version.is_some_and(|e| e != v) => Err(StoreError::Conflict {
                constraint: VERSION_CONFLICT.into(),
            }),
            Some(_) => delete_product_rows(&mut tx, tenant, id).await,
        };
        if let Err(e) = outcome {
            tx.rollback().await.map_err(map_err)?;
            return Err(e);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }
}

async fn delete_product_rows(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: ProductId,
) -> Result<(), StoreError> {
    let variants: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM variants WHERE tenant_id = $1 AND product_id = $2")
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
    for v in variants {
        remove_variant(tx, tenant, v).await?;
    }
    sqlx::query("DELETE FROM products WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(())
}
