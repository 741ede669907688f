//! The order aggregate and its state machine. Every operation checks the transition first and
//! answers a typed error for an illegal one, leaving the order unchanged.
//!
//! Fulfilment status: `pending_payment -> paid -> partially_fulfilled -> fulfilled -> shipped
//! -> delivered`, or `cancelled` (before fulfilment completes). Payment status: `unpaid ->
//! paid -> partially_refunded -> refunded`.

use keel_catalog::{LocationId, ProductId, ReservationId, VariantId};
use keel_kernel::id::CustomerId;
use keel_kernel::{TenantId, define_id, money::Currency};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    cart::{Address, LineId},
    exact::{Percent, allocate},
    pricing::{Breakdown, LineAmounts},
    setup::{PromotionId, ShippingOptionId},
};

define_id!(
    /// An order.
    OrderId,
    "ord"
);
define_id!(
    /// A payment of an order.
    PaymentId,
    "pay"
);
define_id!(
    /// A refund of (part of) an order's payment.
    RefundId,
    "ref"
);
define_id!(
    /// A fulfilment: lines and quantities handed over for shipping.
    FulfilmentId,
    "ful"
);
define_id!(
    /// A shipment with its carrier and tracking number.
    ShipmentId,
    "shpm"
);

/// Where an order's goods stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    PartiallyFulfilled,
    Fulfilled,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 7] = [
        Self::PendingPayment,
        Self::Paid,
        Self::PartiallyFulfilled,
        Self::Fulfilled,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::PartiallyFulfilled => "partially_fulfilled",
            Self::Fulfilled => "fulfilled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where an order's money stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Unpaid,
    Paid,
    PartiallyRefunded,
    Refunded,
}

impl PaymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "unpaid",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }
}

/// An illegal or impossible operation on an order; nothing changed. Each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("an order that is {0} cannot be paid")]
    NotPayable(&'static str),
    #[error("the payment must be exactly the order total")]
    WrongAmount,
    #[error("an order that is {0} cannot be fulfilled")]
    NotFulfillable(&'static str),
    #[error("more than was ordered would be fulfilled")]
    OverFulfilment,
    #[error("only a fulfilled order can be shipped")]
    NotShippable,
    #[error("only a shipped order can be delivered")]
    NotDeliverable,
    #[error("an order that is {0} cannot be cancelled")]
    NotCancellable(&'static str),
    #[error("nothing was captured that could be refunded")]
    NotRefundable,
    #[error("the refund exceeds what is left of the payment")]
    OverRefund,
    #[error("no such order line")]
    UnknownLine(LineId),
    #[error("amount out of range")]
    Overflow,
}

impl OrderError {
    /// The stable problem code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotPayable(_) => "order_not_payable",
            Self::WrongAmount => "payment_amount_mismatch",
            Self::NotFulfillable(_) => "order_not_fulfillable",
            Self::OverFulfilment => "over_fulfilment",
            Self::NotShippable => "order_not_shippable",
            Self::NotDeliverable => "order_not_deliverable",
            Self::NotCancellable(_) => "order_not_cancellable",
            Self::NotRefundable => "order_not_refundable",
            Self::OverRefund => "over_refund",
            Self::UnknownLine(_) => "unknown_order_line",
            Self::Overflow => "amount_out_of_range",
        }
    }
}

/// One line of an order, frozen at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub id: LineId,
    pub variant_id: VariantId,
    pub product_id: ProductId,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub amounts: LineAmounts,
    /// The stock held for this line at checkout.
    pub reservation_id: ReservationId,
    pub location_id: LocationId,
    pub fulfilled: i64,
    pub refunded_quantity: i64,
    /// Refunded from this line's total so far.
    pub refunded_amount: i64,
}

