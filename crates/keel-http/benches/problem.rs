//! RFC 9457 problem responses: `cargo bench -p keel-http --bench problem`.
//! A 422 with three field errors and a 404, each turned into a response (JSON serialised).

use std::hint::black_box;

use axum::response::IntoResponse as _;
use criterion::{Criterion, criterion_group, criterion_main};
use keel_http::problem::{FieldError, Problem, ProblemKind};

fn problems(c: &mut Criterion) {
    let errors: Vec<FieldError> = (0..3)
        .map(|i| FieldError {
            pointer: format!("/variants/{i}/prices/0/amount"),
            message: "must be a whole number of minor units, 0 or more".into(),
        })
        .collect();
    c.bench_function("422 with 3 field errors into a response", |b| {
        b.iter(|| Problem::validation(black_box(errors.clone())).into_response());
    });
    c.bench_function("404 into a response", |b| {
        b.iter(|| {
            Problem::new(ProblemKind::NOT_FOUND, black_box("No such product.")).into_response()
        });
    });
}

criterion_group!(benches, problems);
criterion_main!(benches);
