//! Stock locations, inventory levels, the adjustment ledger and reservations on SQLite (the
//! statements: `keel_store_common::store::inventory`).

use async_trait::async_trait;
use keel_catalog::{
    domain::{
        Adjustment, InventoryLevel, Location, LocationId, Reservation, ReservationId, VariantId,
    },
    ports::{InventoryStore, StorefrontSettings},
};
use keel_kernel::{
    StoreError, TenantId,
    event::NewEvent,
    page::{Page, PageRequest},
};
use keel_store_common::store::inventory as shared;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl InventoryStore for SqliteStore {
    async fn create_location(&self, l: &Location, events: &[NewEvent]) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create_location(e, l, events)))
            .await
    }

    async fn get_location(&self, tenant: TenantId, id: LocationId) -> Result<Location, StoreError> {
        self.read(|e| now(shared::get_location(e, tenant, id)))
    }

    async fn list_locations(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Location>, StoreError> {
        self.read(|e| now(shared::list_locations(e, tenant, page)))
    }

    async fn update_location(
        &self,
        l: &Location,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::update_location(e, l, expected_version, events)))
            .await
    }

    async fn delete_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::delete_location(
                e,
                tenant,
                id,
                expected_version,
                events,
            ))
        })
        .await
    }

    async fn list_levels(
        &self,
        tenant: TenantId,
        variant: Option<VariantId>,
        location: Option<LocationId>,
        page: PageRequest,
    ) -> Result<Page<InventoryLevel>, StoreError> {
        self.read(|e| now(shared::list_levels(e, tenant, variant, location, page)))
    }

    async fn location_with_stock(
        &self,
        tenant: TenantId,
        variant: VariantId,
        quantity: i64,
    ) -> Result<Option<LocationId>, StoreError> {
        self.read(|e| now(shared::location_with_stock(e, tenant, variant, quantity)))
    }

    async fn adjust(
        &self,
        adjustment: &Adjustment,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        self.tx(|e| now(shared::adjust(e, adjustment, events)))
            .await
    }

    async fn reserve(
        &self,
        reservation: &Reservation,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        self.tx(|e| now(shared::reserve(e, reservation, events)))
            .await
    }

    /// A reservation released already writes nothing: its empty transaction commits.
    async fn release(
        &self,
        tenant: TenantId,
        id: ReservationId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        self.tx(|e| now(shared::release(e, tenant, id, at_time, events)))
            .await
    }

    async fn available(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
    ) -> Result<Vec<(VariantId, i64)>, StoreError> {
        self.read(|e| now(shared::available(e, tenant, variants)))
    }

    async fn storefront_settings(
        &self,
        tenant: TenantId,
    ) -> Result<StorefrontSettings, StoreError> {
        self.read(|e| now(shared::storefront_settings(e, tenant)))
    }

    async fn set_storefront_settings(
        &self,
        tenant: TenantId,
        settings: StorefrontSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::set_storefront_settings(e, tenant, settings, events)))
            .await
    }
}
