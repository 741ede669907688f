//! The storefront's payment session: one per order, for exactly its total.

#[allow(clippy::wildcard_imports)]
use super::*;

impl PaymentsService {
    /// The order's payment session with the shop's provider, for the shopper's browser: made
    /// once per order (the provider's idempotency key is the order's id, so a retry after a
    /// lost answer finds the same payment), for exactly the order's total.
    pub async fn open_session(
        &self,
        tenant: TenantId,
        order_id: OrderId,
        access: &ShopperAccess,
    ) -> Result<SessionView, PaymentsError> {
        let order = self.orders.shopper_order(tenant, order_id, access).await?;
        let now = self.clock.now();
        if order.status != OrderStatus::PendingPayment
            || order.payment_status != PaymentStatus::Unpaid
            || now >= order.expires_at
        {
            return Err(OrderError::NotPayable(order.status.as_str()).into());
        }
        let kind = ProviderKind::Stripe;
        let settings = self.enabled(tenant, kind).await?;
        let provider = self.provider(kind)?;
        let secret = self.secret_key(&settings)?;
        let sessions = self
            .payments
            .sessions_of_order(tenant, order.id.as_uuid())
            .await?;
        if let Some(open) = sessions
            .iter()
            .find(|s| s.provider == kind && !s.status.is_final())
        {
            match provider.retrieve(&secret, &open.provider_ref).await {
                Ok(at_provider) => {
                    return Ok(SessionView {
                        session: open.clone(),
                        client_secret: at_provider.client_secret,
                    });
                }
                // The provider no longer knows the payment (the shop changed accounts or
                // keys): it can never be paid, so the session closes here and a new one is
                // made, rather than leaving the order unpayable.
                Err(ProviderError::Refused { .. }) => {
                    self.close_session(open, SessionStatus::Canceled, now)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let amount = Amount {
            minor: order.totals.total,
            currency: order.currency,
        };
        // One key per session of the order (its generation): a retry of this creation gets
        // the same payment, and a session closed before is never answered again.
        let key = format!("keel_session_{}_{}", order.id, sessions.len());
        let order_ref = order.id.to_string();
        let tenant_ref = tenant.to_string();
        let created = provider
            .create(
                &secret,
                &NewPayment {
                    idempotency_key: &key,
                    amount,
                    capture: settings.capture,
                    order_reference: &order_ref,
                    tenant_reference: &tenant_ref,
                },
            )
            .await?;
        if created.amount != amount {
            // The provider must charge exactly what was asked; anything else is not this
            // order's payment, and nothing is recorded.
            return Err(PaymentsError::Internal(
                "the provider created a payment of another amount".into(),
            ));
        }
        let session = PaymentSession {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            order_id: order.id.as_uuid(),
            provider: kind,
            provider_ref: created.id.clone(),
            amount,
            status: SessionStatus::Open,
            next_check_at: now + self.settings.reconcile_after,
            created_at: now,
            updated_at: now,
        };
        let opened = event(
            tenant,
            "payment.session_created",
            &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": kind.as_str(), "amount": amount.minor, "currency": amount.currency}),
            now,
        )?;
        match self
            .payments
            .create_session(&session, std::slice::from_ref(&opened))
            .await
        {
            Ok(()) => Ok(SessionView {
                session,
                client_secret: created.client_secret,
            }),
            Err(StoreError::Conflict { .. }) => {
                self.lost_race(tenant, order.id, provider, &secret, created)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A concurrent request for the same order stored its session first (with Stripe, the
    /// same payment: same key). A provider that ignores keys made a second one, which is
    /// cancelled: the order has one session, and the shopper confirms that one.
    pub(super) async fn lost_race(
        &self,
        tenant: TenantId,
        order: OrderId,
        provider: &Arc<dyn PaymentProvider>,
        secret: &ProviderSecret,
        created: crate::ports::ProviderPayment,
    ) -> Result<SessionView, PaymentsError> {
        let stored = self
            .payments
            .open_session_of(tenant, order.as_uuid(), provider.kind())
            .await?
            .ok_or(PaymentsError::Contended)?;
        if stored.provider_ref == created.id {
            return Ok(SessionView {
                session: stored,
                client_secret: created.client_secret,
            });
        }
        let cancel_key = format!("keel_cancel_{}", created.id);
        if let Err(e) = provider.cancel(secret, &created.id, &cancel_key).await {
            tracing::warn!(error = %e, "a second payment made for one order could not be cancelled");
        }
        let at_provider = provider.retrieve(secret, &stored.provider_ref).await?;
        Ok(SessionView {
            session: stored,
            client_secret: at_provider.client_secret,
        })
    }

    /// Captures the order's authorised payment (capture mode `manual`): exactly the order's
    /// total, with the session's own idempotency key; the provider's answer pays the order
    /// through the same transition as its webhook (which, arriving later, changes nothing).
    pub async fn capture(&self, tenant: TenantId, id: OrderId) -> Result<Order, PaymentsError> {
        let order = self.order_store.get_order(tenant, id).await?;
        if order.status != OrderStatus::PendingPayment
            || order.payment_status != PaymentStatus::Unpaid
        {
            return Err(OrderError::NotPayable(order.status.as_str()).into());
        }
        if self.clock.now() >= order.expires_at {
            // Its stock is being released: an authorisation captured now would be refunded.
            return Err(OrderError::NotPayable("expired").into());
        }
        let kind = ProviderKind::Stripe;
        let session = self
            .payments
            .open_session_of(tenant, id.as_uuid(), kind)
            .await?
            .ok_or(PaymentsError::NotCapturable)?;
        let settings = self.enabled(tenant, kind).await?;
        let provider = self.provider(kind)?;
        let secret = self.secret_key(&settings)?;
        let key = format!("keel_capture_{}", session.id);
        let captured = provider
            .capture(&secret, &session.provider_ref, session.amount, &key)
            .await?;
        if captured.status != SessionStatus::Succeeded {
            return Err(PaymentsError::NotCapturable);
        }
        let inbox = format!("capture:{}", session.provider_ref);
        let event = ProviderEvent {
            id: inbox.clone(),
            kind: EventKind::PaymentSucceeded {
                payment_id: session.provider_ref.clone(),
                amount: Amount {
                    minor: captured.received,
                    currency: captured.amount.currency,
                },
                order_reference: None,
                tenant_reference: None,
            },
        };
        let outcome = self
            .apply_event(tenant, kind, &event, &inbox, self.clock.now())
            .await?;
        for task in outcome.refunds {
            // Compensation (the order closed meanwhile): tried now, else by the retry job.
            if let Err(e) = self.run_refund(&task).await {
                tracing::warn!(refund = %task.id, error = %e, "a compensating refund is pending; the retry job tries again");
            }
        }
        Ok(self.order_store.get_order(tenant, id).await?)
    }
}
