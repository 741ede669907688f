//! The provider's webhooks: verified, stored once, applied in one transaction with their
//! effect (what an event does to the order is [`plan`]).

#[allow(clippy::wildcard_imports)]
use super::*;

impl PaymentsService {
    /// A provider's webhook for one shop: verified with the shop's signing secrets, stored
    /// once, its effect applied in the same transaction. `Signature` (nothing stored) for a
    /// shop without the provider, a bad or stale signature, or a body that is not an event.
    pub async fn receive_webhook(
        &self,
        tenant: TenantId,
        kind: ProviderKind,
        signature: &str,
        body: &[u8],
    ) -> Result<WebhookOutcome, PaymentsError> {
        // Every refusal reads the same to the caller: no answer tells which shops take
        // payments with the provider.
        let refused = PaymentsError::Signature("the signature does not verify");
        let settings = match self.payments.get_provider(tenant, kind).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Err(refused),
            Err(e) => return Err(e.into()),
        };
        let secrets = match self.webhook_secrets(&settings) {
            Ok(s) if !s.is_empty() => s,
            _ => return Err(refused),
        };
        let keys: Vec<&[u8]> = secrets.iter().map(String::as_bytes).collect();
        let now = self.clock.now();
        if let Err(e) = verify(signature, body, &keys, now, self.settings.webhook_tolerance) {
            let why = match e {
                SignatureError::Stale => "stale timestamp",
                SignatureError::Malformed => "malformed signature header",
                SignatureError::Mismatch => "signature mismatch",
            };
            tracing::info!(%tenant, why, "a provider webhook was refused");
            return Err(refused);
        }
        let provider = self.provider(kind)?;
        let event = provider.parse_event(body).map_err(|_| refused)?;
        self.apply_event(tenant, kind, &event, &event.id, now).await
    }

    /// Applies a provider event (from a webhook, or reconciliation's reading) exactly once:
    /// `inbox_id` is stored with the effect, and a repeat finds it and changes nothing.
    pub(super) async fn apply_event(
        &self,
        tenant: TenantId,
        kind: ProviderKind,
        event: &ProviderEvent,
        inbox_id: &str,
        now: OffsetDateTime,
    ) -> Result<WebhookOutcome, PaymentsError> {
        let inbox = Inbox {
            provider: kind,
            event_id: inbox_id,
            event_type: event_type(event),
            at: now,
        };
        let payment_id = match &event.kind {
            EventKind::PaymentSucceeded { payment_id, .. }
            | EventKind::PaymentFailed { payment_id }
            | EventKind::Refunded { payment_id, .. } => Some(payment_id.as_str()),
            EventKind::Other { .. } => None,
        };
        // The shop and the order come from Keel's own session of this payment, never from
        // what the event carries: an event for a payment Keel did not make is stored only.
        let session = match payment_id {
            Some(id) => match self.payments.session_by_ref(tenant, kind, id).await {
                Ok(s) => Some(s),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let Some(session) = session else {
            let applied = self.store_only(tenant, inbox, &[]).await?;
            return Ok(WebhookOutcome {
                repeat: applied == Applied::Repeat,
                refunds: Vec::new(),
            });
        };
        for _ in 0..SAVE_ATTEMPTS {
            let order = self
                .order_store
                .get_order(tenant, OrderId::from_uuid(session.order_id))
                .await?;
            let order_id = order.id;
            let known = self.known_refunded(&session, &event.kind, order_id).await?;
            let plan = match plan(&session, order, &event.kind, known, now) {
                Ok(p) => p,
                // The event can never apply to the order as it stands (e.g. a refund at the
                // provider larger than what is left): stored, shown to staff, answered 2xx so
                // the provider stops sending it.
                Err(PaymentsError::Order(e)) => {
                    return self.unapplied(&session, order_id, inbox, &e, now).await;
                }
                Err(e) => return Err(e),
            };
            let effect = Effect {
                tenant,
                inbox: Some(inbox),
                session: plan.session,
                order: plan.order.as_ref().map(|(o, v)| OrderChange {
                    order: o,
                    expected_version: *v,
                    stock: &[],
                    give_back: false,
                    receipt: None,
                }),
                refunds: &plan.refunds,
                events: &plan.events,
            };
            match self.payments.apply(&effect).await {
                Ok(Applied::Done) => {
                    return Ok(WebhookOutcome {
                        repeat: false,
                        refunds: plan
                            .refunds
                            .into_iter()
                            .filter(|t| t.status == RefundTaskStatus::Pending)
                            .collect(),
                    });
                }
                Ok(Applied::Repeat) => {
                    return Ok(WebhookOutcome {
                        repeat: true,
                        refunds: Vec::new(),
                    });
                }
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(PaymentsError::Contended)
    }

    /// What Keel asked this payment's provider to refund so far, for a `charge.refunded`
    /// (which reports the payment's total, refunds made at the provider included).
    pub(super) async fn known_refunded(
        &self,
        session: &PaymentSession,
        kind: &EventKind,
        order: OrderId,
    ) -> Result<i64, PaymentsError> {
        if !matches!(kind, EventKind::Refunded { .. }) {
            return Ok(0);
        }
        Ok(self
            .payments
            .refunds_of_order(session.tenant_id, order)
            .await?
            .iter()
            .filter(|t| {
                t.payment_ref == session.provider_ref && t.status != RefundTaskStatus::Failed
            })
            .map(|t| t.amount.minor)
            .sum())
    }

    /// An event that can never apply to the order as it stands (e.g. a refund at the
    /// provider larger than what is left): stored, shown to staff (`payment.unapplied`),
    /// answered 2xx so the provider stops sending it.
    pub(super) async fn unapplied(
        &self,
        session: &PaymentSession,
        order: OrderId,
        inbox: Inbox<'_>,
        why: &OrderError,
        now: OffsetDateTime,
    ) -> Result<WebhookOutcome, PaymentsError> {
        let tenant = session.tenant_id;
        let unapplied = event(
            tenant,
            "payment.unapplied",
            &serde_json::json!({"order_id": order, "session_id": session.id, "event_type": inbox.event_type, "code": why.code()}),
            now,
        )?;
        let applied = self
            .store_only(tenant, inbox, std::slice::from_ref(&unapplied))
            .await?;
        Ok(WebhookOutcome {
            repeat: applied == Applied::Repeat,
            refunds: Vec::new(),
        })
    }

    /// Stores a provider event, with `events` for staff, and changes nothing else.
    pub(super) async fn store_only(
        &self,
        tenant: TenantId,
        inbox: Inbox<'_>,
        events: &[NewEvent],
    ) -> Result<Applied, PaymentsError> {
        Ok(self
            .payments
            .apply(&Effect {
                inbox: Some(inbox),
                events,
                ..Effect::none(tenant)
            })
            .await?)
    }
}

fn event_type(event: &ProviderEvent) -> &str {
    match &event.kind {
        EventKind::PaymentSucceeded { .. } => "payment_intent.succeeded",
        EventKind::PaymentFailed { .. } => "payment_intent.payment_failed",
        EventKind::Refunded { .. } => "charge.refunded",
        EventKind::Other { event_type } => event_type,
    }
}

pub(super) fn status_word(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::PaymentSucceeded { .. } => "succeeded",
        EventKind::PaymentFailed { .. } => "failed",
        EventKind::Refunded { .. } => "refunded",
        EventKind::Other { .. } => "other",
    }
}

/// What one provider event does to a session and its order.
struct Plan {
    session: Option<SessionChange>,
    order: Option<(Order, i64)>,
    refunds: Vec<RefundTask>,
    events: Vec<NewEvent>,
}

fn standing(order: &Order, provider: ProviderKind, payment_id: &str) -> OrderStanding {
    if order.payment_by(provider.as_str(), payment_id).is_some() {
        OrderStanding::Recorded
    } else if order.status == OrderStatus::PendingPayment
        && order.payment_status == PaymentStatus::Unpaid
    {
        OrderStanding::Payable {
            outstanding: Amount {
                minor: order.totals.total,
                currency: order.currency,
            },
        }
    } else if order.status == OrderStatus::Cancelled {
        OrderStanding::Closed
    } else {
        OrderStanding::Paid
    }
}

fn plan(
    session: &PaymentSession,
    mut order: Order,
    kind: &EventKind,
    known_refunded: i64,
    now: OffsetDateTime,
) -> Result<Plan, PaymentsError> {
    let tenant = session.tenant_id;
    let read = order.version;
    let provider = session.provider;
    let settle = |status| SessionChange {
        id: session.id,
        status,
        next_check_at: session.next_check_at,
        updated_at: now,
    };
    let mut out = Plan {
        session: None,
        order: None,
        refunds: Vec::new(),
        events: Vec::new(),
    };
    match kind {
        EventKind::PaymentSucceeded { amount, .. } => {
            out.session = Some(settle(SessionStatus::Succeeded));
            match on_succeeded(standing(&order, provider, &session.provider_ref), *amount) {
                OnSucceeded::MarkPaid => {
                    let payment = order
                        .pay(
                            provider.as_str(),
                            amount.minor,
                            session.provider_ref.clone(),
                            now,
                        )?
                        .clone();
                    out.events.push(event(tenant, "order.paid", &serde_json::json!({"order_id": order.id, "payment_id": payment.id, "provider": provider.as_str(), "amount": payment.amount, "currency": order.currency}), now)?);
                    out.order = Some((order, read));
                }
                OnSucceeded::Mismatch { expected, reported } => {
                    out.events.push(event(tenant, "payment.mismatch", &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": provider.as_str(), "expected": {"amount": expected.minor, "currency": expected.currency}, "reported": {"amount": reported.minor, "currency": reported.currency}}), now)?);
                }
                OnSucceeded::Refund { amount } => {
                    let refund = order.compensate(
                        provider.as_str(),
                        amount.minor,
                        session.provider_ref.clone(),
                        now,
                    )?;
                    let task = refund_of(&order, &refund, provider, &session.provider_ref, now);
                    out.events.push(event(tenant, "payment.compensation_started", &serde_json::json!({"order_id": order.id, "session_id": session.id, "refund_id": refund.id, "provider": provider.as_str(), "amount": amount.minor, "currency": amount.currency}), now)?);
                    out.refunds.push(task);
                    out.order = Some((order, read));
                }
                OnSucceeded::AlreadyApplied => {}
            }
        }
        EventKind::PaymentFailed { .. } => {
            if !session.status.is_final() {
                out.session = Some(settle(SessionStatus::Failed));
                out.events.push(event(tenant, "payment.failed", &serde_json::json!({"order_id": order.id, "session_id": session.id, "provider": provider.as_str()}), now)?);
            }
        }
        EventKind::Refunded {
            amount_refunded, ..
        } => {
            // Refunds Keel asked of this payment are its tasks (pending or done); more at the
            // provider was refunded there directly (its dashboard): recorded as done, against
            // the payment that paid the order only.
            let more = amount_refunded.minor - known_refunded;
            let paying = order.paying_payment().is_some_and(|p| {
                p.provider == provider.as_str() && p.provider_reference == session.provider_ref
            });
            if amount_refunded.currency == order.currency && more > 0 && paying {
                let refund = order.refund(
                    &RefundRequest::Amount(more),
                    Some("refunded at the provider".into()),
                    now,
                )?;
                order.settle_refund(refund.id, true, now)?;
                let mut task = refund_task(&order, &refund, now)?;
                task.status = RefundTaskStatus::Succeeded;
                out.events.push(event(tenant, "order.refunded", &serde_json::json!({"order_id": order.id, "refund_id": refund.id, "amount": refund.amount, "currency": order.currency, "provider": provider.as_str()}), now)?);
                out.refunds.push(task);
                out.order = Some((order, read));
            }
        }
        EventKind::Other { .. } => {}
    }
    Ok(out)
}
