//! The admin schema (`/v1/admin/graphql`): staff tokens and secret keys, REST's permission
//! table per field ([`crate::access::FIELDS`]), the same services as REST.

use async_graphql::{
    Context, ID, InputObject, Interface, Json, Object, SimpleObject, Subscription,
    connection::{Connection, Edge},
};
use futures_util::Stream;
use keel_catalog::{
    domain::{
        ProductId, ProductInput, ProductPatchInput, VariantId, VariantInput, VariantPatchInput,
    },
    ports::{ProductCursor, ProductFilter},
    service::AdjustRequest,
};
use keel_http::{AppState, auth::AdminActor, problem::ProblemKind};
use keel_kernel::page::{Cursor, Limit, PageRequest};
use keel_orders::{order::OrderId, ports::OrderFilter};

use crate::{
    access::{AdminViewer, Field},
    errors::{OrProblem as _, coded, not_found},
    loaders::{Available, Customers, Loader},
    scalars::MinorUnits,
    subscriptions::{self, presence},
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
        let after = cursor(after.as_deref())?;
        let page = state
            .orders
            .list_orders(
                viewer.0.tenant_id,
                &filter,
                PageRequest {
                    limit: limit(first)?,
                    after,
                },
            )
            .await
            .or_problem()?;
        // The page's customers in one read, when the query asks for them.
        let node = ctx.look_ahead().field("edges").field("node");
        if node.field("customer").exists() && Field("Order.customer").allows(ctx) {
            let ids: Vec<_> = page.items.iter().filter_map(|o| o.customer_id).collect();
            ctx.data::<Loader<Customers>>()?.load_many(ids).await?;
        }
        Ok(Some(connection(after, page, |o| o.id.as_uuid(), Order)))
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
        let after = cursor(after.as_deref())?;
        let page = state
            .catalog
            .list_locations(
                viewer.0.tenant_id,
                PageRequest {
                    limit: limit(first)?,
                    after,
                },
            )
            .await
            .or_problem()?;
        Ok(Some(connection(
            after,
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
        let after = cursor(after.as_deref())?;
        let page = state
            .catalog
            .list_levels(
                viewer.0.tenant_id,
                variant,
                location,
                PageRequest {
                    limit: limit(first)?,
                    after,
                },
            )
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
        let after = cursor(after.as_deref())?;
        let page = state
            .webhooks
            .endpoints(
                viewer.0.tenant_id,
                PageRequest {
                    limit: limit(first)?,
                    after,
                },
            )
            .await
            .or_problem()?;
        Ok(Some(connection(
            after,
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
        let after = cursor(after.as_deref())?;
        let page = found(
            state
                .webhooks
                .messages(
                    viewer.0.tenant_id,
                    endpoint,
                    PageRequest {
                        limit: limit(first)?,
                        after,
                    },
                )
                .await,
        )?;
        Ok(page.map(|page| {
            connection(
                after,
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
        let after = cursor(after.as_deref())?;
        let page = state
            .events
            .list(
                viewer.0.tenant_id,
                PageRequest {
                    limit: limit(first)?,
                    after,
                },
                prefix.as_deref(),
            )
            .await
            .or_problem()?;
        Ok(Some(connection(
            after,
            page,
            |e| e.id.as_uuid(),
            |e| Event::from(&e),
        )))
    }
}

/// A line and a quantity.
#[derive(InputObject, serde::Serialize)]
pub struct LineQuantity {
    #[serde(rename = "line_id")]
    pub line_id: ID,
    pub quantity: i64,
}

/// The order a once-only operation answered (its stored answer on a retry): its id, or the
/// refusal it stored, with the code REST would have answered.
pub(crate) async fn answered_order_id(
    res: axum::response::Response,
) -> async_graphql::Result<OrderId> {
    let status = res.status();
    let unreadable = || coded(ProblemKind::INTERNAL, "The answer could not be read.");
    let bytes = axum::body::to_bytes(res.into_body(), 4 * 1024 * 1024)
        .await
        .map_err(|_| unreadable())?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| unreadable())?;
    if !status.is_success() {
        let code = body["code"].as_str().unwrap_or("internal");
        let kind = keel_http::problem::CATALOGUE
            .iter()
            .copied()
            .find(|k| k.code == code)
            .unwrap_or(ProblemKind::INTERNAL);
        return Err(coded(kind, body["detail"].as_str().unwrap_or_default()));
    }
    body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| coded(ProblemKind::INTERNAL, "The answer names no order."))
}

async fn answered_order(
    state: &AppState,
    tenant: keel_kernel::TenantId,
    res: axum::response::Response,
) -> async_graphql::Result<Order> {
    let id = answered_order_id(res).await?;
    Ok(Order(
        state
            .orders
            .order_detail(tenant, id)
            .await
            .or_problem()?
            .order,
    ))
}

fn order_id(id: &ID) -> async_graphql::Result<OrderId> {
    parse_id(id).ok_or_else(not_found)
}

fn body(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[derive(Debug)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a product with its variants (`catalog:write`); `input` is REST's body of
    /// `POST /v1/admin/products`, validated the same way (problems at their pointers).
    #[graphql(guard = "Field(\"Mutation.createProduct\")")]
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: Json<serde_json::Value>,
    ) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let input: ProductInput = serde_json::from_value(input.0)
            .map_err(|e| coded(ProblemKind::VALIDATION_FAILED, e.to_string()))?;
        let p = state
            .catalog
            .create_product(viewer.0.tenant_id, &input)
            .await
            .or_problem()?;
        Ok(Some(Product(p)))
    }

    /// Changes a product's own fields (`catalog:write`); `input` is REST's `PATCH` body. With
    /// `expectedVersion`, a product changed since is `precondition_failed` (a stale save).
    #[graphql(guard = "Field(\"Mutation.updateProduct\")")]
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: Json<serde_json::Value>,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let id: ProductId = parse_id(&id).ok_or_else(not_found)?;
        let patch: ProductPatchInput = serde_json::from_value(input.0)
            .map_err(|e| coded(ProblemKind::VALIDATION_FAILED, e.to_string()))?;
        let p = state
            .catalog
            .update_product(viewer.0.tenant_id, id, &patch, expected_version)
            .await
            .or_problem()?;
        Ok(Some(Product(p)))
    }

    /// Adjusts a variant's units on hand at a location (`catalog:write`), as REST's
    /// `POST /v1/admin/inventory/adjustments`; answers the units now available there.
    #[graphql(guard = "Field(\"Mutation.adjustInventory\")")]
    async fn adjust_inventory(
        &self,
        ctx: &Context<'_>,
        variant_id: ID,
        location_id: ID,
        delta: i64,
        reason: String,
        note: Option<String>,
    ) -> async_graphql::Result<Option<i64>> {
        let (state, viewer) = parts(ctx)?;
        let variant: VariantId = parse_id(&variant_id).ok_or_else(|| {
            coded(
                ProblemKind::VALIDATION_FAILED,
                "`variantId` must be a variant id (`var_…`).",
            )
        })?;
        let location = parse_id(&location_id).ok_or_else(|| {
            coded(
                ProblemKind::VALIDATION_FAILED,
                "`locationId` must be a location id (`loc_…`).",
            )
        })?;
        let actor = match &viewer.0.actor {
            AdminActor::Staff(s) => s.user_id.to_string(),
            AdminActor::Key(k) => k.key_id.to_string(),
        };
        let level = state
            .catalog
            .adjust(
                viewer.0.tenant_id,
                &AdjustRequest {
                    variant,
                    location,
                    delta,
                    reason,
                    note,
                },
                actor,
            )
            .await
            .or_problem()?;
        Ok(Some(level.available()))
    }

    /// Fulfils lines (`orders:write`), at most once per `idempotencyKey` (the same key over
    /// REST and GraphQL is the same request).
    #[graphql(guard = "Field(\"Mutation.fulfilOrder\")")]
    async fn fulfil_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        lines: Vec<LineQuantity>,
        idempotency_key: String,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = order_id(&id)?;
        let b = body(&serde_json::json!({ "lines": lines }));
        let res = keel_http::routes::orders::fulfil_once(
            state,
            &viewer.0,
            idempotency_key,
            order,
            expected_version,
            &b,
        )
        .await
        .or_problem()?;
        Ok(Some(answered_order(state, viewer.0.tenant_id, res).await?))
    }

    /// Refunds an exact amount or lines (`orders:write`), at most once per `idempotencyKey`;
    /// never more than captured.
    #[graphql(guard = "Field(\"Mutation.refundOrder\")")]
    #[expect(clippy::too_many_arguments, reason = "each is a GraphQL argument")]
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        amount: Option<MinorUnits>,
        lines: Option<Vec<LineQuantity>>,
        reason: Option<String>,
        idempotency_key: String,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = order_id(&id)?;
        let mut v = serde_json::Map::new();
        if let Some(a) = amount {
            v.insert("amount".into(), a.0.into());
        }
        if let Some(l) = lines {
            v.insert("lines".into(), serde_json::to_value(l).unwrap_or_default());
        }
        if let Some(r) = reason {
            v.insert("reason".into(), r.into());
        }
        let b = body(&serde_json::Value::Object(v));
        let res = keel_http::routes::orders::refund_once(
            state,
            &viewer.0,
            idempotency_key,
            order,
            expected_version,
            &b,
        )
        .await
        .or_problem()?;
        Ok(Some(answered_order(state, viewer.0.tenant_id, res).await?))
    }

    /// Cancels an order not yet completely fulfilled (`orders:write`).
    #[graphql(guard = "Field(\"Mutation.cancelOrder\")")]
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = state
            .payments
            .cancel(
                viewer.0.tenant_id,
                order_id(&id)?,
                reason.as_deref().unwrap_or("cancelled by staff"),
                expected_version,
            )
            .await
            .or_problem()?;
        Ok(Some(Order(order)))
    }

    /// Deletes a product (`catalog:write`); with `expectedVersion`, only at that version.
    #[graphql(guard = "Field(\"Mutation.deleteProduct\")")]
    async fn delete_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<bool>> {
        let (state, viewer) = parts(ctx)?;
        let id: ProductId = parse_id(&id).ok_or_else(not_found)?;
        state
            .catalog
            .delete_product(viewer.0.tenant_id, id, expected_version)
            .await
            .or_problem()?;
        Ok(Some(true))
    }

    /// Adds a variant (`catalog:write`); `input` is REST's body of
    /// `POST /v1/admin/products/{id}/variants`. Answers the product.
    #[graphql(guard = "Field(\"Mutation.addVariant\")")]
    async fn add_variant(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        input: Json<serde_json::Value>,
    ) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let product: ProductId = parse_id(&product_id).ok_or_else(not_found)?;
        let input: VariantInput = serde_json::from_value(input.0)
            .map_err(|e| coded(ProblemKind::VALIDATION_FAILED, e.to_string()))?;
        let (p, _) = state
            .catalog
            .add_variant(viewer.0.tenant_id, product, &input)
            .await
            .or_problem()?;
        Ok(Some(Product(p)))
    }

    /// Changes a variant (`catalog:write`); `input` is REST's `PATCH` body; `expectedVersion`
    /// the product's version.
    #[graphql(guard = "Field(\"Mutation.updateVariant\")")]
    async fn update_variant(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        variant_id: ID,
        input: Json<serde_json::Value>,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let product: ProductId = parse_id(&product_id).ok_or_else(not_found)?;
        let variant: VariantId = parse_id(&variant_id).ok_or_else(not_found)?;
        let patch: VariantPatchInput = serde_json::from_value(input.0)
            .map_err(|e| coded(ProblemKind::VALIDATION_FAILED, e.to_string()))?;
        let p = state
            .catalog
            .update_variant(
                viewer.0.tenant_id,
                product,
                variant,
                &patch,
                expected_version,
            )
            .await
            .or_problem()?;
        Ok(Some(Product(p)))
    }

    /// Deletes a variant (`catalog:write`).
    #[graphql(guard = "Field(\"Mutation.deleteVariant\")")]
    async fn delete_variant(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        variant_id: ID,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Product>> {
        let (state, viewer) = parts(ctx)?;
        let product: ProductId = parse_id(&product_id).ok_or_else(not_found)?;
        let variant: VariantId = parse_id(&variant_id).ok_or_else(not_found)?;
        let p = state
            .catalog
            .delete_variant(viewer.0.tenant_id, product, variant, expected_version)
            .await
            .or_problem()?;
        Ok(Some(Product(p)))
    }

    /// Records a shipment of a fulfilled order (`orders:write`).
    #[graphql(guard = "Field(\"Mutation.shipOrder\")")]
    async fn ship_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        carrier: String,
        tracking_number: String,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = state
            .orders
            .ship(
                viewer.0.tenant_id,
                order_id(&id)?,
                &carrier,
                &tracking_number,
                expected_version,
            )
            .await
            .or_problem()?;
        Ok(Some(Order(order)))
    }

    /// Marks a shipped order delivered (`orders:write`).
    #[graphql(guard = "Field(\"Mutation.deliverOrder\")")]
    async fn deliver_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = state
            .orders
            .deliver(viewer.0.tenant_id, order_id(&id)?, expected_version)
            .await
            .or_problem()?;
        Ok(Some(Order(order)))
    }

    /// Records an offline payment of exactly the order's total (`orders:write`), at most once
    /// per `idempotencyKey` (the same key as REST's `POST /v1/admin/orders/{id}/payments`).
    #[graphql(guard = "Field(\"Mutation.recordPayment\")")]
    async fn record_payment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reference: Option<String>,
        idempotency_key: String,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let b = match reference {
            Some(r) => body(&serde_json::json!({ "reference": r })),
            None => Vec::new(),
        };
        let res = keel_http::routes::orders::record_payment_once(
            state,
            &viewer.0,
            idempotency_key,
            order_id(&id)?,
            &b,
        )
        .await
        .or_problem()?;
        Ok(Some(answered_order(state, viewer.0.tenant_id, res).await?))
    }

    /// Captures the payment authorised at the provider (`orders:write`).
    #[graphql(guard = "Field(\"Mutation.capturePayment\")")]
    async fn capture_payment(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let order = state
            .payments
            .capture(viewer.0.tenant_id, order_id(&id)?)
            .await
            .or_problem()?;
        Ok(Some(Order(order)))
    }

    /// Says this staff member is viewing or editing `resource` (`prod_…`, `ord_…`); repeat
    /// within the exact presence time to stay present.
    #[graphql(guard = "Field(\"Mutation.enterResource\")")]
    async fn enter_resource(
        &self,
        ctx: &Context<'_>,
        resource: ID,
        #[graphql(desc = "`viewing` or `editing`")] mode: Option<String>,
    ) -> async_graphql::Result<Option<bool>> {
        presence::enter(ctx, &resource, mode.as_deref().unwrap_or("viewing")).await?;
        Ok(Some(true))
    }

    /// Says this staff member left `resource`.
    #[graphql(guard = "Field(\"Mutation.leaveResource\")")]
    async fn leave_resource(
        &self,
        ctx: &Context<'_>,
        resource: ID,
    ) -> async_graphql::Result<Option<bool>> {
        presence::leave(ctx, &resource).await?;
        Ok(Some(true))
    }
}

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
