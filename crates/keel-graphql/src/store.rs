//! The storefront schema (`/v1/store/graphql`): a publishable key, and the shopper's
//! customer token or cart secret (the same headers as REST); introspection off unless the
//! operator allows it.

use async_graphql::{
    ComplexObject, Context, ID, InputObject, Object, SimpleObject, Subscription,
    connection::{Connection, Edge},
};
use futures_util::Stream;
use keel_catalog::{
    ports::{ProductCursor, ProductSort},
    service::StoreProduct as DomainStoreProduct,
};
use keel_http::{AppState, auth::Shopper, problem::ProblemKind};
use keel_orders::{
    cart::{AddressInput as DomainAddressInput, CartId},
    order::OrderId,
    service::PricedCart,
};

use crate::{
    access::{Field, StoreViewer},
    admin::{found, limit, page_cost},
    errors::{OrProblem as _, coded, not_found},
    scalars::Money,
    subscriptions,
    types::{Event, Order},
};

fn parts<'c>(ctx: &Context<'c>) -> async_graphql::Result<(&'c AppState, &'c StoreViewer)> {
    Ok((ctx.data::<AppState>()?, ctx.data::<StoreViewer>()?))
}

fn currency(code: &str) -> async_graphql::Result<keel_kernel::money::Currency> {
    keel_kernel::money::Currency::parse(code).map_err(|_| {
        coded(
            ProblemKind::BAD_REQUEST,
            "`currency` must be an ISO 4217 code such as `USD`.",
        )
    })
}

/// A variant as shoppers see it: its price in the asked currency.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct StoreVariant {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub sku: String,
    #[graphql(complexity = 0)]
    pub title: Option<String>,
    /// `null` when the variant has no price in the asked currency (not for sale in it).
    pub price: Option<Money>,
    #[graphql(complexity = 0)]
    pub in_stock: bool,
    #[graphql(skip)]
    pub units: i64,
}

#[ComplexObject]
impl StoreVariant {
    /// Units available, where the shop shows stock counts (`show_stock_counts`).
    #[graphql(guard = "Field(\"StoreVariant.available\")")]
    async fn available(&self) -> Option<i64> {
        Some(self.units)
    }
}

/// An active product as shoppers see it.
#[derive(Debug, Clone, SimpleObject)]
pub struct StoreProduct {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub title: String,
    #[graphql(complexity = 0)]
    pub handle: String,
    #[graphql(complexity = 0)]
    pub description: String,
    pub variants: Vec<StoreVariant>,
}

impl From<DomainStoreProduct> for StoreProduct {
    fn from(s: DomainStoreProduct) -> Self {
        let variants = s
            .product
            .variants
            .iter()
            .zip(s.available.iter().copied())
            .map(|(v, units)| StoreVariant {
                id: ID(v.id.to_string()),
                sku: v.sku.as_str().to_owned(),
                title: v.title.clone(),
                price: v.price_in(s.currency).map(Money::from),
                in_stock: units > 0,
                units,
            })
            .collect();
        Self {
            id: ID(s.product.id.to_string()),
            title: s.product.title,
            handle: s.product.handle.as_str().to_owned(),
            description: s.product.description,
            variants,
        }
    }
}

/// A cart line.
#[derive(Debug, Clone, SimpleObject)]
pub struct CartLine {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub variant_id: ID,
    #[graphql(complexity = 0)]
    pub sku: String,
    #[graphql(complexity = 0)]
    pub title: String,
    #[graphql(complexity = 0)]
    pub quantity: i64,
    pub unit_price: Money,
}

/// A cart with its exact totals.
#[derive(Debug, Clone, SimpleObject)]
pub struct Cart {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub currency: String,
    /// `open`, or `converted` once checked out.
    #[graphql(complexity = 0)]
    pub status: String,
    pub lines: Vec<CartLine>,
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: Money,
    pub tax: Money,
    pub total: Money,
    #[graphql(complexity = 0)]
    pub order_id: Option<ID>,
    #[graphql(complexity = 0)]
    pub version: i64,
    /// Only when the cart was just created: the secret that reaches it (`Keel-Cart-Secret`).
    #[graphql(complexity = 0)]
    #[graphql(name = "cartSecret")]
    pub secret: Option<String>,
}

