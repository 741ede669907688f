//! The exact arithmetic on the checkout path: `cargo bench -p keel-orders --bench pricing`.
//!
//! - pricing a cart of 10 and of 100 lines (percent discount allocated by largest remainder,
//!   per-line tax rounded half to even, taxable shipping);
//! - largest-remainder allocation of an amount over 100 weights;
//! - `Money` checked addition and multiplication.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_kernel::money::{Currency, Money};
use keel_orders::{
    exact::{Percent, allocate},
    pricing::{Discount, LineInput, PricingInput, ShippingInput, price},
};

fn cart(lines: i64) -> PricingInput {
    PricingInput {
        lines: (0..lines)
            .map(|i| LineInput {
                unit_price: 1_999 + i * 37,
                quantity: 1 + i % 3,
            })
            .collect(),
        discount: Discount::Percent(Percent::parse("12.5").expect("a percent")),
        shipping: Some(ShippingInput {
            amount: 795,
            free_over: Some(1_000_000),
        }),
        tax_rate: Percent::parse("8.875").expect("a percent"),
        shipping_taxable: true,
        tax_inclusive: false,
    }
}

fn pricing(c: &mut Criterion) {
    let mut g = c.benchmark_group("price");
    for n in [10, 100] {
        let input = cart(n);
        g.bench_function(format!("{n} lines"), |b| {
            b.iter(|| price(black_box(&input)).expect("in range"));
        });
    }
    g.finish();
    let weights: Vec<i64> = (1..=100).map(|i| i * 101).collect();
    c.bench_function("allocate 99999 over 100 weights", |b| {
        b.iter(|| allocate(black_box(99_999), black_box(&weights)).expect("in range"));
    });
}

fn money(c: &mut Criterion) {
    let usd = Currency::parse("USD").expect("USD");
    let (a, b) = (Money::new(123_456, usd), Money::new(789, usd));
    c.bench_function("money checked_add", |bench| {
        bench.iter(|| black_box(a).checked_add(black_box(b)).expect("in range"));
    });
    c.bench_function("money checked_mul", |bench| {
        bench.iter(|| black_box(a).checked_mul(black_box(999)).expect("in range"));
    });
}

criterion_group!(benches, pricing, money);
criterion_main!(benches);
