//! Customer accounts on SQLite (the statements: `keel_store_common::store::customers`).

use async_trait::async_trait;
use keel_identity::{
    domain::customer::{Customer, CustomerId},
    domain::staff::{Email, RefreshToken, Session},
    ports::CustomerStore,
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_store_common::store::customers as shared;

use crate::SqliteStore;
use crate::db::now;

#[async_trait]
impl CustomerStore for SqliteStore {
    async fn sign_up_customer(
        &self,
        customer: &Customer,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        self.tx(|e| {
            now(shared::sign_up_customer(
                e, customer, session, refresh, events,
            ))
        })
        .await
    }

    async fn get_customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer, StoreError> {
        self.read(|e| now(shared::get_customer(e, tenant, id)))
    }

    async fn customers_by_ids(
        &self,
        tenant: TenantId,
        ids: &[CustomerId],
    ) -> Result<Vec<Customer>, StoreError> {
        self.read(|e| now(shared::customers_by_ids(e, tenant, ids)))
    }

    async fn find_customer_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Customer, StoreError> {
        self.read(|e| now(shared::find_customer_by_email(e, tenant, email)))
    }
}
