//! Products, variants and prices on SQLite (the statements: `keel_store_common::store::catalog`).

use async_trait::async_trait;
use keel_catalog::{
    domain::{Handle, Product, ProductId, Sku, VariantForSale, VariantId},
    ports::{CatalogStore, ProductCursor, ProductFilter, ProductPage, SaveProduct},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent, money::Currency, page::Limit};
use keel_store_common::store::catalog as shared;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn save_products(
        &self,
        tenant: TenantId,
        products: &[SaveProduct<'_>],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::save_products(e, tenant, products, events)))
            .await
    }

    async fn get_product(&self, tenant: TenantId, id: ProductId) -> Result<Product, StoreError> {
        self.read(|e| now(shared::get_product(e, tenant, id)))
    }

    async fn get_product_by_handle(
        &self,
        tenant: TenantId,
        handle: &Handle,
    ) -> Result<Product, StoreError> {
        self.read(|e| now(shared::get_product_by_handle(e, tenant, handle)))
    }

    async fn variant_for_sale(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<VariantForSale, StoreError> {
        self.read(|e| now(shared::variant_for_sale(e, tenant, variant, currency)))
    }

    async fn variants_for_sale(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
        currency: Currency,
    ) -> Result<Vec<VariantForSale>, StoreError> {
        self.read(|e| now(shared::variants_for_sale(e, tenant, variants, currency)))
    }

    async fn products_by_handles(
        &self,
        tenant: TenantId,
        handles: &[Handle],
    ) -> Result<Vec<Product>, StoreError> {
        self.read(|e| now(shared::products_by_handles(e, tenant, handles)))
    }

    async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, StoreError> {
        self.read(|e| now(shared::list_products(e, tenant, filter, limit, after)))
    }

    async fn sku_owners(
        &self,
        tenant: TenantId,
        skus: &[Sku],
    ) -> Result<Vec<(Sku, ProductId)>, StoreError> {
        self.read(|e| now(shared::sku_owners(e, tenant, skus)))
    }

    async fn delete_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::delete_product(
                e,
                tenant,
                id,
                expected_version,
                events,
            ))
        })
        .await
    }
}
