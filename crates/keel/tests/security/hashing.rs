//! Finding 4: password hashing (argon2id, 19 MiB each) runs under an exact concurrency bound
//! with an exact queue wait, so a burst of unauthenticated sign-ups cannot take the node's
//! memory or every core; what cannot get a place in time is a 503 `overloaded` problem, and
//! the cheap checks (email taken, password policy) answer before any hashing.

use futures_util::future::join_all;
use keel_testkit::{Backend, backend_tests, spawn_app_with};

/// The peak resident memory of this process (the app runs inside it), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

backend_tests! {
    async fn two_hundred_parallel_sign_ups_neither_exhaust_memory_nor_queue_without_bound(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            // A short queue, so this burst certainly finds every place taken.
            c.auth.hash_queue_wait_ms = 100;
        })
        .await;
        let (_, pk) = app.shop_with_storefront("burst").await;
        let taken = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "taken@burst.test", "password": "saffron-glacier-tulip-8832"})).await;
        assert_eq!(taken.status(), 201);
        let body = |i: usize| match i % 10 {
            // An email that exists, and a password the policy refuses: answered without hashing.
            0 => serde_json::json!({"email": "taken@burst.test", "password": "saffron-glacier-tulip-8832"}),
            1 => serde_json::json!({"email": format!("weak{i}@burst.test"), "password": "password1234"}),
            _ => serde_json::json!({"email": format!("new{i}@burst.test"), "password": "saffron-glacier-tulip-8832"}),
        };
        let answers = join_all((0..200).map(|i| {
            let (app, pk) = (&app, pk.clone());
            let b = body(i);
            async move { (i, app.store_post(&pk, "/v1/store/customers", b).await) }
        }))
        .await;
        let mut overloaded = 0;
        for (i, res) in answers {
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").is_some();
            match (i % 10, status) {
                (0, 409) | (1, 422) | (_, 201) => {}
                (n, 503) if n >= 2 => {
                    assert!(retry_after, "503 carries Retry-After");
                    keel_testkit::assert_problem(res, 503, "overloaded").await;
                    overloaded += 1;
                }
                other => panic!("request {i}: unexpected {other:?}"),
            }
        }
        assert!(overloaded > 0, "the burst met the bound");
        let peak = peak_rss_kib();
        assert!(peak < 150 * 1024, "peak RSS {peak} KiB");
    }
}
