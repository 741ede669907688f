//! The objects both schemas show, over the domain types (no business rule here: fields read
//! what the services answered).

use async_graphql::{ComplexObject, Context, ID, Json, Object, SimpleObject};
use keel_catalog::domain::{Product as DomainProduct, Variant as DomainVariant};
use keel_kernel::event::RecordedEvent;
use keel_orders::order::Order as DomainOrder;

use crate::{
    access::Field,
    loaders::{Available, Customers, Loader},
    scalars::Money,
};

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A product with its variants (admin).
#[derive(Debug, Clone)]
pub struct Product(pub DomainProduct);

#[Object]
impl Product {
    #[graphql(complexity = 0)]
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    #[graphql(complexity = 0)]
    async fn title(&self) -> &str {
        &self.0.title
    }
    #[graphql(complexity = 0)]
    async fn handle(&self) -> &str {
        self.0.handle.as_str()
    }
    #[graphql(complexity = 0)]
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// `draft`, `active` or `archived`.
    #[graphql(complexity = 0)]
    async fn status(&self) -> &'static str {
        self.0.status.as_str()
    }
    /// Moves on every change of the product or a variant: the version a save must name.
    #[graphql(complexity = 0)]
    async fn version(&self) -> i64 {
        self.0.version
    }
    #[graphql(complexity = 0)]
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    #[graphql(complexity = 0)]
    async fn updated_at(&self) -> String {
        rfc3339(self.0.updated_at)
    }
    async fn variants(&self) -> Vec<Variant> {
        self.0.variants.iter().cloned().map(Variant).collect()
    }
}

/// A variant (admin).
#[derive(Debug, Clone)]
pub struct Variant(pub DomainVariant);

#[Object]
impl Variant {
    #[graphql(complexity = 0)]
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    #[graphql(complexity = 0)]
    async fn sku(&self) -> &str {
        self.0.sku.as_str()
    }
    #[graphql(complexity = 0)]
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    #[graphql(complexity = 0)]
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }
    async fn prices(&self) -> Vec<Money> {
        self.0.prices.iter().copied().map(Money::from).collect()
    }
    #[graphql(complexity = 0)]
    async fn version(&self) -> i64 {
        self.0.version
    }
    /// Units on hand less reserved, over every location (`catalog:read`); batched over the
    /// whole answer.
    #[graphql(guard = "Field(\"Variant.available\")")]
    async fn available(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
        let loader = ctx.data::<Loader<Available>>()?;
        Ok(Some(loader.load_one(self.0.id).await?.unwrap_or(0)))
    }
}

/// A postal address.
#[derive(Debug, Clone, SimpleObject)]
pub struct Address {
    #[graphql(complexity = 0)]
    pub name: String,
    #[graphql(complexity = 0)]
    pub line1: String,
    #[graphql(complexity = 0)]
    pub line2: Option<String>,
    #[graphql(complexity = 0)]
    pub city: String,
    #[graphql(complexity = 0)]
    pub region: Option<String>,
    #[graphql(complexity = 0)]
    pub postal_code: String,
    #[graphql(complexity = 0)]
    pub country: String,
    #[graphql(complexity = 0)]
    pub phone: Option<String>,
}

impl From<&keel_orders::cart::Address> for Address {
    fn from(a: &keel_orders::cart::Address) -> Self {
        Self {
            name: a.name.clone(),
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.to_string(),
            phone: a.phone.clone(),
        }
    }
}

/// An order line, with its exact amounts.
#[derive(Debug, Clone, SimpleObject)]
pub struct OrderLine {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub variant_id: ID,
    #[graphql(complexity = 0)]
    pub product_id: ID,
    #[graphql(complexity = 0)]
    pub sku: String,
    #[graphql(complexity = 0)]
    pub title: String,
    #[graphql(complexity = 0)]
    pub quantity: i64,
    pub unit_price: Money,
    pub subtotal: Money,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
    #[graphql(complexity = 0)]
    pub fulfilled: i64,
    #[graphql(complexity = 0)]
    pub refunded_quantity: i64,
    pub refunded: Money,
}

/// A payment of an order.
#[derive(Debug, Clone, SimpleObject)]
pub struct Payment {
    #[graphql(complexity = 0)]
    pub id: ID,
    pub amount: Money,
    #[graphql(complexity = 0)]
    pub status: String,
    #[graphql(complexity = 0)]
    pub provider: String,
    #[graphql(complexity = 0)]
    pub created_at: String,
}

