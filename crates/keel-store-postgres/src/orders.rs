//! Pricing setup, carts, orders and idempotency keys on PostgreSQL (the statements:
//! `keel_store_common::store::orders`). A cart's write, a key's claim and its answer are
//! single statements on the pool (each its own transaction, one round trip); the other writes
//! run in a transaction, rolled back at once when refused.

use async_trait::async_trait;
use keel_kernel::{
    StoreError, TenantId,
    event::{NewEvent, RecordedEvent},
    idempotency::{IdempotencyBegin, IdempotencyKey, IdempotencyStore},
    page::{Page, PageRequest},
};
use keel_orders::{
    cart::{Cart, CartId},
    order::{Order, OrderId},
    ports::{
        CartStore, OrderFilter, OrderReceipt, OrderStore, PlaceOrder, PricingLookup,
        PricingRecords, PricingSettings, SetupKind, SetupRecord, SetupStore, StockChange,
    },
};
use keel_store_common::store::orders::{self as shared, Answer, CartRow, OrderWrite, Placing};
use time::OffsetDateTime;

use crate::PgStore;

#[async_trait]
impl SetupStore for PgStore {
    async fn create_record(&self, r: &SetupRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::create_record(&mut tx, r, events))
    }

    async fn get_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
    ) -> Result<SetupRecord, StoreError> {
        shared::get_record(&mut self.pg(), tenant, kind, id).await
    }

    async fn find_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        key: &str,
    ) -> Result<Option<SetupRecord>, StoreError> {
        shared::find_record(&mut self.pg(), tenant, kind, key).await
    }

    async fn list_records(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        page: PageRequest,
    ) -> Result<Page<SetupRecord>, StoreError> {
        shared::list_records(&mut self.pg(), tenant, kind, page).await
    }

    async fn update_record(
        &self,
        r: &SetupRecord,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::update_record(
            &mut tx,
            r,
            expected_version,
            events
        ))
    }

    async fn delete_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::delete_record(
            &mut tx,
            tenant,
            kind,
            id,
            expected_version,
            events
        ))
    }

    async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, StoreError> {
        shared::pricing_settings(&mut self.pg(), tenant).await
    }

    async fn pricing_records(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
    ) -> Result<PricingRecords, StoreError> {
        shared::pricing_records(&mut self.pg(), tenant, lookup).await
    }

    async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::set_pricing_settings(
            &mut tx, tenant, settings, events
        ))
    }
}

#[async_trait]
impl CartStore for PgStore {
    async fn create_cart(
        &self,
        cart: &Cart,
        secret_hash: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let row = CartRow::of(cart)?;
        shared::create_cart(&mut self.pg(), &row, secret_hash, events).await
    }

    async fn get_cart(
        &self,
        tenant: TenantId,
        id: CartId,
    ) -> Result<(Cart, Option<String>), StoreError> {
        shared::get_cart(&mut self.pg(), tenant, id).await
    }

    async fn save_cart(
        &self,
        cart: &Cart,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let row = CartRow::of(cart)?;
        shared::save_cart(&mut self.pg(), &row, expected_version, events).await
    }

    async fn prune_carts(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        shared::prune_carts(&mut self.pg(), before, limit).await
    }
}

#[async_trait]
impl OrderStore for PgStore {
    async fn place_order(
        &self,
        p: &PlaceOrder<'_>,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<i64, StoreError> {
        // The converted cart is rendered before the transaction starts.
        let placing = Placing::of(p)?;
        in_tx!(self, |tx| shared::place_order(
            &mut tx, placing, events, receipt
        ))
    }

    async fn get_order(&self, tenant: TenantId, id: OrderId) -> Result<Order, StoreError> {
        shared::get_order(&mut self.pg(), tenant, id).await
    }

    async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, StoreError> {
        shared::list_orders(&mut self.pg(), tenant, filter, page).await
    }

    async fn save_order(
        &self,
        order: &Order,
        expected_version: i64,
        stock: &[StockChange],
        give_back: bool,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<(), StoreError> {
        // The answer is known before the write: rendered before the transaction starts.
        let answer = Answer::of(receipt, order)?;
        let write = OrderWrite {
            order,
            expected_version,
            stock,
            give_back,
            events,
            answer: answer.as_ref(),
        };
        in_tx!(self, |tx| shared::save_order(&mut tx, &write))
    }

    async fn order_events(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        shared::order_events(&mut self.pg(), tenant, id).await
    }

    async fn expired_unpaid(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>, StoreError> {
        shared::expired_unpaid(&mut self.pg(), now, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &[u8],
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError> {
        shared::begin_key(
            &mut self.pg(),
            key,
            request_hash,
            now,
            lock_until,
            expires_at,
        )
        .await
    }

    async fn finish(
        &self,
        key: &IdempotencyKey,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        shared::finish_key(&mut self.pg(), key, status, body).await
    }

    async fn purge(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        shared::purge_keys(&mut self.pg(), now).await
    }
}
