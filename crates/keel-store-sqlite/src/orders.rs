//! Pricing setup, carts, orders and idempotency keys on SQLite (the statements:
//! `keel_store_common::store::orders`). The writes on the storefront's checkout path (carts,
//! the checkout, order changes, key claims) run as jobs on the single writer (ADR 0023),
//! owning what they write, prepared before the hand-over; the others take the connection.

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

use crate::SqliteStore;
use crate::db::{Lite, now};
use crate::writer::Heard;

#[async_trait]
impl SetupStore for SqliteStore {
    async fn create_record(&self, r: &SetupRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        self.tx(|e| now(shared::create_record(e, r, events))).await
    }

    async fn get_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
    ) -> Result<SetupRecord, StoreError> {
        self.read(|e| now(shared::get_record(e, tenant, kind, id)))
    }

    async fn find_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        key: &str,
    ) -> Result<Option<SetupRecord>, StoreError> {
        self.read(|e| now(shared::find_record(e, tenant, kind, key)))
    }

    async fn list_records(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        page: PageRequest,
    ) -> Result<Page<SetupRecord>, StoreError> {
        self.read(|e| now(shared::list_records(e, tenant, kind, page)))
    }

    async fn update_record(
        &self,
        r: &SetupRecord,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::update_record(e, r, expected_version, events)))
            .await
    }

    async fn delete_record(
        &self,
        tenant: TenantId,
        kind: SetupKind,
        id: uuid::Uuid,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::delete_record(
                e,
                tenant,
                kind,
                id,
                expected_version,
                events,
            ))
        })
        .await
    }

    async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, StoreError> {
        self.read(|e| now(shared::pricing_settings(e, tenant)))
    }

    async fn pricing_records(
        &self,
        tenant: TenantId,
        lookup: &PricingLookup,
    ) -> Result<PricingRecords, StoreError> {
        self.read(|e| now(shared::pricing_records(e, tenant, lookup)))
    }

    async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::set_pricing_settings(e, tenant, settings, events)))
            .await
    }
}

#[async_trait]
impl CartStore for SqliteStore {
    async fn create_cart(
        &self,
        cart: &Cart,
        secret_hash: Option<&str>,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let (row, secret_hash, events) = (
            CartRow::of(cart)?,
            secret_hash.map(str::to_owned),
            events.to_vec(),
        );
        self.job(move |c| {
            now(shared::create_cart(
                &mut Lite(c),
                &row,
                secret_hash.as_deref(),
                &events,
            ))
        })
        .await
    }

    async fn get_cart(
        &self,
        tenant: TenantId,
        id: CartId,
    ) -> Result<(Cart, Option<String>), StoreError> {
        self.read(|e| now(shared::get_cart(e, tenant, id)))
    }

    async fn save_cart(
        &self,
        cart: &Cart,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let (row, events) = (CartRow::of(cart)?, events.to_vec());
        self.job(move |c| {
            now(shared::save_cart(
                &mut Lite(c),
                &row,
                expected_version,
                &events,
            ))
        })
        .await
    }