/// A refund of an order.
#[derive(Debug, Clone, SimpleObject)]
pub struct Refund {
    #[graphql(complexity = 0)]
    pub id: ID,
    pub amount: Money,
    pub shipping: Money,
    /// `pending`, `succeeded` or `failed`.
    #[graphql(complexity = 0)]
    pub status: String,
    #[graphql(complexity = 0)]
    pub reason: Option<String>,
    #[graphql(complexity = 0)]
    pub created_at: String,
}

/// A fulfilled line and its quantity.
#[derive(Debug, Clone, SimpleObject)]
pub struct FulfilmentLine {
    #[graphql(complexity = 0)]
    pub line_id: ID,
    #[graphql(complexity = 0)]
    pub quantity: i64,
}

/// A fulfilment of an order.
#[derive(Debug, Clone, SimpleObject)]
pub struct Fulfilment {
    #[graphql(complexity = 0)]
    pub id: ID,
    pub lines: Vec<FulfilmentLine>,
    #[graphql(complexity = 0)]
    pub created_at: String,
}

/// An order's totals; they reconcile to the minor unit.
#[derive(Debug, Clone, SimpleObject)]
pub struct Totals {
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: Money,
    pub shipping_tax: Money,
    pub tax: Money,
    #[graphql(complexity = 0)]
    pub tax_inclusive: bool,
    pub total: Money,
}

/// A shop's customer account.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Customer {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(skip)]
    pub email_address: String,
    #[graphql(complexity = 0)]
    pub created_at: String,
}

#[ComplexObject]
impl Customer {
    /// Reached through an order's `customer`, which already needs `customers:read`.
    #[graphql(complexity = 0)]
    async fn email(&self) -> &str {
        &self.email_address
    }
}

/// An order with everything it holds.
#[derive(Debug, Clone)]
pub struct Order(pub DomainOrder);

impl Order {
    fn money(&self, amount: i64) -> Money {
        Money::new(amount, self.0.currency.code())
    }
}

#[Object]
impl Order {
    #[graphql(complexity = 0)]
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The shop's order number, `#1001`.
    #[graphql(complexity = 0)]
    async fn number(&self) -> String {
        format!("#{}", self.0.number)
    }
    #[graphql(complexity = 0)]
    async fn status(&self) -> &'static str {
        self.0.status.as_str()
    }
    #[graphql(complexity = 0)]
    async fn payment_status(&self) -> &'static str {
        self.0.payment_status.as_str()
    }
    #[graphql(complexity = 0)]
    async fn currency(&self) -> &'static str {
        self.0.currency.code()
    }
    /// `customers:read`.
    #[graphql(guard = "Field(\"Order.email\")", complexity = 0)]
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    /// `customers:read`.
    #[graphql(guard = "Field(\"Order.shippingAddress\")")]
    async fn shipping_address(&self) -> Option<Address> {
        Some(Address::from(&self.0.shipping_address))
    }
    /// The signed-in customer who placed it (`customers:read`); batched over the answer.
    #[graphql(guard = "Field(\"Order.customer\")")]
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        let Some(id) = self.0.customer_id else {
            return Ok(None);
        };
        ctx.data::<Loader<Customers>>()?.load_one(id).await
    }
    async fn lines(&self) -> Vec<OrderLine> {
        self.0
            .lines
            .iter()
            .map(|l| OrderLine {
                id: ID(l.id.to_string()),
                variant_id: ID(l.variant_id.to_string()),
                product_id: ID(l.product_id.to_string()),
                sku: l.sku.clone(),
                title: l.title.clone(),
                quantity: l.quantity,
                unit_price: self.money(l.unit_price),
                subtotal: self.money(l.amounts.subtotal),
                discount: self.money(l.amounts.discount),
                tax: self.money(l.amounts.tax),
                total: self.money(l.amounts.total),
                fulfilled: l.fulfilled,
                refunded_quantity: l.refunded_quantity,
                refunded: self.money(l.refunded_amount),
            })
            .collect()
    }
    async fn totals(&self) -> Totals {
        let t = &self.0.totals;
        Totals {
            subtotal: self.money(t.subtotal),
            discount: self.money(t.discount),
            shipping: self.money(t.shipping),
            shipping_tax: self.money(t.shipping_tax),
            tax: self.money(t.tax),
            tax_inclusive: t.tax_inclusive,
            total: self.money(t.total),
        }
    }
    async fn captured(&self) -> Money {
        self.money(self.0.captured)
    }
    async fn refunded(&self) -> Money {
        self.money(self.0.refunded)
    }
    async fn payments(&self) -> Vec<Payment> {
        self.0
            .payments
            .iter()
            .map(|p| Payment {
                id: ID(p.id.to_string()),
                amount: self.money(p.amount),
                status: p.status.clone(),
                provider: p.provider.clone(),
                created_at: rfc3339(p.created_at),
            })
            .collect()
    }
    async fn refunds(&self) -> Vec<Refund> {
        self.0
            .refunds
            .iter()
            .map(|r| Refund {
                id: ID(r.id.to_string()),
                amount: self.money(r.amount),
                shipping: self.money(r.shipping),
                status: r.status.as_str().to_owned(),
                reason: r.reason.clone(),
                created_at: rfc3339(r.created_at),
            })
            .collect()
    }
    async fn fulfilments(&self) -> Vec<Fulfilment> {
        self.0
            .fulfilments
            .iter()
            .map(|f| Fulfilment {
                id: ID(f.id.to_string()),
                lines: f
                    .lines
                    .iter()
                    .map(|l| FulfilmentLine {
                        line_id: ID(l.line_id.to_string()),
                        quantity: l.quantity,
                    })
                    .collect(),
                created_at: rfc3339(f.created_at),
            })
            .collect()
    }
    #[graphql(complexity = 0)]
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    #[graphql(complexity = 0)]
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    #[graphql(complexity = 0)]
    async fn updated_at(&self) -> String {
        rfc3339(self.0.updated_at)
    }
    #[graphql(complexity = 0)]
    async fn version(&self) -> i64 {
        self.0.version
    }
}

