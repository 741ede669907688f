//! Customer accounts on SQLite.

use async_trait::async_trait;
use keel_identity::{
    customer::{Customer, CustomerId},
    ports::CustomerStore,
    staff::{Email, RefreshToken, Session},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};

use crate::db::{self};
use crate::{
    SqliteStore, error::map_err, identity::insert_session, tenants::insert_events, to_micros,
};
use keel_store_common::rows::identity::customer_from_row;

macro_rules! customer_select {
    () => {
        "SELECT tenant_id, id, email, password_hash, created_at FROM customers"
    };
}

#[async_trait]
impl CustomerStore for SqliteStore {
    async fn sign_up_customer(
        &self,
        customer: &Customer,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let tx = self.write().await?;
        db::query(
            "INSERT INTO customers (tenant_id, id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(customer.tenant_id.as_uuid())
        .bind(customer.id.as_uuid())
        .bind(customer.email.as_str())
        .bind(customer.password_hash.as_str())
        .bind(to_micros(customer.created_at)?)
        .execute(&tx)?;
        insert_session(&tx, session, refresh)?;
        insert_events(&tx, events)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer, StoreError> {
        let r = self.read(|c| {
            db::query(concat!(
                customer_select!(),
                " WHERE tenant_id = ?1 AND id = ?2"
            ))
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(c)
        })?;
        customer_from_row(&r)
    }

    async fn find_customer_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Customer, StoreError> {
        let r = self.read(|c| {
            db::query(concat!(
                customer_select!(),
                " WHERE tenant_id = ?1 AND email = ?2"
            ))
            .bind(tenant.as_uuid())
            .bind(email.as_str())
            .fetch_one(c)
        })?;
        customer_from_row(&r)
    }
}
