//! The admin schema (`/v1/admin/graphql`): staff tokens and secret keys, REST's permission
//! table per field ([`crate::access::FIELDS`]), the same services as REST.

mod mutation;
mod subscription;

pub use mutation::Mutation;
pub(crate) use mutation::answered_order_id;
pub use subscription::Subscription;

use async_graphql::{
    Context, ID, Interface, Object, SimpleObject,
    connection::{Connection, Edge},
};
use keel_catalog::{
    domain::{ProductId, VariantId},
    ports::{ProductCursor, ProductFilter},
};
use keel_http::{AppState, problem::ProblemKind};
use keel_kernel::page::{Cursor, Limit, PageRequest};
use keel_orders::{order::OrderId, ports::OrderFilter};

use crate::{
    access::{AdminViewer, Field},
    errors::{OrProblem as _, coded},
    loaders::{Available, Customers, Loader},
    subscriptions,
    types::{
        Event, InventoryLevel, Order, Product, StockLocation, WebhookEndpoint, WebhookMessage,
    },
};

/// The most ids or types one subscription filters on (the hub runs every filter of a shop
/// for each of its events).
const MAX_FILTER: usize = 100;

/// What a list of `first` items costs: the page size (default 20) times one item.
pub fn page_cost(first: Option<i32>, child: usize) -> usize {
    usize::try_from(first.unwrap_or(20).clamp(1, 100)).unwrap_or(100) * child
}

/// A page size as REST takes it: 1 to 100, default 20.
pub fn limit(first: Option<i32>) -> async_graphql::Result<Limit> {
    match first {
        None => Ok(Limit::default()),
        Some(n) => u32::try_from(n)
            .ok()
            .and_then(|n| Limit::new(n).ok())
            .ok_or_else(|| {
                coded(
                    ProblemKind::BAD_REQUEST,
                    format!("`first` must be between 1 and {}.", Limit::MAX),
                )
            }),
    }
}

/// A Relay connection over a page of Keel's list whose items page by their id.
fn connection<T, N: async_graphql::OutputType>(
    after: Option<Cursor>,
    page: keel_kernel::page::Page<T>,
    id: impl Fn(&T) -> uuid::Uuid,
    node: impl Fn(T) -> N,
) -> Connection<String, N> {
    let mut c = Connection::new(after.is_some(), page.next_cursor.is_some());
    c.edges.extend(
        page.items
            .into_iter()
            .map(|item| Edge::new(Cursor::after(id(&item)).encode(), node(item))),
    );
    c
}

/// The page a connection's `first` and `after` arguments ask for, as REST takes them.
fn page_request(first: Option<i32>, after: Option<&str>) -> async_graphql::Result<PageRequest> {
    Ok(PageRequest {
        limit: limit(first)?,
        after: cursor(after)?,
    })
}

fn cursor(after: Option<&str>) -> async_graphql::Result<Option<Cursor>> {
    after
        .map(|a| {
            Cursor::decode(a).map_err(|_| {
                coded(
                    ProblemKind::BAD_REQUEST,
                    "`after` is not a cursor this API issued.",
                )
            })
        })
        .transpose()
}

pub(crate) fn parts<'c>(
    ctx: &Context<'c>,
) -> async_graphql::Result<(&'c AppState, &'c AdminViewer)> {
    Ok((ctx.data::<AppState>()?, ctx.data::<AdminViewer>()?))
}

fn parse_id<T: std::str::FromStr>(id: &ID) -> Option<T> {
    id.as_str().parse().ok()
}

/// Not found (another shop's too) is `null`, as REST's 404; other failures are errors.
pub(crate) fn found<T>(
    r: Result<T, impl Into<keel_http::problem::Problem>>,
) -> async_graphql::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let p: keel_http::problem::Problem = e.into();
            if p.kind() == ProblemKind::NOT_FOUND {
                Ok(None)
            } else {
                Err(crate::errors::from_problem(&p))
            }
        }
    }
}

/// A page of inventory levels (levels page by their position, so the page has one cursor).
#[derive(Debug, SimpleObject)]
pub struct LevelPage {
    pub nodes: Vec<InventoryLevel>,
    #[graphql(complexity = 0)]
    pub has_next_page: bool,
    /// Where the next page starts (`after`).
    #[graphql(complexity = 0)]
    pub end_cursor: Option<String>,
}

/// Anything with a Keel id, found by it (`prod_…`, `ord_…`).
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per answer, moved once into the response"
)]
pub enum Node {
    Product(Product),
    Order(Order),
}