/// A committed event, as the event log shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct Event {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0, name = "type")]
    pub kind: String,
    #[graphql(complexity = 0)]
    pub occurred_at: String,
    #[graphql(complexity = 0)]
    pub data: Json<serde_json::Value>,
}

impl From<&RecordedEvent> for Event {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            id: ID(e.id.to_string()),
            kind: e.event_type.clone(),
            occurred_at: rfc3339(e.occurred_at),
            data: Json(e.payload.clone()),
        }
    }
}

/// A stock location.
#[derive(Debug, Clone, SimpleObject)]
pub struct StockLocation {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub name: String,
    #[graphql(complexity = 0)]
    pub version: i64,
}

/// A variant's units at a location.
#[derive(Debug, Clone, SimpleObject)]
pub struct InventoryLevel {
    #[graphql(complexity = 0)]
    pub variant_id: ID,
    #[graphql(complexity = 0)]
    pub location_id: ID,
    #[graphql(complexity = 0)]
    pub on_hand: i64,
    #[graphql(complexity = 0)]
    pub reserved: i64,
    #[graphql(complexity = 0)]
    pub available: i64,
}

/// A webhook endpoint (its secrets never).
#[derive(Debug, Clone, SimpleObject)]
pub struct WebhookEndpoint {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub url: String,
    #[graphql(complexity = 0)]
    pub description: String,
    /// Exact types or prefixes with `*`; empty: every event.
    #[graphql(complexity = 0)]
    pub event_types: Vec<String>,
    #[graphql(complexity = 0)]
    pub enabled: bool,
    #[graphql(complexity = 0)]
    pub disabled_reason: Option<String>,
    #[graphql(complexity = 0)]
    pub created_at: String,
}

/// A webhook message: one event for one endpoint (its body never).
#[derive(Debug, Clone, SimpleObject)]
pub struct WebhookMessage {
    #[graphql(complexity = 0)]
    pub id: ID,
    #[graphql(complexity = 0)]
    pub event_id: ID,
    #[graphql(complexity = 0)]
    pub event_type: String,
    /// `pending`, `delivering`, `delivered` or `failed`.
    #[graphql(complexity = 0)]
    pub status: String,
    #[graphql(complexity = 0)]
    pub attempts: i64,
    #[graphql(complexity = 0)]
    pub next_attempt_at: String,
    #[graphql(complexity = 0)]
    pub created_at: String,
}