    async fn prune_carts(&self, before: OffsetDateTime, limit: i64) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::prune_carts(e, before, limit)))
            .await
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn place_order(
        &self,
        p: &PlaceOrder<'_>,
        events: &[NewEvent],
        receipt: Option<&OrderReceipt>,
    ) -> Result<i64, StoreError> {
        let (placing, receipt, events) = (Placing::of(p)?, receipt.cloned(), events.to_vec());
        self.job(move |c| {
            now(shared::place_order(
                &mut Lite(c),
                placing,
                &events,
                receipt.as_ref(),
            ))
        })
        .await
    }

    async fn get_order(&self, tenant: TenantId, id: OrderId) -> Result<Order, StoreError> {
        self.read(|e| now(shared::get_order(e, tenant, id)))
    }

    async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, StoreError> {
        self.read(|e| now(shared::list_orders(e, tenant, filter, page)))
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
        // The answer is known before the write: rendered before handing the write over.
        let answer = Answer::of(receipt, order)?;
        let (order, stock, events) = (order.clone(), stock.to_vec(), events.to_vec());
        self.job(move |c| {
            let write = OrderWrite {
                order: &order,
                expected_version,
                stock: &stock,
                give_back,
                events: &events,
                answer: answer.as_ref(),
            };
            now(shared::save_order(&mut Lite(c), &write))
        })
        .await
    }

    async fn order_events(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(|e| now(shared::order_events(e, tenant, id)))
    }

    async fn expired_unpaid(
        &self,
        at: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>, StoreError> {
        self.read(|e| now(shared::expired_unpaid(e, at, limit)))
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &[u8],
        at: OffsetDateTime,
        lock_until: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (key, request_hash) = (key.clone(), request_hash.to_vec());
        self.writer
            .run(move |c| {
                let outcome = now(shared::begin_key(
                    &mut Lite(c),
                    &key,
                    &request_hash,
                    at,
                    lock_until,
                    expires_at,
                ))?;
                // A fresh claim is only ever acted on by this request's own writes, which find
                // it on the writer at once and are committed after it; they check it is still
                // in flight (`finish_key`). So it rides with their commit (ADR 0022): a
                // checkout or a payment waits for one durable commit, not two. An answer read
                // from a key that is done or in flight is told to a client, so it waits for
                // its commit.
                let heard = if matches!(outcome, IdempotencyBegin::Started) {
                    Heard::Ahead
                } else {
                    Heard::AfterCommit
                };
                Ok((outcome, heard))
            })
            .await
    }

    async fn finish(
        &self,
        key: &IdempotencyKey,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.tx(|e| now(shared::finish_key(e, key, status, body)))
            .await
    }

    async fn purge(&self, at: OffsetDateTime) -> Result<u64, StoreError> {
        self.tx(|e| now(shared::purge_keys(e, at))).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_store_common::store::orders::PRICING_RECORDS_SQL;

    use crate::{SqliteSettings, SqliteStore, Synchronous};

    /// The plan, not a timing: every access to `pricing_records` is a seek on the full key of
    /// an index, so the statement's cost does not grow with the shop's records.
    #[tokio::test]
    async fn a_carts_pricing_inputs_are_sought_by_key_whatever_the_shop_holds() {
        let file = keel_testdb::sqlite_file();
        let store = SqliteStore::open(&SqliteSettings {
            path: file.path.clone(),
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            readers: 1,
            synchronous: Synchronous::Full,
            group_commit: true,
        })
        .await
        .expect("open");
        store.migrate().await.expect("migrate");
        let explain = ["EXPLAIN QUERY PLAN ", PRICING_RECORDS_SQL].concat();
        // The statement's parameters `$1`..`$5` first appear in order, so SQLite numbers them
        // 1 to 5.
        let plan = store
            .readers
            .with(|c| {
                let mut stmt = c.prepare(&explain).map_err(crate::error::map_err)?;
                let rows = stmt
                    .query_map(
                        rusqlite::params![
                            uuid::Uuid::nil(),
                            "US/NY",
                            "US",
                            uuid::Uuid::nil(),
                            "SPRING"
                        ],
                        |r| r.get::<_, String>("detail"),
                    )
                    .map_err(crate::error::map_err)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(crate::error::map_err)
            })
            .expect("plan");
        let records: Vec<&String> = plan
            .iter()
            .filter(|d| d.contains("pricing_records"))
            .collect();
        assert_eq!(records.len(), 3, "one seek per kind: {plan:?}");
        for detail in records {
            assert!(
                detail.starts_with("SEARCH pricing_records USING INDEX")
                    && (detail.ends_with("(tenant_id=? AND kind=? AND key=?)")
                        || detail.ends_with("(tenant_id=? AND id=?)")),
                "{detail} in {plan:?}"
            );
        }
    }
}
