//! Customers: the shoppers of one tenant's storefront.

use keel_kernel::{TenantId, define_id};
use time::OffsetDateTime;

use crate::{password::StoredHash, staff::Email};

define_id!(
    /// A customer of one tenant.
    CustomerId,
    "cus"
);

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub password_hash: StoredHash,
    pub created_at: OffsetDateTime,
}
