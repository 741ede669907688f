//! Reconciliation: asks the provider about sessions without a final answer.

#[allow(clippy::wildcard_imports)]
use super::*;

impl PaymentsService {
    /// One reconciliation pass: asks the provider about up to `batch` sessions due for a
    /// check, applies a final answer as the webhook would (exactly once), cancels the
    /// payment of an order that closed unpaid, and sets the next check of the rest.
    pub async fn reconcile(&self, batch: i64) -> Result<PassReport, PaymentsError> {
        let now = self.clock.now();
        let due = self.payments.due_sessions(now, batch).await?;
        let mut report = PassReport::default();
        for session in due {
            report.checked += 1;
            match self.reconcile_one(&session, now).await {
                Ok(true) => report.settled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %session.id, error = %e, "reconciliation could not settle a payment session; it is asked again later");
                }
            }
            // Asked once per interval whatever the answer; a settled session is no longer due.
            let next = now + self.settings.reconcile_every;
            self.payments
                .reschedule_session(session.tenant_id, session.id, next)
                .await?;
        }
        Ok(report)
    }

    pub(super) async fn reconcile_one(
        &self,
        session: &PaymentSession,
        now: OffsetDateTime,
    ) -> Result<bool, PaymentsError> {
        let tenant = session.tenant_id;
        let settings = self.payments.get_provider(tenant, session.provider).await?;
        let provider = self.provider(session.provider)?;
        let secret = self.secret_key(&settings)?;
        let at_provider = match provider.retrieve(&secret, &session.provider_ref).await {
            Ok(p) => p,
            // The provider no longer knows the payment (the shop changed accounts or keys):
            // nothing can be paid through it, so the session closes here instead of being
            // asked about forever.
            Err(ProviderError::Refused { .. }) => {
                self.close_session(session, SessionStatus::Canceled, now)
                    .await?;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        let kind = match at_provider.status {
            // What the provider took, not what was asked: a partial capture is a mismatch.
            SessionStatus::Succeeded => EventKind::PaymentSucceeded {
                payment_id: session.provider_ref.clone(),
                amount: Amount {
                    minor: at_provider.received,
                    currency: at_provider.amount.currency,
                },
                order_reference: None,
                tenant_reference: None,
            },
            SessionStatus::Failed if session.status != SessionStatus::Failed => {
                EventKind::PaymentFailed {
                    payment_id: session.provider_ref.clone(),
                }
            }
            SessionStatus::Canceled => {
                self.close_session(session, SessionStatus::Canceled, now)
                    .await?;
                return Ok(true);
            }
            SessionStatus::Open | SessionStatus::Failed => {
                // Nothing paid yet: an order that closed meanwhile will never be paid, so its
                // payment is cancelled at the provider (a refusal means it succeeded since:
                // the next check sees that and compensates).
                let order = self
                    .order_store
                    .get_order(tenant, OrderId::from_uuid(session.order_id))
                    .await?;
                // No longer waiting for this payment (cancelled, expired, or paid another
                // way): a payment made now would only be refunded.
                let payable = order.status == OrderStatus::PendingPayment
                    && order.payment_status == PaymentStatus::Unpaid;
                if !payable {
                    let key = format!("keel_cancel_{}", session.id);
                    provider
                        .cancel(&secret, &session.provider_ref, &key)
                        .await?;
                    self.close_session(session, SessionStatus::Canceled, now)
                        .await?;
                    return Ok(true);
                }
                return Ok(false);
            }
        };
        // One inbox row per final answer read by reconciliation: the webhook's own event,
        // arriving later, finds the order already settled and changes nothing.
        let id = format!(
            "reconcile:{}:{}",
            session.provider_ref,
            webhooks::status_word(&kind)
        );
        let outcome = self
            .apply_event(
                tenant,
                session.provider,
                &ProviderEvent {
                    id: id.clone(),
                    kind,
                },
                &id,
                now,
            )
            .await?;
        for task in outcome.refunds {
            self.run_refund(&task).await?;
        }
        Ok(true)
    }

    pub(super) async fn close_session(
        &self,
        session: &PaymentSession,
        status: SessionStatus,
        now: OffsetDateTime,
    ) -> Result<(), PaymentsError> {
        let closed = event(
            session.tenant_id,
            "payment.canceled",
            &serde_json::json!({"order_id": OrderId::from_uuid(session.order_id), "session_id": session.id}),
            now,
        )?;
        self.payments
            .apply(&Effect {
                session: Some(SessionChange {
                    id: session.id,
                    status,
                    next_check_at: session.next_check_at,
                    updated_at: now,
                }),
                events: std::slice::from_ref(&closed),
                ..Effect::none(session.tenant_id)
            })
            .await?;
        Ok(())
    }
}
