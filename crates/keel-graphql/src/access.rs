//! Field-level security (ADR 0040): one table says which field needs what, one guard reads
//! it. A guarded field is nullable: a principal without what it needs gets `null` there and a
//! `forbidden` error at the field's path, and the rest of the answer.

use async_graphql::{Context, Guard};
use keel_http::auth::AdminPrincipal;
use keel_identity::domain::access::Permission::{
    self, AuditRead, CatalogRead, CatalogWrite, CustomersRead, OrdersRead, OrdersWrite,
    WebhooksManage,
};
use keel_kernel::TenantId;
use keel_orders::service::ShopperAccess;

use crate::errors::forbidden;

/// What a field needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The admin caller's role or key scopes allow this permission (the REST table).
    Permission(Permission),
    /// Storefront stock counts: only where the shop shows them (`show_stock_counts`).
    ShowStockCounts,
}

/// Every guarded field, `Type.field`, and what it needs. Fields not listed need only what
/// their schema's endpoint needs (an admin credential; a publishable key).
pub static FIELDS: &[(&str, Need)] = &[
    // Admin reads, as REST's routes.
    ("Query.products", Need::Permission(CatalogRead)),
    ("Query.product", Need::Permission(CatalogRead)),
    ("Query.stockLocations", Need::Permission(CatalogRead)),
    ("Query.inventoryLevels", Need::Permission(CatalogRead)),
    ("Query.orders", Need::Permission(OrdersRead)),
    ("Query.order", Need::Permission(OrdersRead)),
    ("Query.events", Need::Permission(AuditRead)),
    ("Query.webhookEndpoints", Need::Permission(WebhooksManage)),
    ("Query.webhookMessages", Need::Permission(WebhooksManage)),
    // Personal data inside what a role may otherwise read.
    ("Order.email", Need::Permission(CustomersRead)),
    ("Order.shippingAddress", Need::Permission(CustomersRead)),
    ("Order.customer", Need::Permission(CustomersRead)),
    // Stock counts.
    ("Variant.available", Need::Permission(CatalogRead)),
    ("StoreVariant.available", Need::ShowStockCounts),
    // Admin writes, as REST's routes.
    ("Mutation.createProduct", Need::Permission(CatalogWrite)),
    ("Mutation.updateProduct", Need::Permission(CatalogWrite)),
    ("Mutation.adjustInventory", Need::Permission(CatalogWrite)),
    ("Mutation.fulfilOrder", Need::Permission(OrdersWrite)),
    ("Mutation.refundOrder", Need::Permission(OrdersWrite)),
    ("Mutation.cancelOrder", Need::Permission(OrdersWrite)),
    ("Mutation.deleteProduct", Need::Permission(CatalogWrite)),
    ("Mutation.addVariant", Need::Permission(CatalogWrite)),
    ("Mutation.updateVariant", Need::Permission(CatalogWrite)),
    ("Mutation.deleteVariant", Need::Permission(CatalogWrite)),
    ("Mutation.shipOrder", Need::Permission(OrdersWrite)),
    ("Mutation.deliverOrder", Need::Permission(OrdersWrite)),
    ("Mutation.recordPayment", Need::Permission(OrdersWrite)),
    ("Mutation.capturePayment", Need::Permission(OrdersWrite)),
    ("Mutation.enterResource", Need::Permission(CatalogRead)),
    ("Mutation.leaveResource", Need::Permission(CatalogRead)),
    // Subscriptions: what reading the same data needs.
    ("Subscription.orderEvents", Need::Permission(OrdersRead)),
    (
        "Subscription.inventoryChanged",
        Need::Permission(CatalogRead),
    ),
    ("Subscription.productChanged", Need::Permission(CatalogRead)),
    (
        "Subscription.webhookDeliveryFailed",
        Need::Permission(WebhooksManage),
    ),
    ("Subscription.presence", Need::Permission(CatalogRead)),
];

/// What `field` needs, from [`FIELDS`].
pub fn need_of(field: &str) -> Option<Need> {
    FIELDS.iter().find(|(f, _)| *f == field).map(|(_, n)| *n)
}

/// The admin schema's caller.
#[derive(Debug, Clone)]
pub struct AdminViewer(pub AdminPrincipal);

/// The storefront schema's caller: the shop of its publishable key, the shopper's customer
/// token or cart secret, and whether the shop shows stock counts.
#[derive(Debug, Clone)]
pub struct StoreViewer {
    pub tenant: TenantId,
    pub access: ShopperAccess,
    /// Read once, when a field first needs it (a request that needs none reads nothing).
    show_stock_counts: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl StoreViewer {
    pub fn new(shopper: &keel_http::auth::Shopper) -> Self {
        Self {
            tenant: shopper.tenant_id,
            access: shopper.access.clone(),
            show_stock_counts: std::sync::Arc::default(),
        }
    }

    async fn shows_stock_counts(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let state = ctx.data::<keel_http::AppState>()?;
        self.show_stock_counts
            .get_or_try_init(|| async {
                state
                    .catalog
                    .storefront_settings(self.tenant)
                    .await
                    .map(|s| s.show_stock_counts)
                    .map_err(|e| crate::errors::from_problem(&e.into()))
            })
            .await
            .copied()
    }
}

/// The one guard: `#[graphql(guard = "Field(\"Order.email\")")]`.
#[derive(Debug, Clone, Copy)]
pub struct Field(pub &'static str);

impl Field {
    /// Whether the request's caller has what `self` needs (a field missing from the table
    /// is refused: it was meant to be guarded).
    pub fn allows(self, ctx: &Context<'_>) -> bool {
        match need_of(self.0) {
            Some(Need::Permission(p)) => match ctx.data_opt::<AdminViewer>() {
                Some(v) => v.0.can(p),
                // The storefront reaches only the shopper's own orders: their own details.
                None => self.0.starts_with("Order.") && ctx.data_opt::<StoreViewer>().is_some(),
            },
            // Checked by the guard, which may read the shop's setting.
            Some(Need::ShowStockCounts) | None => false,
        }
    }
}

impl Guard for Field {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        if need_of(self.0) == Some(Need::ShowStockCounts)
            && let Some(v) = ctx.data_opt::<StoreViewer>()
            && v.shows_stock_counts(ctx).await?
        {
            return Ok(());
        }
        if self.allows(ctx) {
            return Ok(());
        }
        Err(match need_of(self.0) {
            Some(Need::Permission(p)) => forbidden(&format!("`{p}` (needed for `{}`)", self.0)),
            _ => forbidden(&format!("`{}` (the shop does not show it)", self.0)),
        })
    }
}