/// A payment (the built-in `manual` provider captures at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub amount: i64,
    pub status: String,
    pub provider: String,
    pub provider_reference: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a refund took from each line (and from shipping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundLine {
    pub line_id: LineId,
    pub quantity: i64,
    pub amount: i64,
}

/// Where a refund stands. A refund of a `manual` payment is done when it is recorded; a
/// refund of a provider's payment is `pending` until the provider answers, and counts against
/// what is left to refund meanwhile (so two refunds cannot pass together), and `failed` gives
/// its amounts back to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    #[default]
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// The provider of payments recorded by staff (cash on delivery, bank transfer).
pub const MANUAL_PROVIDER: &str = "manual";

/// A payment that paid the order.
pub const CAPTURED: &str = "captured";

/// A payment taken for an order that would not ship, returned whole (compensation).
pub const COMPENSATED: &str = "compensated";

/// A compensation the provider refused: the money is still at the provider, for staff.
pub const COMPENSATION_FAILED: &str = "compensation_failed";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: RefundId,
    pub amount: i64,
    pub lines: Vec<RefundLine>,
    pub shipping: i64,
    pub reason: Option<String>,
    /// Orders stored before refunds could wait for a provider hold only done refunds.
    #[serde(default)]
    pub status: RefundStatus,
    /// The payment this refund gives back whole when it is a compensation (a payment taken
    /// for an order that would not ship); `None` for refunds of the order's own payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<PaymentId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentLine {
    pub line_id: LineId,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    pub id: FulfilmentId,
    pub lines: Vec<FulfilmentLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub id: ShipmentId,
    pub carrier: String,
    pub tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Stock to move when an order changes: commit (fulfilled) or release (cancelled) `quantity`
/// of a line's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockMove {
    pub reservation_id: ReservationId,
    pub variant_id: VariantId,
    pub location_id: LocationId,
    pub quantity: i64,
}

/// A shop's first order number; each order after it takes the next (`#1001`, `#1002`, …).
pub const FIRST_ORDER_NUMBER: i64 = 1001;

/// An order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub tenant_id: TenantId,
    /// The shop's human number: 1001, 1002, … (shown as `#1001`).
    pub number: i64,
    pub currency: Currency,
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub status: OrderStatus,
    pub payment_status: PaymentStatus,
    pub lines: Vec<OrderLine>,
    pub totals: Breakdown,
    pub shipping_address: Address,
    pub shipping_option_id: Option<ShippingOptionId>,
    pub promotion_id: Option<PromotionId>,
    pub promotion_code: Option<String>,
    pub tax_rate: Percent,
    pub captured: i64,
    pub refunded: i64,
    pub refunded_shipping: i64,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    pub fulfilments: Vec<Fulfilment>,
    pub shipments: Vec<Shipment>,
    /// SHA-256 of the guest cart's secret, which also reaches the order.
    pub access_hash: Option<String>,
    pub cancel_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When an unpaid order is cancelled by the expiry job.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub version: i64,
}

/// A refund asked for: an amount (split over what is left, shipping included), or lines
/// and quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRequest {
    Amount(i64),
    Lines(Vec<(LineId, i64)>),
}

fn add(a: i64, b: i64) -> Result<i64, OrderError> {
    a.checked_add(b).ok_or(OrderError::Overflow)
}

impl Order {
    fn touch(&mut self, now: OffsetDateTime) {
        self.updated_at = now;
        self.version += 1;
    }

    /// Records `amount` captured by `provider` (its payment's id is `reference`): only an
    /// unpaid, pending order, only the exact total.
    pub fn pay(
        &mut self,
        provider: &str,
        amount: i64,
        reference: String,
        now: OffsetDateTime,
    ) -> Result<&Payment, OrderError> {
        if self.status != OrderStatus::PendingPayment {
            return Err(OrderError::NotPayable(self.status.as_str()));
        }
        if amount != self.totals.total {
            return Err(OrderError::WrongAmount);
        }
        self.payments.push(Payment {
            id: PaymentId::new(),
            amount,
            status: CAPTURED.into(),
            provider: provider.to_owned(),
            provider_reference: reference,
            created_at: now,
        });
        self.captured = add(self.captured, amount)?;
        self.status = OrderStatus::Paid;
        self.payment_status = PaymentStatus::Paid;
        self.touch(now);
        Ok(self.payments.last().expect("just pushed"))
    }

    /// The payment a provider took for this order with its id `reference`, if recorded.
    pub fn payment_by(&self, provider: &str, reference: &str) -> Option<&Payment> {
        self.payments
            .iter()
            .find(|p| p.provider == provider && p.provider_reference == reference)
    }

