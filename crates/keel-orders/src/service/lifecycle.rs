//! Staff operations on orders (list, read, fulfil, ship, deliver; cancels and refunds move
//! money, so `keel-payments` runs them) and the retention jobs (idle carts, unpaid orders).

#[allow(clippy::wildcard_imports)]
use super::*;

impl OrdersService {
    pub async fn list_orders(
        &self,
        tenant: TenantId,
        filter: &OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, OrdersError> {
        Ok(self.orders.list_orders(tenant, filter, page).await?)
    }

    pub async fn order_detail(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<OrderDetail, OrdersError> {
        let order = self.orders.get_order(tenant, id).await?;
        let timeline = self.orders.order_events(tenant, id).await?;
        Ok(OrderDetail { order, timeline })
    }

    pub async fn fulfil(
        &self,
        tenant: TenantId,
        id: OrderId,
        lines: &[(LineId, i64)],
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, OrdersError> {
        self.transition(tenant, id, if_match, None, receipt, |order, now| {
            let moves = order.fulfil(lines, now)?;
            let kind = if order.status == OrderStatus::Fulfilled {
                "order.fulfilled"
            } else {
                "order.partially_fulfilled"
            };
            let f = order.fulfilments.last().expect("just fulfilled");
            let e = event(
                tenant,
                kind,
                &serde_json::json!({"order_id": order.id, "fulfilment_id": f.id, "lines": f.lines}),
                now,
            )?;
            Ok((
                moves.into_iter().map(StockChange::Commit).collect(),
                vec![e],
            ))
        })
        .await
    }

    pub async fn ship(
        &self,
        tenant: TenantId,
        id: OrderId,
        carrier: &str,
        tracking: &str,
        if_match: Option<i64>,
    ) -> Result<Order, OrdersError> {
        let mut issues = Issues::default();
        for (pointer, v) in [("/carrier", carrier), ("/tracking_number", tracking)] {
            if v.trim().is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
                issues.push(pointer, "must be 1 to 100 characters");
            }
        }
        issues.finish(()).map_err(OrdersError::Invalid)?;
        self.transition(tenant, id, if_match, None, None, |order, now| {
            let s = order.ship(carrier.trim().to_owned(), tracking.trim().to_owned(), now)?.clone();
            let e = event(tenant, "order.shipped", &serde_json::json!({"order_id": order.id, "shipment_id": s.id, "carrier": s.carrier, "tracking_number": s.tracking_number}), now)?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    pub async fn deliver(
        &self,
        tenant: TenantId,
        id: OrderId,
        if_match: Option<i64>,
    ) -> Result<Order, OrdersError> {
        self.transition(tenant, id, if_match, None, None, |order, now| {
            order.deliver(now)?;
            let e = event(
                tenant,
                "order.delivered",
                &serde_json::json!({"order_id": order.id}),
                now,
            )?;
            Ok((Vec::new(), vec![e]))
        })
        .await
    }

    /// Retention of carts: deletes up to `batch` carts idle for the configured time (they
    /// already answer 404). Answers how many went.
    pub async fn prune_carts(&self, batch: i64) -> Result<u64, OrdersError> {
        let before = self.clock.now() - self.settings.cart_idle_ttl;
        Ok(self.carts.prune_carts(before, batch).await?)
    }

    /// The scheduled job: cancels unpaid orders whose time ran out and releases their stock,
    /// at most `batch` per call. Answers how many it cancelled.
    pub async fn expire_unpaid(&self, batch: i64) -> Result<u64, OrdersError> {
        let now = self.clock.now();
        let due = self.orders.expired_unpaid(now, batch).await?;
        let mut cancelled = 0;
        for (tenant, id) in due {
            let outcome = self
                .transition(tenant, id, None, None, None, |order, now| {
                    let moves = order.expire(now)?;
                    let e = event(
                        tenant,
                        "order.cancelled",
                        &serde_json::json!({"order_id": order.id, "reason": "expired unpaid"}),
                        now,
                    )?;
                    Ok((
                        moves.into_iter().map(StockChange::Release).collect(),
                        vec![e],
                    ))
                })
                .await;
            match outcome {
                Ok(_) => cancelled += 1,
                // Paid or cancelled meanwhile: nothing to do.
                Err(OrdersError::Order(_) | OrdersError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if cancelled > 0 {
            tracing::info!(cancelled, "unpaid orders expired");
        }
        Ok(cancelled)
    }
}
