//! What authentication costs on this machine: `cargo bench -p keel-identity --bench auth`.
//!
//! - argon2id hash and verify (m = 19456 KiB, t = 2, p = 1): the CPU price of every login,
//!   setup and password change, and of the dummy verification for unknown accounts;
//! - EdDSA access-token sign and verify (verify runs on every authenticated request);
//! - TOTP verification over the ±1 step window.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_identity::domain::{
    jwt::{Claims, PrincipalKind, SigningKey, Verifier},
    password::{NewPassword, PasswordHasher},
    totp::{self, TotpSecret},
};
use keel_kernel::TenantId;

const NOW: i64 = 1_800_000_000;

fn passwords(c: &mut Criterion) {
    let hasher = PasswordHasher::default();
    let pw = NewPassword::parse("plum-harbor-cinder-77-lantern", "owner@bench.test", "Bench")
        .expect("strong");
    let stored = hasher.hash(&pw).expect("hash");
    let mut g = c.benchmark_group("argon2id");
    g.sample_size(20);
    g.bench_function("hash", |b| {
        b.iter(|| hasher.hash(black_box(&pw)).expect("hash"));
    });
    g.bench_function("verify", |b| {
        b.iter(|| hasher.verify(black_box("plum-harbor-cinder-77-lantern"), &stored));
    });
    g.finish();
}

fn tokens(c: &mut Criterion) {
    let key = SigningKey::generate("k1");
    let claims = Claims {
        iss: "keel".into(),
        aud: "keel-admin".into(),
        sub: "usr_0000000000000000000000000".into(),
        tid: TenantId::new(),
        kind: PrincipalKind::Staff,
        scope: "orders:read orders:write catalog:read catalog:write customers:read".into(),
        sid: "ses_0000000000000000000000000".into(),
        jti: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        iat: NOW,
        exp: NOW + 900,
    };
    let token = key.sign(&claims);
    let verifier = Verifier {
        issuer: "keel".into(),
        audience: "keel-admin".into(),
        keys: vec![key.public()],
        leeway_seconds: 30,
    };
    let mut g = c.benchmark_group("access_token");
    g.bench_function("sign", |b| b.iter(|| key.sign(black_box(&claims))));
    g.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), NOW).expect("valid"));
    });
    g.finish();
}

fn totp_codes(c: &mut Criterion) {
    let secret = TotpSecret::generate();
    let code = totp::code_at(&secret, NOW);
    c.bench_function("totp/verify", |b| {
        b.iter(|| totp::verify(&secret, black_box(&code), NOW, None));
    });
}

criterion_group!(benches, passwords, tokens, totp_codes);
criterion_main!(benches);