fn cart(p: &PricedCart, secret: Option<String>) -> Cart {
    let code = p.cart.currency.code();
    let m = |a: i64| Money::new(a, code);
    Cart {
        id: ID(p.cart.id.to_string()),
        currency: code.to_owned(),
        status: if p.cart.order_id.is_some() {
            "converted"
        } else {
            "open"
        }
        .to_owned(),
        lines: p
            .cart
            .lines
            .iter()
            .map(|l| CartLine {
                id: ID(l.id.to_string()),
                variant_id: ID(l.variant_id.to_string()),
                sku: l.sku.clone(),
                title: l.title.clone(),
                quantity: l.quantity,
                unit_price: m(l.unit_price),
            })
            .collect(),
        subtotal: m(p.breakdown.subtotal),
        discount: m(p.breakdown.discount),
        shipping: m(p.breakdown.shipping),
        tax: m(p.breakdown.tax),
        total: m(p.breakdown.total),
        order_id: p.cart.order_id.map(|o| ID(o.to_string())),
        version: p.cart.version,
        secret,
    }
}

fn parse_cart(id: &ID) -> async_graphql::Result<CartId> {
    id.parse().map_err(|_| not_found())
}

/// What a cart edit needs: the orders service, the shop, the cart and the shopper's access.
fn cart_target<'c>(
    ctx: &Context<'c>,
    cart_id: &ID,
) -> async_graphql::Result<(
    &'c keel_orders::service::OrdersService,
    keel_kernel::TenantId,
    CartId,
    &'c keel_orders::service::ShopperAccess,
)> {
    let (state, viewer) = parts(ctx)?;
    Ok((
        &state.orders,
        viewer.tenant,
        parse_cart(cart_id)?,
        &viewer.access,
    ))
}

/// The cart an edit answered.
fn answered(
    edited: Result<PricedCart, keel_orders::service::OrdersError>,
) -> async_graphql::Result<Cart> {
    Ok(cart(&edited.or_problem()?, None))
}

fn parse_line(id: &ID) -> async_graphql::Result<keel_orders::cart::LineId> {
    id.parse().map_err(|_| {
        coded(
            ProblemKind::VALIDATION_FAILED,
            "`lineId` must be a cart line id (`item_…`).",
        )
    })
}

#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// Active products priced in `currency`, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        currency: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, StoreProduct>> {
        let (state, viewer) = parts(ctx)?;
        let after = after
            .as_deref()
            .map(|a| {
                ProductCursor::decode(a, ProductSort::Created).map_err(|_| {
                    coded(
                        ProblemKind::BAD_REQUEST,
                        "`after` is not a cursor this API issued.",
                    )
                })
            })
            .transpose()?;
        let page = state
            .catalog
            .store_products(
                viewer.tenant,
                self::currency(&currency)?,
                limit(first)?,
                after.as_ref(),
            )
            .await
            .or_problem()?;
        let mut c = Connection::new(after.is_some(), page.next_cursor.is_some());
        c.edges.extend(page.items.into_iter().map(|p| {
            let at = ProductCursor {
                after_id: p.product.id.as_uuid(),
                after_title: None,
            };
            Edge::new(at.encode(), StoreProduct::from(p))
        }));
        Ok(c)
    }

    /// One active product by id (`prod_…`) or handle; others are `null`.
    async fn product(
        &self,
        ctx: &Context<'_>,
        id_or_handle: String,
        currency: String,
    ) -> async_graphql::Result<Option<StoreProduct>> {
        let (state, viewer) = parts(ctx)?;
        let product = state
            .catalog
            .store_product_by_key(viewer.tenant, &id_or_handle, self::currency(&currency)?)
            .await;
        Ok(found(product)?.map(StoreProduct::from))
    }

    /// The shopper's cart (its customer's token, or `Keel-Cart-Secret`); others are `null`.
    async fn cart(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Cart>> {
        let (state, viewer) = parts(ctx)?;
        let Ok(id) = id.parse::<CartId>() else {
            return Ok(None);
        };
        let read = state
            .orders
            .get_cart(viewer.tenant, id, &viewer.access)
            .await;
        Ok(found(read)?.map(|p| cart(&p, None)))
    }

    /// One of the shopper's orders; anyone else's is `null`.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let (state, viewer) = parts(ctx)?;
        let Ok(id) = id.parse::<OrderId>() else {
            return Ok(None);
        };
        let read = state
            .orders
            .shopper_order(viewer.tenant, id, &viewer.access)
            .await;
        Ok(found(read)?.map(Order))
    }
}

/// A postal address as sent (REST's shape).
#[derive(Debug, InputObject)]
pub struct AddressInput {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `US`.
    pub country: String,
    pub phone: Option<String>,
}

