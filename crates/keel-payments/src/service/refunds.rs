//! Refunds through the provider: staff refunds and cancels, tasks retried with one key.

#[allow(clippy::wildcard_imports)]
use super::*;

impl PaymentsService {
    /// A staff refund. An order paid through a provider is refunded there: the refund is
    /// recorded `pending` with its task (and the request's answer) in one transaction, so two
    /// refunds can never together pass what was captured, then the provider is asked with the
    /// refund's own idempotency key; its answer settles the refund (`order.refunded`, or
    /// `refund.failed` giving the amount back), at once or by the retry job.
    pub async fn refund(
        &self,
        tenant: TenantId,
        id: OrderId,
        request: &RefundRequest,
        reason: Option<String>,
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
    ) -> Result<Order, PaymentsError> {
        if let Some(r) = &reason {
            check_reason(r)?;
        }
        let (order, tasks) = self
            .change_with_refunds(tenant, id, if_match, receipt, |order, now| {
                let r = order.refund(request, reason.clone(), now)?;
                Ok((Vec::new(), vec![r], Vec::new()))
            })
            .await?;
        self.run_refunds_now(&tasks).await;
        Ok(order)
    }

    /// Cancels an order: its held stock is released and what is left of its payment is
    /// refunded (through its provider, as [`Self::refund`]).
    pub async fn cancel(
        &self,
        tenant: TenantId,
        id: OrderId,
        reason: &str,
        if_match: Option<i64>,
    ) -> Result<Order, PaymentsError> {
        check_reason(reason)?;
        let (order, tasks) = self
            .change_with_refunds(tenant, id, if_match, None, |order, now| {
                let (moves, refund) = order.cancel(reason, now)?;
                let cancelled = event(
                    tenant,
                    "order.cancelled",
                    &serde_json::json!({"order_id": order.id, "reason": reason}),
                    now,
                )?;
                Ok((
                    moves.into_iter().map(StockChange::Release).collect(),
                    refund.into_iter().collect(),
                    vec![cancelled],
                ))
            })
            .await?;
        self.run_refunds_now(&tasks).await;
        Ok(order)
    }

    /// Tries the provider at once for refunds just recorded; what it cannot do now stays
    /// pending for the retry job (the staff's answer already says `pending`).
    pub(super) async fn run_refunds_now(&self, tasks: &[RefundTask]) {
        for task in tasks {
            if let Err(e) = self.run_refund(task).await {
                tracing::warn!(refund = %task.id, error = %e, "a refund at the provider is pending; the retry job tries again");
            }
        }
    }

