//! Customers: the shoppers of one tenant's storefront.

use keel_kernel::TenantId;
pub use keel_kernel::id::CustomerId;
use time::OffsetDateTime;

use crate::{domain::password::StoredHash, domain::staff::Email};

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub password_hash: StoredHash,
    pub created_at: OffsetDateTime,
}
