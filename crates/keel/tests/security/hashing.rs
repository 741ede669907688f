//! Finding 4: password hashing (argon2id, 19 MiB each) runs under an exact concurrency bound
//! with an exact queue wait, so a burst of unauthenticated sign-ups cannot take the node's
//! memory or every core; what cannot get a place in time is a 503 `overloaded` problem, the
//! cheap checks (email taken, password policy) answer before any hashing, and one client
//! address never holds more than its share of the places.

use futures_util::future::join_all;
use keel_testkit::{Backend, TestApp, backend_tests, spawn_app_with};

/// The peak resident memory of this process (the app runs inside it), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A sign-up at `pk` claiming to come from `from` (the test client is a trusted proxy).
async fn sign_up(
    app: &TestApp,
    pk: &str,
    body: serde_json::Value,
    from: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/store/customers"))
        .header("keel-publishable-key", pk)
        .header("x-forwarded-for", from)
        .json(&body)
        .send()
        .await
        .expect("sign-up reaches the server")
}

fn behind_a_proxy(c: &mut keel::config::RawConfig) {
    c.trusted_proxies = "127.0.0.1/32,::1/128".into();
}

backend_tests! {
    async fn two_hundred_parallel_sign_ups_neither_exhaust_memory_nor_queue_without_bound(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            behind_a_proxy(c);
            // A short queue, so this burst certainly finds every place taken.
            c.auth.hash_queue_wait_ms = 100;
        })
        .await;
        let (_, pk) = app.shop_with_storefront("burst").await;
        let taken = sign_up(&app, &pk, serde_json::json!({"email": "taken@burst.test", "password": "saffron-glacier-tulip-8832"}), "10.9.9.9").await;
        assert_eq!(taken.status(), 201);
        let body = |i: usize| match i % 10 {
            // An email that exists, and a password the policy refuses: answered without hashing.
            0 => serde_json::json!({"email": "taken@burst.test", "password": "saffron-glacier-tulip-8832"}),
            1 => serde_json::json!({"email": format!("weak{i}@burst.test"), "password": "password1234"}),
            _ => serde_json::json!({"email": format!("new{i}@burst.test"), "password": "saffron-glacier-tulip-8832"}),
        };
        // Two hundred clients at once, each from its own address.
        let answers = join_all((0..200).map(|i| {
            let (app, pk) = (&app, pk.clone());
            let (b, from) = (body(i), format!("10.0.{}.{}", i / 200, i % 200));
            async move { (i, sign_up(app, &pk, b, &from).await) }
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

    async fn one_address_flooding_password_work_leaves_a_place_for_everyone_else(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), behind_a_proxy).await;
        let (_, pk) = app.shop_with_storefront("flood").await;
        let flood = (0..20).map(|i| {
            let (app, pk) = (&app, pk.clone());
            async move {
                sign_up(app, &pk, serde_json::json!({"email": format!("bot{i}@flood.test"), "password": "saffron-glacier-tulip-8832"}), "203.0.113.66").await
            }
        });
        let other = sign_up(&app, &pk, serde_json::json!({"email": "ann@flood.test", "password": "saffron-glacier-tulip-8832"}), "198.51.100.7");
        let (flooded, other) = futures_util::join!(join_all(flood), other);
        assert_eq!(other.status(), 201, "another client is served during the flood");
        let refused = flooded.iter().filter(|r| r.status() == 503).count();
        let served = flooded.iter().filter(|r| r.status() == 201).count();
        assert!(served >= 1 && refused >= 1, "served {served}, refused {refused}");
        assert_eq!(served + refused, 20);
    }
}
