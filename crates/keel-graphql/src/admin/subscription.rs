//! The admin schema's subscriptions: committed events of the caller's shop, and presence.

use async_graphql::{Context, ID, Subscription};
use futures_util::Stream;
use keel_http::problem::ProblemKind;

use super::MAX_FILTER;
use crate::{
    access::Field,
    errors::coded,
    subscriptions::{self, presence},
    types::Event,
};

#[derive(Debug)]
pub struct Subscription;

#[allow(
    clippy::unused_async,
    reason = "async-graphql takes subscription fields as async functions"
)]
#[Subscription]
impl Subscription {
    /// The shop's `order.*` events as they commit; `types`: exact types or prefixes with `*`.
    #[graphql(guard = "Field(\"Subscription.orderEvents\")")]
    async fn order_events(
        &self,
        ctx: &Context<'_>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = Event>> {
        let wanted = subscriptions::types(types.unwrap_or_default())?;
        if wanted.len() > MAX_FILTER {
            return Err(coded(
                ProblemKind::BAD_REQUEST,
                format!("At most {MAX_FILTER} `types`."),
            ));
        }
        subscriptions::admin(ctx, move |e| {
            e.event_type.starts_with("order.") && subscriptions::matches(&wanted, &e.event_type)
        })
    }

    /// Stock changes (`inventory.*`) of the variants named.
    #[graphql(guard = "Field(\"Subscription.inventoryChanged\")")]
    async fn inventory_changed(
        &self,
        ctx: &Context<'_>,
        variant_ids: Vec<ID>,
    ) -> async_graphql::Result<impl Stream<Item = Event>> {
        if variant_ids.len() > MAX_FILTER {
            return Err(coded(
                ProblemKind::BAD_REQUEST,
                format!("At most {MAX_FILTER} `variantIds`."),
            ));
        }
        let ids: std::collections::HashSet<String> = variant_ids.into_iter().map(|i| i.0).collect();
        subscriptions::admin(ctx, move |e| {
            e.event_type.starts_with("inventory.")
                && e.payload["variant_id"]
                    .as_str()
                    .is_some_and(|v| ids.contains(v))
        })
    }

    /// Saved versions of one product (`product.*`): an editor sees another's save at once.
    #[graphql(guard = "Field(\"Subscription.productChanged\")")]
    async fn product_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Event>> {
        let id = id.0;
        subscriptions::admin(ctx, move |e| {
            e.event_type.starts_with("product.")
                && e.payload["product_id"].as_str() == Some(id.as_str())
        })
    }

    /// Webhook messages given up (their retries spent) and endpoints disabled.
    #[graphql(guard = "Field(\"Subscription.webhookDeliveryFailed\")")]
    async fn webhook_delivery_failed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Event>> {
        subscriptions::admin(ctx, |e| {
            e.event_type == keel_webhooks::domain::MESSAGE_FAILED
                || e.event_type == "endpoint.disabled"
        })
    }

    /// Who views or edits `resource` now: the whole list at once, then on every change.
    #[graphql(guard = "Field(\"Subscription.presence\")")]
    async fn presence(
        &self,
        ctx: &Context<'_>,
        resource: ID,
    ) -> async_graphql::Result<impl Stream<Item = Vec<presence::Present>>> {
        presence::watch(ctx, &resource).await
    }
}
