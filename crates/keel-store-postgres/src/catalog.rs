//! Products, variants and prices on PostgreSQL (the statements:
//! `keel_store_common::store::catalog`).

use async_trait::async_trait;
use keel_catalog::{
    domain::{Handle, Product, ProductId, Sku, VariantForSale, VariantId},
    ports::{CatalogStore, ProductCursor, ProductFilter, ProductPage, SaveProduct},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent, money::Currency, page::Limit};
use keel_store_common::store::catalog as shared;

use crate::PgStore;

#[async_trait]
impl CatalogStore for PgStore {
    async fn save_products(
        &self,
        tenant: TenantId,
        products: &[SaveProduct<'_>],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::save_products(
            &mut tx, tenant, products, events
        ))
    }

    async fn get_product(&self, tenant: TenantId, id: ProductId) -> Result<Product, StoreError> {
        shared::get_product(&mut self.pg(), tenant, id).await
    }

    async fn get_product_by_handle(
        &self,
        tenant: TenantId,
        handle: &Handle,
    ) -> Result<Product, StoreError> {
        shared::get_product_by_handle(&mut self.pg(), tenant, handle).await
    }

    async fn variant_for_sale(
        &self,
        tenant: TenantId,
        variant: VariantId,
        currency: Currency,
    ) -> Result<VariantForSale, StoreError> {
        shared::variant_for_sale(&mut self.pg(), tenant, variant, currency).await
    }

    async fn variants_for_sale(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
        currency: Currency,
    ) -> Result<Vec<VariantForSale>, StoreError> {
        shared::variants_for_sale(&mut self.pg(), tenant, variants, currency).await
    }

    async fn products_by_handles(
        &self,
        tenant: TenantId,
        handles: &[Handle],
    ) -> Result<Vec<Product>, StoreError> {
        shared::products_by_handles(&mut self.pg(), tenant, handles).await
    }

    async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, StoreError> {
        shared::list_products(&mut self.pg(), tenant, filter, limit, after).await
    }

    async fn sku_owners(
        &self,
        tenant: TenantId,
        skus: &[Sku],
    ) -> Result<Vec<(Sku, ProductId)>, StoreError> {
        shared::sku_owners(&mut self.pg(), tenant, skus).await
    }

    async fn delete_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::delete_product(
            &mut tx,
            tenant,
            id,
            expected_version,
            events
        ))
    }
}
