//! Property tests of the exact-values rule: random carts always reconcile to the minor unit,
//! allocations are exact and bounded, and refunds never exceed what was captured. 10 000
//! cases each (set in the config below, not by the environment).

use keel_catalog::{LocationId, ProductId, ReservationId, VariantId};
use keel_kernel::{
    TenantId,
    money::{Currency, Money},
};
use keel_orders::{
    cart::{Address, LineId},
    country::Country,
    exact::{Percent, allocate},
    order::{Order, OrderId, OrderLine, OrderStatus, PaymentStatus, RefundRequest, RefundStatus},
    pricing::{Discount, LineInput, PricingInput, ShippingInput, price},
};
use proptest::prelude::*;

const CASES: u32 = 10_000;

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![Just("JPY"), Just("USD"), Just("KWD")]
        .prop_map(|c| Currency::parse(c).expect("ISO 4217"))
}

fn percent() -> impl Strategy<Value = Percent> {
    (0_i64..=100_000_000).prop_map(|m| Percent::from_millionths(m).expect("in range"))
}

fn discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        Just(Discount::None),
        (0_i64..=2_000_000).prop_map(Discount::Fixed),
        percent().prop_map(Discount::Percent),
    ]
}

fn input() -> impl Strategy<Value = PricingInput> {
    (
        prop::collection::vec((0_i64..=10_000_000, 1_i64..=999), 1..=100),
        discount(),
        prop::option::of((0_i64..=100_000, prop::option::of(0_i64..=50_000_000))),
        percent(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(lines, discount, shipping, tax_rate, shipping_taxable, tax_inclusive)| PricingInput {
                lines: lines
                    .into_iter()
                    .map(|(unit_price, quantity)| LineInput {
                        unit_price,
                        quantity,
                    })
                    .collect(),
                discount,
                shipping: shipping.map(|(amount, free_over)| ShippingInput { amount, free_over }),
                tax_rate,
                shipping_taxable,
                tax_inclusive,
            },
        )
}

fn order_from(input: &PricingInput, currency: Currency) -> Order {
    let totals = price(input).expect("priced");
    let now = time::OffsetDateTime::UNIX_EPOCH;
    Order {
        id: OrderId::new(),
        tenant_id: TenantId::new(),
        number: 1001,
        currency,
        customer_id: None,
        email: None,
        status: OrderStatus::PendingPayment,
        payment_status: PaymentStatus::Unpaid,
        lines: input
            .lines
            .iter()
            .zip(&totals.lines)
            .map(|(l, a)| OrderLine {
                id: LineId::new(),
                variant_id: VariantId::new(),
                product_id: ProductId::new(),
                sku: "SKU".into(),
                title: "Item".into(),
                quantity: l.quantity,
                unit_price: l.unit_price,
                amounts: *a,
                reservation_id: ReservationId::new(),
                location_id: LocationId::new(),
                fulfilled: 0,
                refunded_quantity: 0,
                refunded_amount: 0,
            })
            .collect(),
        totals,
        shipping_address: Address {
            name: "A".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "New York".into(),
            region: Some("NY".into()),
            postal_code: "10001".into(),
            country: Country::parse("US").expect("US"),
            phone: None,
        },
        shipping_option_id: None,
        promotion_id: None,
        promotion_code: None,
        tax_rate: input.tax_rate,
        captured: 0,
        refunded: 0,
        refunded_shipping: 0,
        payments: Vec::new(),
        refunds: Vec::new(),
        fulfilments: Vec::new(),
        shipments: Vec::new(),
        access_hash: None,
        cancel_reason: None,
        created_at: now,
        updated_at: now,
        expires_at: now,
        version: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn every_cart_reconciles_to_the_minor_unit(input in input(), currency in currency()) {
        let b = price(&input).expect("in range by construction");
        prop_assert!(b.reconciles(), "{b:?}");
        // The same identity in Money, in the cart's currency.
        let m = |v: i64| Money::new(v, currency);
        let exclusive_tax = if b.tax_inclusive { 0 } else { b.tax };
        let rebuilt = Money::checked_sum(currency, [m(b.subtotal), m(-b.discount), m(b.shipping), m(exclusive_tax)]).expect("sum");
        prop_assert_eq!(rebuilt, m(b.total));
        prop_assert_eq!(b.lines.iter().map(|l| l.discount).sum::<i64>(), b.discount);
        for l in &b.lines {
            prop_assert!(l.discount >= 0 && l.discount <= l.subtotal);
            prop_assert!(l.tax >= 0 && l.total >= 0, "no negative line: {l:?}");
            if l.subtotal == l.discount {
                prop_assert_eq!(l.tax, 0, "tax on zero is zero");
            }
        }
        prop_assert!(b.discount <= b.subtotal);
    }

    #[test]
    fn allocations_sum_exactly_and_stay_within_their_weights(
        weights in prop::collection::vec(0_i64..=1_000_000_000, 1..=100),
        fraction in 0_u32..=1000,
    ) {
        let sum: i64 = weights.iter().sum();
        let total = i64::try_from(i128::from(sum) * i128::from(fraction) / 1000).expect("fits");
        let shares = allocate(total, &weights);
        if sum == 0 {
            prop_assert_eq!(shares, Ok(vec![0; weights.len()]));
        } else {
            let shares = shares.expect("allocated");
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            for (s, w) in shares.iter().zip(&weights) {
                prop_assert!(*s >= 0 && *s <= *w, "{s} of {w}");
            }
        }
    }

    #[test]
    fn refunds_never_exceed_what_was_captured(
        input in input(),
        currency in currency(),
        asks in prop::collection::vec((any::<bool>(), 1_i64..=5_000_000, any::<prop::sample::Index>(), 1_i64..=999), 1..=8),
    ) {
        let mut order = order_from(&input, currency);
        let total = order.totals.total;
        let paid = order.pay("manual", total, "ref".into(), time::OffsetDateTime::UNIX_EPOCH).is_ok();
        prop_assert!(paid);
        for (by_amount, amount, line, quantity) in asks {
            let request = if by_amount {
                RefundRequest::Amount(amount)
            } else {
                let l = &order.lines[line.index(order.lines.len())];
                RefundRequest::Lines(vec![(l.id, quantity)])
            };
            let before = order.refunded;
            let outcome = order.refund(&request, None, time::OffsetDateTime::UNIX_EPOCH);
            if let Ok(r) = &outcome {
                prop_assert_eq!(order.refunded, before + r.amount);
                prop_assert_eq!(r.amount, r.lines.iter().map(|l| l.amount).sum::<i64>() + r.shipping);
            } else {
                prop_assert_eq!(order.refunded, before, "a refused refund changes nothing");
            }
            prop_assert!(order.refunded <= order.captured);
            for l in &order.lines {
                prop_assert!(l.refunded_amount <= l.amounts.total);
            }
        }
        let left = order.captured - order.refunded;
        if left > 0 {
            prop_assert!(order.refund(&RefundRequest::Amount(left + 1), None, time::OffsetDateTime::UNIX_EPOCH).is_err());
            prop_assert!(order.refund(&RefundRequest::Amount(left), None, time::OffsetDateTime::UNIX_EPOCH).is_ok());
        }
        prop_assert!(order.refunded <= order.captured);
    }

    #[test]
    fn a_refund_refused_by_the_provider_gives_back_exactly_what_it_took(
        input in input(),
        currency in currency(),
        asks in prop::collection::vec((1_i64..=5_000_000, any::<bool>()), 1..=8),
    ) {
        let mut order = order_from(&input, currency);
        let total = order.totals.total;
        prop_assert!(order.pay("stripe", total, "pi_1".into(), time::OffsetDateTime::UNIX_EPOCH).is_ok());
        for (amount, succeeds) in asks {
            let Ok(r) = order.refund(&RefundRequest::Amount(amount), None, time::OffsetDateTime::UNIX_EPOCH) else {
                continue;
            };
            prop_assert_eq!(r.status, RefundStatus::Pending, "a provider's payment is refunded through it");
            prop_assert_eq!(order.settle_refund(r.id, succeeds, time::OffsetDateTime::UNIX_EPOCH), Ok(true));
            prop_assert_eq!(order.settle_refund(r.id, !succeeds, time::OffsetDateTime::UNIX_EPOCH), Ok(false), "settled once");
        }
        let kept: Vec<_> = order.refunds.iter().filter(|r| r.status != RefundStatus::Failed).collect();
        prop_assert_eq!(order.refunded, kept.iter().map(|r| r.amount).sum::<i64>());
        prop_assert_eq!(order.refunded_shipping, kept.iter().map(|r| r.shipping).sum::<i64>());
        for l in &order.lines {
            let taken: i64 = kept.iter().flat_map(|r| &r.lines).filter(|x| x.line_id == l.id).map(|x| x.amount).sum();
            prop_assert_eq!(l.refunded_amount, taken);
        }
        prop_assert!(order.refunded <= order.captured);
    }
}

/// A compensation the provider refuses leaves the order's books whole: its money never
/// becomes refundable through the order's own payment.
#[test]
fn a_refused_compensation_never_becomes_refundable_through_the_orders_payment() {
    let input = PricingInput {
        lines: vec![LineInput {
            unit_price: 1000,
            quantity: 2,
        }],
        discount: Discount::None,
        shipping: None,
        tax_rate: Percent::ZERO,
        shipping_taxable: false,
        tax_inclusive: false,
    };
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let mut order = order_from(&input, Currency::parse("USD").expect("USD"));
    order.pay("stripe", 2000, "pi_a".into(), now).expect("paid");
    let comp = order
        .compensate("stripe", 2000, "pi_b".into(), now)
        .expect("compensation");
    assert_eq!((order.captured, order.refunded), (4000, 2000));
    assert_eq!(order.settle_refund(comp.id, false, now), Ok(true));
    assert_eq!(
        (order.captured, order.refunded),
        (2000, 0),
        "the refused compensation left the books"
    );
    assert_eq!(
        order.payments[1].status,
        keel_orders::order::COMPENSATION_FAILED
    );
    assert_eq!(order.payment_status, PaymentStatus::Paid);
    let refund = order
        .refund(&RefundRequest::Amount(2000), None, now)
        .expect("the order's own payment");
    assert_eq!(
        refund.status,
        RefundStatus::Pending,
        "through the provider, never done on Keel's word"
    );
    assert!(
        order.refund(&RefundRequest::Amount(1), None, now).is_err(),
        "nothing more to refund"
    );
}