#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// Products, newest first (`catalog:read`).
    #[graphql(
        guard = "Field(\"Query.products\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn products(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "`draft`, `active` or `archived`")] status: Option<String>,
        #[graphql(desc = "a substring of the title or of a SKU")] search: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, Product>>> {
        let (state, viewer) = parts(ctx)?;
        let status = match status.as_deref() {
            None => None,
            Some(s) => Some(
                keel_catalog::domain::ProductStatus::parse(s).ok_or_else(|| {
                    coded(
                        ProblemKind::BAD_REQUEST,
                        "`status` must be `draft`, `active` or `archived`.",
                    )
                })?,
            ),
        };
        let filter = ProductFilter {
            status,
            q: search,
            ..ProductFilter::default()
        };
        let after = after
            .as_deref()
            .map(|a| {
                ProductCursor::decode(a, filter.sort).map_err(|_| {
                    coded(
                        ProblemKind::BAD_REQUEST,
                        "`after` is not a cursor this API issued.",
                    )
                })
            })
            .transpose()?;
        let page = state
            .catalog
            .list_products(viewer.0.tenant_id, &filter, limit(first)?, after.as_ref())
            .await
            .or_problem()?;
        // The page's stock in one read, when the query asks for it.
        let node = ctx.look_ahead().field("edges").field("node");
        if node.field("variants").field("available").exists()
            && Field("Variant.available").allows(ctx)
        {
            let ids: Vec<VariantId> = page
                .items
                .iter()
                .flat_map(|p| p.variants.iter().map(|v| v.id))
                .collect();
            ctx.data::<Loader<Available>>()?.load_many(ids).await?;
        }
        let mut c = Connection::new(after.is_some(), page.next_cursor.is_some());
        c.edges.extend(page.items.into_iter().map(|p| {
            let at = ProductCursor {
                after_id: p.id.as_uuid(),
                after_title: None,
            };
            Edge::new(at.encode(), Product(p))
        }));
        Ok(Some(c))
    }

    /// One product (`catalog:read`); another shop's is `null`.
    #[graphql(guard = "Field(\"Query.product\")")]
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let Some(id) = parse_id::<ProductId>(&id) else {
            return Ok(None);
        };
        Ok(found(state.catalog.get_product(viewer.0.tenant_id, id).await)?.map(Product))
    }

    /// Orders, newest first (`orders:read`).
    #[graphql(
        guard = "Field(\"Query.orders\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "`pending_payment`, `paid`, … as REST")] status: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, Order>>> {
        let (state, viewer) = parts(ctx)?;
        let status = match status.as_deref() {
            None => None,
            Some(s) => Some(keel_orders::order::OrderStatus::parse(s).ok_or_else(|| {
                coded(ProblemKind::BAD_REQUEST, "`status` is not an order status.")
            })?),
        };
        let filter = OrderFilter {
            status,
            ..OrderFilter::default()
        };
        let request = page_request(first, after.as_deref())?;
        let page = state
            .orders
            .list_orders(viewer.0.tenant_id, &filter, request)
            .await
            .or_problem()?;
        // The page's customers in one read, when the query asks for them.
        let node = ctx.look_ahead().field("edges").field("node");
        if node.field("customer").exists() && Field("Order.customer").allows(ctx) {
            let ids: Vec<_> = page.items.iter().filter_map(|o| o.customer_id).collect();
            ctx.data::<Loader<Customers>>()?.load_many(ids).await?;
        }
        Ok(Some(connection(
            request.after,
            page,
            |o| o.id.as_uuid(),
            Order,
        )))
    }

    /// One order (`orders:read`); another shop's is `null`.
    #[graphql(guard = "Field(\"Query.order\")")]
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let Some(id) = parse_id::<OrderId>(&id) else {
            return Ok(None);
        };
        Ok(found(state.orders.order_detail(viewer.0.tenant_id, id).await)?.map(|d| Order(d.order)))
    }

    /// Anything by its id, where the credential may read its kind; another shop's is `null`.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        if id.starts_with("prod_") {
            if !Field("Query.product").allows(ctx) {
                return Err(crate::errors::forbidden("reading products"));
            }
            return Ok(self.product(ctx, id).await?.map(Node::Product));
        }
        if id.starts_with("ord_") {
            if !Field("Query.order").allows(ctx) {
                return Err(crate::errors::forbidden("reading orders"));
            }
            return Ok(self.order(ctx, id).await?.map(Node::Order));
        }
        Ok(None)
    }

    /// Stock locations (`catalog:read`).
    #[graphql(
        guard = "Field(\"Query.stockLocations\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn stock_locations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, StockLocation>>> {
        let (state, viewer) = parts(ctx)?;
        let request = page_request(first, after.as_deref())?;
        let page = state
            .catalog
            .list_locations(viewer.0.tenant_id, request)
            .await
            .or_problem()?;
        Ok(Some(connection(
            request.after,
            page,
            |l| l.id.as_uuid(),
            |l| StockLocation {
                id: ID(l.id.to_string()),
                name: l.name,
                version: l.version,
            },
        )))
    }

    /// Units per variant and location (`catalog:read`), for one variant or location or all.
    #[graphql(
        guard = "Field(\"Query.inventoryLevels\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn inventory_levels(
        &self,
        ctx: &Context<'_>,
        variant_id: Option<ID>,
        location_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<LevelPage>> {
        let (state, viewer) = parts(ctx)?;
        let bad = |what: &str| {
            coded(
                ProblemKind::BAD_REQUEST,
                format!("`{what}` is not an id of its kind."),
            )
        };
        let variant = variant_id
            .map(|v| parse_id(&v).ok_or_else(|| bad("variantId")))
            .transpose()?;
        let location = location_id
            .map(|l| parse_id(&l).ok_or_else(|| bad("locationId")))
            .transpose()?;
        let request = page_request(first, after.as_deref())?;
        let page = state
            .catalog
            .list_levels(viewer.0.tenant_id, variant, location, request)
            .await
            .or_problem()?;
        Ok(Some(LevelPage {
            nodes: page
                .items
                .into_iter()
                .map(|l| InventoryLevel {
                    variant_id: ID(l.variant_id.to_string()),
                    location_id: ID(l.location_id.to_string()),
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    available: l.available(),
                })
                .collect(),
            has_next_page: page.next_cursor.is_some(),
            end_cursor: page.next_cursor.map(Cursor::encode),
        }))
    }

    /// The shop's webhook endpoints (`webhooks:manage`); their secrets never.
    #[graphql(
        guard = "Field(\"Query.webhookEndpoints\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, WebhookEndpoint>>> {
        let (state, viewer) = parts(ctx)?;
        let request = page_request(first, after.as_deref())?;
        let page = state
            .webhooks
            .endpoints(viewer.0.tenant_id, request)
            .await
            .or_problem()?;
        Ok(Some(connection(
            request.after,
            page,
            |e| e.id.as_uuid(),
            |e| WebhookEndpoint {
                id: ID(e.id.to_string()),
                url: e.url,
                description: e.description,
                event_types: e.event_types,
                enabled: e.enabled,
                disabled_reason: e.disabled_reason,
                created_at: crate::types::rfc3339(e.created_at),
            },
        )))
    }

    /// An endpoint's messages, newest first (`webhooks:manage`): their bodies never.
    #[graphql(
        guard = "Field(\"Query.webhookMessages\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn webhook_messages(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, WebhookMessage>>> {
        let (state, viewer) = parts(ctx)?;
        let Some(endpoint) = parse_id(&endpoint_id) else {
            return Ok(None);
        };
        let request = page_request(first, after.as_deref())?;
        let page = found(
            state
                .webhooks
                .messages(viewer.0.tenant_id, endpoint, request)
                .await,
        )?;
        Ok(page.map(|page| {
            connection(
                request.after,
                page,
                |m| m.id.as_uuid(),
                |m| WebhookMessage {
                    id: ID(m.id.to_string()),
                    event_id: ID(m.event_id.to_string()),
                    event_type: m.event_type,
                    status: m.status.as_str().to_owned(),
                    attempts: m.attempts,
                    next_attempt_at: crate::types::rfc3339(m.next_attempt_at),
                    created_at: crate::types::rfc3339(m.created_at),
                },
            )
        }))
    }

    /// The shop's event log in order (`audit:read`); `type`: exact, or a prefix with `*`.
    #[graphql(
        guard = "Field(\"Query.events\")",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(name = "type")] event_type: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, Event>>> {
        let (state, viewer) = parts(ctx)?;
        let prefix = event_type
            .as_deref()
            .map(|t| subscriptions::type_prefix(t).map(str::to_owned))
            .transpose()?;
        let request = page_request(first, after.as_deref())?;
        let page = state
            .events
            .list(viewer.0.tenant_id, request, prefix.as_deref())
            .await
            .or_problem()?;
        Ok(Some(connection(
            request.after,
            page,
            |e| e.id.as_uuid(),
            |e| Event::from(&e),
        )))
    }
}