#[derive(Debug)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Opens a cart; a guest's answer carries its `cartSecret`, shown once.
    async fn create_cart(
        &self,
        ctx: &Context<'_>,
        currency: String,
        email: Option<String>,
    ) -> async_graphql::Result<Cart> {
        let (state, viewer) = parts(ctx)?;
        let (priced, secret) = state
            .orders
            .create_cart(
                viewer.tenant,
                viewer.access.customer,
                &currency,
                email.as_deref(),
            )
            .await
            .or_problem()?;
        Ok(cart(&priced, secret))
    }

    /// Adds units of a variant (priced now, in the cart's currency).
    async fn add_cart_item(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        variant_id: String,
        quantity: i64,
    ) -> async_graphql::Result<Cart> {
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(
            orders
                .add_item(tenant, id, access, &variant_id, quantity)
                .await,
        )
    }

    /// Sets the shipping address (validated as REST's).
    async fn set_shipping_address(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        address: AddressInput,
    ) -> async_graphql::Result<Cart> {
        let (state, viewer) = parts(ctx)?;
        let input = DomainAddressInput {
            name: address.name,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            region: address.region,
            postal_code: address.postal_code,
            country: address.country,
            phone: address.phone,
        };
        let priced = state
            .orders
            .set_address(viewer.tenant, parse_cart(&cart_id)?, &viewer.access, &input)
            .await
            .or_problem()?;
        Ok(cart(&priced, None))
    }

    /// Chooses a shipping option for the cart's address.
    async fn set_shipping_option(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        shipping_option_id: String,
    ) -> async_graphql::Result<Cart> {
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(
            orders
                .set_shipping_option(tenant, id, access, &shipping_option_id)
                .await,
        )
    }

    /// Sets a line's quantity.
    async fn set_cart_item_quantity(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        line_id: ID,
        quantity: i64,
    ) -> async_graphql::Result<Cart> {
        let line = parse_line(&line_id)?;
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(
            orders
                .set_item_quantity(tenant, id, access, line, quantity)
                .await,
        )
    }

    /// Removes a line.
    async fn remove_cart_item(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        line_id: ID,
    ) -> async_graphql::Result<Cart> {
        let line = parse_line(&line_id)?;
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(orders.remove_item(tenant, id, access, line).await)
    }

    /// Applies a promotion code.
    async fn apply_promotion(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        code: String,
    ) -> async_graphql::Result<Cart> {
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(orders.apply_promotion(tenant, id, access, &code).await)
    }

    /// Removes a promotion code.
    async fn remove_promotion(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        code: String,
    ) -> async_graphql::Result<Cart> {
        let (orders, tenant, id, access) = cart_target(ctx, &cart_id)?;
        answered(orders.remove_promotion(tenant, id, access, &code).await)
    }

    /// Places the order, at most once per `idempotencyKey` (the same key over REST and
    /// GraphQL is the same checkout).
    async fn checkout(
        &self,
        ctx: &Context<'_>,
        cart_id: ID,
        idempotency_key: String,
    ) -> async_graphql::Result<Order> {
        let state = ctx.data::<AppState>()?;
        let shopper = ctx.data::<Shopper>()?;
        let res = keel_http::routes::orders::checkout_once(
            state,
            shopper,
            idempotency_key,
            parse_cart(&cart_id)?,
            b"",
        )
        .await
        .or_problem()?;
        let id = crate::admin::answered_order_id(res).await?;
        let order = state
            .orders
            .shopper_order(shopper.tenant_id, id, &shopper.access)
            .await
            .or_problem()?;
        Ok(Order(order))
    }
}

/// An order's events as they commit: what happened and when (the order itself is one
/// `order` query away).
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderUpdate {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0, name = "type")]
    pub event_type: String,
    #[graphql(complexity = 0)]
    pub occurred_at: String,
    #[graphql(complexity = 0)]
    pub order_id: ID,
}

#[derive(Debug)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The shopper's own order as it progresses (`order.*`, `payment.*`, `refund.*`).
    async fn order_status(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = OrderUpdate>> {
        let (state, viewer) = parts(ctx)?;
        let id: OrderId = order_id.parse().map_err(|_| not_found())?;
        // Another shopper's order, or another shop's: not found, as REST.
        state
            .orders
            .shopper_order(viewer.tenant, id, &viewer.access)
            .await
            .or_problem()?;
        let key = id.to_string();
        let events = subscriptions::stream(ctx, viewer.tenant, move |e| {
            ["order.", "payment.", "refund."]
                .iter()
                .any(|p| e.event_type.starts_with(p))
                && e.payload["order_id"].as_str() == Some(key.as_str())
        })?;
        Ok(futures_util::StreamExt::map(events, move |e: Event| {
            OrderUpdate {
                id: e.id,
                event_type: e.kind,
                occurred_at: e.occurred_at,
                order_id: ID(id.to_string()),
            }
        }))
    }
}