    /// The payment that paid the order (the one [`Self::pay`] recorded): its refunds go back
    /// the way it came. A payment compensated (returned whole) is not it.
    pub fn paying_payment(&self) -> Option<&Payment> {
        self.payments.iter().find(|p| p.status == CAPTURED)
    }

    /// How a refund recorded now starts: pending while a provider must give the money back.
    fn new_refund_status(&self) -> RefundStatus {
        if self
            .paying_payment()
            .is_some_and(|p| p.provider != MANUAL_PROVIDER)
        {
            RefundStatus::Pending
        } else {
            RefundStatus::Succeeded
        }
    }

    /// Money a provider took for this order that it must not keep (the order was closed, or
    /// paid otherwise, when the payment succeeded): the payment is recorded and all of it is
    /// refunded at once, pending the provider. Answers the refund.
    pub fn compensate(
        &mut self,
        provider: &str,
        amount: i64,
        reference: String,
        now: OffsetDateTime,
    ) -> Result<Refund, OrderError> {
        if amount < 1 {
            return Err(OrderError::OverRefund);
        }
        let payment = PaymentId::new();
        self.payments.push(Payment {
            id: payment,
            amount,
            status: COMPENSATED.into(),
            provider: provider.to_owned(),
            provider_reference: reference,
            created_at: now,
        });
        self.captured = add(self.captured, amount)?;
        self.refunded = add(self.refunded, amount)?;
        let refund = Refund {
            id: RefundId::new(),
            amount,
            lines: Vec::new(),
            shipping: 0,
            reason: Some("payment for an order that will not ship".into()),
            status: RefundStatus::Pending,
            compensates: Some(payment),
            created_at: now,
        };
        self.refunds.push(refund.clone());
        self.payment_status = self.refund_standing();
        self.touch(now);
        Ok(refund)
    }

    /// A pending refund's outcome from the provider. Done: it stays. Failed: its amounts go
    /// back to the order, which may be refunded again. Answers false when the refund was
    /// already settled (a repeated answer changes nothing).
    pub fn settle_refund(
        &mut self,
        id: RefundId,
        succeeded: bool,
        now: OffsetDateTime,
    ) -> Result<bool, OrderError> {
        let index = self
            .refunds
            .iter()
            .position(|r| r.id == id)
            .ok_or(OrderError::NotRefundable)?;
        if self.refunds[index].status != RefundStatus::Pending {
            return Ok(false);
        }
        if succeeded {
            self.refunds[index].status = RefundStatus::Succeeded;
        } else if let Some(payment) = self.refunds[index].compensates {
            // A compensation the provider refused: the money it holds was never the order's,
            // so it leaves the order's books whole (never refundable through the order's own
            // payment) and staff settle it with the provider.
            let amount = self.refunds[index].amount;
            self.captured -= amount;
            self.refunded -= amount;
            if let Some(p) = self.payments.iter_mut().find(|p| p.id == payment) {
                p.status = COMPENSATION_FAILED.into();
            }
            self.refunds[index].status = RefundStatus::Failed;
            self.payment_status = self.refund_standing();
        } else {
            let refund = self.refunds[index].clone();
            for taken in &refund.lines {
                if let Some(line) = self.lines.iter_mut().find(|l| l.id == taken.line_id) {
                    line.refunded_amount -= taken.amount;
                    line.refunded_quantity -= taken.quantity;
                }
            }
            self.refunded_shipping -= refund.shipping;
            self.refunded -= refund.amount;
            self.refunds[index].status = RefundStatus::Failed;
            self.payment_status = self.refund_standing();
        }
        self.touch(now);
        Ok(true)
    }

