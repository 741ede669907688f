//! Standard Webhooks signing: `cargo bench -p keel-webhooks --bench signing`.
//! One signature over a 1 KiB body, and the header with two live secrets (rotation overlap).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_webhooks::signing::{SigningKey, signature_header};

fn signing(c: &mut Criterion) {
    let key = SigningKey::from_bytes(vec![7; 24]);
    let old = SigningKey::from_bytes(vec![9; 24]);
    let body = vec![b'x'; 1024];
    c.bench_function("sign 1 KiB", |b| {
        b.iter(|| {
            key.sign(
                black_box("msg_01JABCDEF"),
                black_box(1_800_000_000),
                black_box(&body),
            )
        });
    });
    let keys = [key, old];
    c.bench_function("signature header, 2 secrets, 1 KiB", |b| {
        b.iter(|| signature_header(black_box(&keys), "msg_01JABCDEF", 1_800_000_000, &body));
    });
}

criterion_group!(benches, signing);
criterion_main!(benches);
