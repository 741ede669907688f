//! Customer accounts on PostgreSQL (the statements: `keel_store_common::store::customers`).

use async_trait::async_trait;
use keel_identity::{
    domain::customer::{Customer, CustomerId},
    domain::staff::{Email, RefreshToken, Session},
    ports::CustomerStore,
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};
use keel_store_common::store::customers as shared;

use crate::PgStore;

#[async_trait]
impl CustomerStore for PgStore {
    async fn sign_up_customer(
        &self,
        customer: &Customer,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| shared::sign_up_customer(
            &mut tx, customer, session, refresh, events
        ))
    }

    async fn get_customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer, StoreError> {
        shared::get_customer(&mut self.pg(), tenant, id).await
    }

    async fn customers_by_ids(
        &self,
        tenant: TenantId,
        ids: &[CustomerId],
    ) -> Result<Vec<Customer>, StoreError> {
        shared::customers_by_ids(&mut self.pg(), tenant, ids).await
    }

    async fn find_customer_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Customer, StoreError> {
        shared::find_customer_by_email(&mut self.pg(), tenant, email).await
    }
}
