//! DataLoaders: every relation a list can reach is read in one statement for the whole
//! answer, whatever the page size (ADR 0040, "No N+1"). One set per request, for one shop.

use std::collections::HashMap;

use async_graphql::{
    ID,
    dataloader::{DataLoader, HashMapCache},
};
use keel_catalog::domain::VariantId;
use keel_http::AppState;
use keel_identity::domain::customer::CustomerId;
use keel_kernel::TenantId;

use crate::{
    errors::{OrProblem as _, from_problem},
    types::{Customer, rfc3339},
};

/// Customers by id, for orders' `customer`.
pub struct Customers {
    pub state: AppState,
    pub tenant: TenantId,
}

impl async_graphql::dataloader::Loader<CustomerId> for Customers {
    type Value = Customer;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> Result<HashMap<CustomerId, Customer>, Self::Error> {
        let found = self
            .state
            .auth
            .customers_by_ids(self.tenant, keys)
            .await
            .or_problem()?;
        Ok(found
            .into_iter()
            .map(|c| {
                (
                    c.id,
                    Customer {
                        id: ID(c.id.to_string()),
                        email_address: c.email.as_str().to_owned(),
                        created_at: rfc3339(c.created_at),
                    },
                )
            })
            .collect())
    }
}

/// Units available per variant (over every location), for variants' `available`.
pub struct Available {
    pub state: AppState,
    pub tenant: TenantId,
}

impl async_graphql::dataloader::Loader<VariantId> for Available {
    type Value = i64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[VariantId]) -> Result<HashMap<VariantId, i64>, Self::Error> {
        self.state
            .catalog
            .available(self.tenant, keys)
            .await
            .map_err(|e| from_problem(&e.into()))
    }
}

/// A request's loader: batched, and remembering what it read for the request (a list primes
/// it with one read for the whole page, so the batch does not depend on timing).
pub type Loader<T> = DataLoader<T, HashMapCache>;

/// Customers of `tenant`, batched.
pub fn customers(state: &AppState, tenant: TenantId) -> Loader<Customers> {
    DataLoader::with_cache(
        Customers {
            state: state.clone(),
            tenant,
        },
        tokio::spawn,
        HashMapCache::default(),
    )
}

/// Availability of `tenant`'s variants, batched.
pub fn available(state: &AppState, tenant: TenantId) -> Loader<Available> {
    DataLoader::with_cache(
        Available {
            state: state.clone(),
            tenant,
        },
        tokio::spawn,
        HashMapCache::default(),
    )
}

/// The request's loaders for `tenant`.
pub fn for_tenant(
    request: async_graphql::Request,
    state: &AppState,
    tenant: TenantId,
) -> async_graphql::Request {
    request
        .data(customers(state, tenant))
        .data(available(state, tenant))
}