    /// The payment status that what was captured and refunded add up to.
    fn refund_standing(&self) -> PaymentStatus {
        if self.captured == 0 {
            PaymentStatus::Unpaid
        } else if self.refunded == 0 {
            PaymentStatus::Paid
        } else if self.refunded >= self.captured {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    /// Fulfils quantities of lines; never more than ordered. Answers the stock to commit.
    /// (Refunds move money only: a refunded line can still be fulfilled, e.g. as a goodwill
    /// partial refund.)
    pub fn fulfil(
        &mut self,
        wanted: &[(LineId, i64)],
        now: OffsetDateTime,
    ) -> Result<Vec<StockMove>, OrderError> {
        if !matches!(
            self.status,
            OrderStatus::Paid | OrderStatus::PartiallyFulfilled
        ) {
            return Err(OrderError::NotFulfillable(self.status.as_str()));
        }
        let mut next = self.lines.clone();
        let mut moves = Vec::new();
        for &(line_id, quantity) in wanted {
            let line = next
                .iter_mut()
                .find(|l| l.id == line_id)
                .ok_or(OrderError::UnknownLine(line_id))?;
            let open = line.quantity - line.fulfilled;
            if quantity < 1 || quantity > open {
                return Err(OrderError::OverFulfilment);
            }
            line.fulfilled += quantity;
            moves.push(StockMove {
                reservation_id: line.reservation_id,
                variant_id: line.variant_id,
                location_id: line.location_id,
                quantity,
            });
        }
        if moves.is_empty() {
            return Err(OrderError::OverFulfilment);
        }
        self.lines = next;
        self.fulfilments.push(Fulfilment {
            id: FulfilmentId::new(),
            lines: wanted
                .iter()
                .map(|&(line_id, quantity)| FulfilmentLine { line_id, quantity })
                .collect(),
            created_at: now,
        });
        let done = self.lines.iter().all(|l| l.fulfilled >= l.quantity);
        self.status = if done {
            OrderStatus::Fulfilled
        } else {
            OrderStatus::PartiallyFulfilled
        };
        self.touch(now);
        Ok(moves)
    }

    /// Records a shipment of a fulfilled order.
    pub fn ship(
        &mut self,
        carrier: String,
        tracking_number: String,
        now: OffsetDateTime,
    ) -> Result<&Shipment, OrderError> {
        if self.status != OrderStatus::Fulfilled {
            return Err(OrderError::NotShippable);
        }
        self.shipments.push(Shipment {
            id: ShipmentId::new(),
            carrier,
            tracking_number,
            created_at: now,
        });
        self.status = OrderStatus::Shipped;
        self.touch(now);
        Ok(self.shipments.last().expect("just pushed"))
    }

    pub fn deliver(&mut self, now: OffsetDateTime) -> Result<(), OrderError> {
        if self.status != OrderStatus::Shipped {
            return Err(OrderError::NotDeliverable);
        }
        self.status = OrderStatus::Delivered;
        self.touch(now);
        Ok(())
    }

    /// Stock still held for unfulfilled quantities.
    fn held_stock(&self) -> Vec<StockMove> {
        self.lines
            .iter()
            .filter(|l| l.quantity > l.fulfilled)
            .map(|l| StockMove {
                reservation_id: l.reservation_id,
                variant_id: l.variant_id,
                location_id: l.location_id,
                quantity: l.quantity - l.fulfilled,
            })
            .collect()
    }

    /// Cancels an order not yet completely fulfilled: its held stock is released and whatever
    /// is left of the payment is refunded. Answers the stock to release and the refund, if any.
    pub fn cancel(
        &mut self,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(Vec<StockMove>, Option<Refund>), OrderError> {
        if !matches!(
            self.status,
            OrderStatus::PendingPayment | OrderStatus::Paid | OrderStatus::PartiallyFulfilled
        ) {
            return Err(OrderError::NotCancellable(self.status.as_str()));
        }
        let moves = self.held_stock();
        let left = self.captured - self.refunded;
        let refund = if left > 0 {
            Some(self.refund_unchecked(
                &RefundRequest::Amount(left),
                Some("order cancelled".into()),
                now,
            )?)
        } else {
            None
        };
        self.status = OrderStatus::Cancelled;
        self.cancel_reason = Some(reason.to_owned());
        self.touch(now);
        Ok((moves, refund))
    }

    /// Refunds by amount or by lines; never more than is left of what was captured.
    pub fn refund(
        &mut self,
        request: &RefundRequest,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Refund, OrderError> {
        if !matches!(
            self.payment_status,
            PaymentStatus::Paid | PaymentStatus::PartiallyRefunded
        ) {
            return Err(OrderError::NotRefundable);
        }
        let r = self.refund_unchecked(request, reason, now)?;
        self.touch(now);
        Ok(r)
    }

    fn refund_unchecked(
        &mut self,
        request: &RefundRequest,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Refund, OrderError> {
        let mut lines = self.lines.clone();
        let mut refund_lines = Vec::new();
        let mut shipping = 0;
        let shipping_total = if self.totals.tax_inclusive {
            self.totals.shipping
        } else {
            add(self.totals.shipping, self.totals.shipping_tax)?
        };
        match request {
            RefundRequest::Amount(amount) => {
                if *amount < 1 {
                    return Err(OrderError::OverRefund);
                }
                // What is left per line, then shipping; split exactly by largest remainder.
                let mut weights: Vec<i64> = lines
                    .iter()
                    .map(|l| l.amounts.total - l.refunded_amount)
                    .collect();
                weights.push(shipping_total - self.refunded_shipping);
                let left: i64 = weights.iter().sum();
                if *amount > left || *amount > self.captured - self.refunded {
                    return Err(OrderError::OverRefund);
                }
                let shares = allocate(*amount, &weights).map_err(|_| OrderError::Overflow)?;
                for (line, share) in lines.iter_mut().zip(&shares) {
                    if *share > 0 {
                        line.refunded_amount += share;
                        refund_lines.push(RefundLine {
                            line_id: line.id,
                            quantity: 0,
                            amount: *share,
                        });
                    }
                }
                shipping = *shares.last().expect("the shipping weight");
            }
            RefundRequest::Lines(wanted) => {
                if wanted.is_empty() {
                    return Err(OrderError::OverRefund);
                }
                for &(line_id, quantity) in wanted {
                    let line = lines
                        .iter_mut()
                        .find(|l| l.id == line_id)
                        .ok_or(OrderError::UnknownLine(line_id))?;
                    if quantity < 1 || line.refunded_quantity + quantity > line.quantity {
                        return Err(OrderError::OverRefund);
                    }
                    // The line's total split exactly over its units; these units are the next
                    // ones not yet refunded.
                    let units = usize::try_from(line.quantity).map_err(|_| OrderError::Overflow)?;
                    let per_unit = allocate(line.amounts.total, &vec![1; units])
                        .map_err(|_| OrderError::Overflow)?;
                    let from = usize::try_from(line.refunded_quantity)
                        .map_err(|_| OrderError::Overflow)?;
                    let to = from + usize::try_from(quantity).map_err(|_| OrderError::Overflow)?;
                    let amount: i64 = per_unit[from..to].iter().sum();
                    let amount = amount.min(line.amounts.total - line.refunded_amount);
                    line.refunded_quantity += quantity;
                    line.refunded_amount += amount;
                    refund_lines.push(RefundLine {
                        line_id,
                        quantity,
                        amount,
                    });
                }
            }
        }
        let amount = refund_lines.iter().map(|l| l.amount).sum::<i64>() + shipping;
        if amount < 1 || amount > self.captured - self.refunded {
            return Err(OrderError::OverRefund);
        }
        self.lines = lines;
        self.refunded = add(self.refunded, amount)?;
        self.refunded_shipping = add(self.refunded_shipping, shipping)?;
        self.payment_status = self.refund_standing();
        let refund = Refund {
            id: RefundId::new(),
            amount,
            lines: refund_lines,
            shipping,
            reason,
            status: self.new_refund_status(),
            compensates: None,
            created_at: now,
        };
        self.refunds.push(refund.clone());
        Ok(refund)
    }

    /// Cancels an unpaid order whose time ran out; answers the stock to release.
    pub fn expire(&mut self, now: OffsetDateTime) -> Result<Vec<StockMove>, OrderError> {
        if self.status != OrderStatus::PendingPayment || now < self.expires_at {
            return Err(OrderError::NotCancellable(self.status.as_str()));
        }
        Ok(self.cancel("expired unpaid", now)?.0)
    }
}
