//! The storefront's catalogue: active products with prices in one currency and, where the
//! shop shows them, stock counts; and the storefront settings.

#[allow(clippy::wildcard_imports)]
use super::*;

impl CatalogService {
    pub(super) fn store_product(
        product: Product,
        available: &HashMap<VariantId, i64>,
        currency: Currency,
        settings: StorefrontSettings,
    ) -> StoreProduct {
        let counts = product
            .variants
            .iter()
            .map(|v| available.get(&v.id).copied().unwrap_or(0))
            .collect();
        StoreProduct {
            product,
            available: counts,
            currency,
            show_counts: settings.show_stock_counts,
        }
    }

    /// Active products, priced in `currency`, with availability: a fixed number of queries per
    /// page.
    pub async fn store_products(
        &self,
        tenant: TenantId,
        currency: Currency,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<StorePage, CatalogError> {
        let filter = ProductFilter {
            status: Some(ProductStatus::Active),
            ..ProductFilter::default()
        };
        let page = self
            .catalog
            .list_products(tenant, &filter, limit, after)
            .await?;
        let ids: Vec<VariantId> = page
            .items
            .iter()
            .flat_map(|p| p.variants.iter().map(|v| v.id))
            .collect();
        let available: HashMap<VariantId, i64> = self
            .inventory
            .available(tenant, &ids)
            .await?
            .into_iter()
            .collect();
        let settings = self.inventory.storefront_settings(tenant).await?;
        Ok(StorePage {
            items: page
                .items
                .into_iter()
                .map(|p| Self::store_product(p, &available, currency, settings))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// One active product by id (`prod_…`) or handle; drafts and archived products are
    /// `NotFound`.
    pub async fn store_product_by_key(
        &self,
        tenant: TenantId,
        key: &str,
        currency: Currency,
    ) -> Result<StoreProduct, CatalogError> {
        let product = if key.starts_with("prod_") {
            let id: ProductId = key.parse().map_err(|_| CatalogError::NotFound)?;
            self.catalog.get_product(tenant, id).await?
        } else {
            let handle = Handle::parse(key).map_err(|_| CatalogError::NotFound)?;
            self.catalog.get_product_by_handle(tenant, &handle).await?
        };
        if product.status != ProductStatus::Active {
            return Err(CatalogError::NotFound);
        }
        let ids: Vec<VariantId> = product.variants.iter().map(|v| v.id).collect();
        let available: HashMap<VariantId, i64> = self
            .inventory
            .available(tenant, &ids)
            .await?
            .into_iter()
            .collect();
        let settings = self.inventory.storefront_settings(tenant).await?;
        Ok(Self::store_product(product, &available, currency, settings))
    }

    /// Available units (on hand less reserved, over all locations) of each of `ids`, in one
    /// read whatever their number; a variant without stock is absent.
    pub async fn available(
        &self,
        tenant: TenantId,
        ids: &[VariantId],
    ) -> Result<HashMap<VariantId, i64>, CatalogError> {
        Ok(self
            .inventory
            .available(tenant, ids)
            .await?
            .into_iter()
            .collect())
    }

    pub async fn storefront_settings(
        &self,
        tenant: TenantId,
    ) -> Result<StorefrontSettings, CatalogError> {
        Ok(self.inventory.storefront_settings(tenant).await?)
    }

    pub async fn set_storefront_settings(
        &self,
        tenant: TenantId,
        settings: StorefrontSettings,
    ) -> Result<(), CatalogError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "storefront.settings_changed",
            &serde_json::json!({"show_stock_counts": settings.show_stock_counts}),
            now,
        )?;
        Ok(self
            .inventory
            .set_storefront_settings(tenant, settings, &[e])
            .await?)
    }
}
