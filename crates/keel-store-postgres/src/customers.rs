//! Customer accounts on PostgreSQL.

use async_trait::async_trait;
use keel_identity::{
    customer::{Customer, CustomerId},
    ports::CustomerStore,
    staff::{Email, RefreshToken, Session},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};

use crate::{PgStore, error::map_err, identity::insert_session, tenants::insert_events};
use keel_store_common::rows::identity::customer_from_row;

macro_rules! customer_select {
    () => {
        "SELECT tenant_id, id, email, password_hash, created_at FROM customers"
    };
}

#[async_trait]
impl CustomerStore for PgStore {
    async fn sign_up_customer(
        &self,
        customer: &Customer,
        session: &Session,
        refresh: &RefreshToken,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO customers (tenant_id, id, email, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(customer.tenant_id.as_uuid())
        .bind(customer.id.as_uuid())
        .bind(customer.email.as_str())
        .bind(customer.password_hash.as_str())
        .bind(customer.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_session(&mut tx, session, refresh).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_customer(&self, tenant: TenantId, id: CustomerId) -> Result<Customer, StoreError> {
        let r = sqlx::query(concat!(
            customer_select!(),
            " WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        customer_from_row(&r)
    }

    async fn find_customer_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Customer, StoreError> {
        let r = sqlx::query(concat!(
            customer_select!(),
            " WHERE tenant_id = $1 AND email = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(email.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        customer_from_row(&r)
    }
}
