//! The admin schema's mutations: REST's writes, through the same services.

use async_graphql::{Context, ID, InputObject, Json, Object};
use keel_catalog::{
    domain::{
        ProductId, ProductInput, ProductPatchInput, VariantId, VariantInput, VariantPatchInput,
    },
    service::AdjustRequest,
};
use keel_http::{AppState, auth::AdminActor, problem::ProblemKind};
use keel_orders::order::OrderId;

use super::{parse_id, parts};
use crate::{
    access::Field,
    errors::{OrProblem as _, coded, not_found},
    scalars::MinorUnits,
    subscriptions::presence,
    types::{Order, Product},
};

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