    /// Changes an order and records its new refunds: a refund of a provider's payment
    /// becomes a task; a manual one is done (`order.refunded`) at once.
    pub(super) async fn change_with_refunds<F>(
        &self,
        tenant: TenantId,
        id: OrderId,
        if_match: Option<i64>,
        receipt: Option<&OrderReceipt>,
        mut change: F,
    ) -> Result<(Order, Vec<RefundTask>), PaymentsError>
    where
        F: FnMut(
            &mut Order,
            OffsetDateTime,
        ) -> Result<
            (
                Vec<StockChange>,
                Vec<keel_orders::order::Refund>,
                Vec<NewEvent>,
            ),
            PaymentsError,
        >,
    {
        for _ in 0..SAVE_ATTEMPTS {
            let mut order = self.order_store.get_order(tenant, id).await?;
            let read = order.version;
            if if_match.is_some_and(|v| v != read) {
                return Err(PaymentsError::PreconditionFailed);
            }
            let now = self.clock.now();
            let unpaid = order.status == OrderStatus::PendingPayment
                && order.payment_status == PaymentStatus::Unpaid;
            let (mut stock, refunds, mut events) = change(&mut order, now)?;
            stock.sort_by_key(StockChange::lock_key);
            let mut tasks = Vec::new();
            for r in &refunds {
                if r.status == RefundStatus::Pending {
                    let task = refund_task(&order, r, now)?;
                    events.push(event(tenant, "refund.requested", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency, "provider": task.provider.as_str()}), now)?);
                    tasks.push(task);
                } else {
                    events.push(event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": r.id, "amount": r.amount, "currency": order.currency}), now)?);
                }
            }
            let give_back =
                unpaid && order.status == OrderStatus::Cancelled && order.promotion_id.is_some();
            let effect = Effect {
                order: Some(OrderChange {
                    order: &order,
                    expected_version: read,
                    stock: &stock,
                    give_back,
                    receipt,
                }),
                refunds: &tasks,
                events: &events,
                ..Effect::none(tenant)
            };
            match self.payments.apply(&effect).await {
                Ok(_) => return Ok((order, tasks)),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) && if_match.is_none() => {}
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    return Err(PaymentsError::PreconditionFailed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// Asks the provider to make a pending refund (the same idempotency key every time) and
    /// settles it by the answer: done, refused (its amount goes back to the order), or not
    /// answered (tried again after `refund_retry`). Answers whether it settled.
    pub async fn run_refund(&self, task: &RefundTask) -> Result<bool, PaymentsError> {
        let tenant = task.tenant_id;
        let settings = self.payments.get_provider(tenant, task.provider).await?;
        let provider = self.provider(task.provider)?;
        let secret = self.secret_key(&settings)?;
        let key = format!("keel_refund_{}", task.id);
        let answer = match &task.provider_ref {
            // Made already (the provider answered `pending`): asked about by its id, never
            // made a second time (the provider forgets idempotency keys after a day).
            Some(id) => provider.retrieve_refund(&secret, id).await,
            None => {
                provider
                    .refund(&secret, &task.payment_ref, task.amount, &key)
                    .await
            }
        };
        let now = self.clock.now();
        let (succeeded, provider_ref, failure) = match answer {
            Ok(r) => match r.status {
                RefundOutcome::Succeeded => (true, Some(r.id), None),
                RefundOutcome::Failed => (false, Some(r.id), Some("refund_failed".to_owned())),
                RefundOutcome::Pending => {
                    self.retry_later(task, Some(r.id), now).await?;
                    return Ok(false);
                }
            },
            Err(ProviderError::Unavailable { .. }) => {
                self.retry_later(task, task.provider_ref.clone(), now)
                    .await?;
                return Ok(false);
            }
            // A refund made that its provider no longer finds: never made again, left to
            // staff (it stays pending, asked about on every retry).
            Err(ProviderError::Refused { code, .. }) if task.provider_ref.is_some() => {
                tracing::warn!(refund = %task.id, code, "the provider does not find a refund it made");
                self.retry_later(task, task.provider_ref.clone(), now)
                    .await?;
                return Ok(false);
            }
            Err(ProviderError::Refused { code, .. }) => (false, None, Some(code)),
        };
        for _ in 0..SAVE_ATTEMPTS {
            let mut order = self.order_store.get_order(tenant, task.order_id).await?;
            let read = order.version;
            if !order.settle_refund(task.id, succeeded, now)? {
                return Ok(true);
            }
            let mut done = task.clone();
            done.status = if succeeded {
                RefundTaskStatus::Succeeded
            } else {
                RefundTaskStatus::Failed
            };
            done.provider_ref.clone_from(&provider_ref);
            done.failure.clone_from(&failure);
            done.attempts += 1;
            done.updated_at = now;
            let payload = serde_json::json!({"order_id": order.id, "refund_id": task.id, "amount": task.amount.minor, "currency": task.amount.currency, "provider": task.provider.as_str(), "code": failure});
            let e = if succeeded {
                event(tenant, "order.refunded", &payload, now)?
            } else {
                event(tenant, "refund.failed", &payload, now)?
            };
            let effect = Effect {
                order: Some(OrderChange {
                    order: &order,
                    expected_version: read,
                    stock: &[],
                    give_back: false,
                    receipt: None,
                }),
                refunds: std::slice::from_ref(&done),
                events: std::slice::from_ref(&e),
                ..Effect::none(tenant)
            };
            match self.payments.apply(&effect).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// Leaves a refund pending, asked about again after `refund_retry`, with the provider's id
    /// of it once known.
    pub(super) async fn retry_later(
        &self,
        task: &RefundTask,
        provider_ref: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let later = RefundTask {
            provider_ref,
            attempts: task.attempts + 1,
            next_attempt_at: now + self.settings.refund_retry,
            updated_at: now,
            ..task.clone()
        };
        self.payments
            .apply(&Effect {
                refunds: std::slice::from_ref(&later),
                ..Effect::none(task.tenant_id)
            })
            .await?;
        Ok(())
    }

    /// One pass of the refund retry job over up to `batch` due refunds.
    pub async fn retry_refunds(&self, batch: i64) -> Result<PassReport, PaymentsError> {
        let now = self.clock.now();
        let due = self.payments.due_refunds(now, batch).await?;
        let mut report = PassReport::default();
        for task in due {
            report.refunds_tried += 1;
            match self.run_refund(&task).await {
                Ok(true) => report.refunds_settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(refund = %task.id, error = %e, "a refund at the provider could not be settled; tried again later");
                    // Not due again before its retry time, whatever failed.
                    self.retry_later(&task, task.provider_ref.clone(), now)
                        .await?;
                }
            }
        }
        Ok(report)
    }

    /// An order's refunds at the provider.
    pub async fn refunds_of_order(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<RefundTask>, PaymentsError> {
        Ok(self.payments.refunds_of_order(tenant, id).await?)
    }

    /// An order's payment sessions.
    pub async fn sessions_of_order(
        &self,
        tenant: TenantId,
        id: OrderId,
    ) -> Result<Vec<PaymentSession>, PaymentsError> {
        Ok(self
            .payments
            .sessions_of_order(tenant, id.as_uuid())
            .await?)
    }
}

/// A refund's or cancellation's reason: at most 500 characters, no control characters but
/// line breaks and tabs (PostgreSQL stores no NUL in text or `jsonb`).
fn check_reason(reason: &str) -> Result<(), PaymentsError> {
    if reason.chars().count() > 500 {
        return Err(invalid("/reason", "must be at most 500 characters"));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid("/reason", "must not contain control characters"));
    }
    Ok(())
}
