//! Stock locations, inventory levels, the adjustment ledger and reservations on PostgreSQL
//! (the statements: `keel_store_common::store::inventory`).

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

use crate::PgStore;

#[async_trait]
impl InventoryStore for PgStore {
    async fn create_location(&self, l: &Location, events: &[NewEvent]) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_location(&mut tx, l, events))
    }

    async fn get_location(&self, tenant: TenantId, id: LocationId) -> Result<Location, StoreError> {
        shared::get_location(&mut self.pg(), tenant, id).await
    }

    async fn list_locations(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Location>, StoreError> {
        shared::list_locations(&mut self.pg(), tenant, page).await
    }

    async fn update_location(
        &self,
        l: &Location,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::update_location(
            &mut tx,
            l,
            expected_version,
            events
        ))
    }

    async fn delete_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::delete_location(
            &mut tx,
            tenant,
            id,
            expected_version,
            events
        ))
    }

    async fn list_levels(
        &self,
        tenant: TenantId,
        variant: Option<VariantId>,
        location: Option<LocationId>,
        page: PageRequest,
    ) -> Result<Page<InventoryLevel>, StoreError> {
        shared::list_levels(&mut self.pg(), tenant, variant, location, page).await
    }

    async fn location_with_stock(
        &self,
        tenant: TenantId,
        variant: VariantId,
        quantity: i64,
    ) -> Result<Option<LocationId>, StoreError> {
        shared::location_with_stock(&mut self.pg(), tenant, variant, quantity).await
    }

    async fn adjust(
        &self,
        adjustment: &Adjustment,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        in_tx!(self, |tx| shared::adjust(&mut tx, adjustment, events))
    }

    async fn reserve(
        &self,
        reservation: &Reservation,
        events: &[NewEvent],
    ) -> Result<InventoryLevel, StoreError> {
        in_tx!(self, |tx| shared::reserve(&mut tx, reservation, events))
    }

    /// A reservation released already writes nothing: its empty transaction commits.
    async fn release(
        &self,
        tenant: TenantId,
        id: ReservationId,
        at_time: OffsetDateTime,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        in_tx!(self, |tx| shared::release(
            &mut tx, tenant, id, at_time, events
        ))
    }

    async fn available(
        &self,
        tenant: TenantId,
        variants: &[VariantId],
    ) -> Result<Vec<(VariantId, i64)>, StoreError> {
        shared::available(&mut self.pg(), tenant, variants).await
    }

    async fn storefront_settings(
        &self,
        tenant: TenantId,
    ) -> Result<StorefrontSettings, StoreError> {
        shared::storefront_settings(&mut self.pg(), tenant).await
    }

    async fn set_storefront_settings(
        &self,
        tenant: TenantId,
        settings: StorefrontSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::set_storefront_settings(
            &mut tx, tenant, settings, events
        ))
    }
}
