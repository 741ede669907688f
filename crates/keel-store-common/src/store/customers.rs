//! Customer accounts.

use keel_identity::{
    domain::customer::{Customer, CustomerId},
    domain::staff::{Email, RefreshToken, Session},
};
use keel_kernel::{StoreError, TenantId, event::NewEvent};

use crate::{
    args,
    exec::{Exec, decode, pick},
    rows::identity::customer_from_row,
    store::{identity::insert_session, tenants::insert_events},
};

/// The column list as a literal-producing macro, so every query stays a compile-time literal.
macro_rules! customer_select {
    () => {
        "SELECT tenant_id, id, email, password_hash, created_at FROM customers"
    };
}

/// Adds a customer and starts their first session, with the events.
pub async fn sign_up_customer<E: Exec>(
    e: &mut E,
    customer: &Customer,
    session: &Session,
    refresh: &RefreshToken,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    e.run(
        "INSERT INTO customers (tenant_id, id, email, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        args![
            customer.tenant_id.as_uuid(),
            customer.id.as_uuid(),
            customer.email.as_str(),
            customer.password_hash.as_str(),
            customer.created_at
        ],
    )
    .await?;
    insert_session(e, session, refresh).await?;
    insert_events(e, events).await
}

pub async fn get_customer<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    id: CustomerId,
) -> Result<Customer, StoreError> {
    let row = e
        .one(
            concat!(customer_select!(), " WHERE tenant_id = $1 AND id = $2"),
            args![tenant.as_uuid(), id.as_uuid()],
        )
        .await?;
    customer_from_row(&row)
}

pub async fn customers_by_ids<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    ids: &[CustomerId],
) -> Result<Vec<Customer>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = ids.iter().map(CustomerId::as_uuid).collect();
    // A list of ids: an array on PostgreSQL, a JSON array of hex forms on SQLite.
    let rows = e
        .all(
            pick::<E>(
                concat!(customer_select!(), " WHERE tenant_id = $1 AND id = ANY($2)"),
                concat!(
                    customer_select!(),
                    " WHERE tenant_id = $1 AND id IN (SELECT unhex(value) FROM json_each($2))"
                ),
            ),
            args![tenant.as_uuid(), &ids],
        )
        .await?;
    decode(&rows, customer_from_row)
}

pub async fn find_customer_by_email<E: Exec>(
    e: &mut E,
    tenant: TenantId,
    email: &Email,
) -> Result<Customer, StoreError> {
    let row = e
        .one(
            concat!(customer_select!(), " WHERE tenant_id = $1 AND email = $2"),
            args![tenant.as_uuid(), email.as_str()],
        )
        .await?;
    customer_from_row(&row)
}
