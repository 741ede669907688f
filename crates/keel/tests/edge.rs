//! The edge's rate limits over real HTTP, once per backend (issue 23, ADR 0035): exact GCRA
//! decisions per shop and client address (behind a trusted proxy, per shopper), per cart for
//! promotion codes, the IETF `RateLimit-Policy`/`RateLimit` headers on every limited answer,
//! and `429 rate_limited` with `Retry-After` that does nothing.

use std::time::Duration;

use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{Shop, json, new_cart, shop, shop as shop_fn, store},
    spawn_app_with,
};
use reqwest::{Method, StatusCode};

async fn app_with(
    backend: Backend,
    configure: impl FnOnce(&mut keel::config::RawConfig),
) -> TestApp {
    spawn_app_with(
        backend,
        utoipa_axum::router::OpenApiRouter::new(),
        configure,
    )
    .await
}

fn limit(interval_ms: u64, burst: u32) -> keel::config::RawLimit {
    keel::config::RawLimit { interval_ms, burst }
}

async fn create_cart(app: &TestApp, shop: &Shop, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/v1/store/carts"))
        .header("keel-publishable-key", &shop.pk)
        .json(&serde_json::json!({"currency": "USD"}));
    if let Some(addr) = forwarded_for {
        req = req.header("x-forwarded-for", addr);
    }
    req.send().await.expect("send")
}

/// The item of `policy` in a `RateLimit-Policy` or `RateLimit` list.
fn item(list: &str, policy: &str) -> String {
    let prefix = format!("\"{policy}\";");
    list.split(", ")
        .find(|i| i.starts_with(&prefix))
        .unwrap_or_default()
        .to_owned()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Carts the shop holds, by the staff's count of its events (a refused request made none).
async fn carts_created(app: &TestApp, shop: &Shop) -> usize {
    let events = json(
        app.get_as(
            "/v1/admin/events?type=cart.created&limit=100",
            &shop.owner.access_token,
        )
        .await,
    )
    .await;
    events["data"].as_array().map_or(0, Vec::len)
}

/// A second node of `app`: the same settings (database, master key, Redis), its own port.
async fn second_node(app: &TestApp) -> String {
    let node = keel::App::build(&app.settings, false)
        .await
        .expect("a second node");
    let url = format!("http://{}", node.local_addr());
    tokio::spawn(node.run_until_stopped(std::future::pending()));
    url
}

async fn create_cart_at(app: &TestApp, base: &str, shop: &Shop) -> reqwest::Response {
    app.client
        .post(format!("{base}/v1/store/carts"))
        .header("keel-publishable-key", &shop.pk)
        .json(&serde_json::json!({"currency": "USD"}))
        .send()
        .await
        .expect("send")
}

fn backend_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("keel_ratelimit_backend_errors_total "))
        .and_then(|v| v.parse().ok())
        .expect("the counter is on /metrics")
}

/// The shop's id, as its owner's `/v1/me` names it.
async fn tenant_of(app: &TestApp, shop: &Shop) -> String {
    json(app.get_as("/v1/me", &shop.owner.access_token).await).await["tenant_id"]
        .as_str()
        .expect("tenant id")
        .to_owned()
}

/// `PATCH /v1/admin/settings` with these `rate_limits`, as the shop's owner.
async fn set_limits(app: &TestApp, shop: &Shop, limits: serde_json::Value) -> reqwest::Response {
    app.send_as(
        Method::PATCH,
        "/v1/admin/settings",
        &shop.owner.access_token,
        Some(serde_json::json!({"rate_limits": limits})),
    )
    .await
}

/// The shop's limit of `policy` as its settings show it.
async fn shop_limit(app: &TestApp, shop: &Shop, policy: &str) -> serde_json::Value {
    json(
        app.get_as("/v1/admin/settings", &shop.owner.access_token)
            .await,
    )
    .await["rate_limits"][policy]
        .clone()
}

/// A storefront product read at `shop`.
async fn read(app: &TestApp, shop: &Shop) -> reqwest::Response {
    store(
        app,
        shop,
        None,
        Method::GET,
        "/v1/store/products?currency=USD",
        None,
        None,
    )
    .await
}

/// `keel tenant limits` (the operator's CLI) against the app's database.
async fn operator_limits(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["tenant", "limits"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    app.operator_cli(env!("CARGO_BIN_EXE_keel"), &args).await
}

/// Polls the shop's settings until its limit of `policy` has `burst` (a node reads a shop's
/// limits again within one second of a change made elsewhere), for at most 10 s.
async fn until_burst(app: &TestApp, shop: &Shop, policy: &str, burst: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shop_limit(app, shop, policy).await["burst"] != burst {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never applied the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A route at `path` whose requests hold until released: each request reports its arrival,
/// then waits for a permit of the semaphore.
fn held_route(
    path: &str,
) -> (
    utoipa_axum::router::OpenApiRouter<keel_http::AppState>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    std::sync::Arc<tokio::sync::Semaphore>,
) {
    let (entered, arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let routes = utoipa_axum::router::OpenApiRouter::new().route(
        path,
        axum::routing::get(move || {
            let (tx, gate) = (entered.clone(), gate.clone());
            async move {
                let _ = tx.send(());
                let _held = gate.acquire().await;
                "released"
            }
        }),
    );
    (routes, arrivals, release)
}

backend_tests! {
    /// Acceptance 1 across nodes: two nodes sharing one Redis admit exactly the burst in
    /// total of 50 concurrent requests spread over both, never one more.
    async fn two_nodes_sharing_redis_admit_exactly_the_burst_in_total(backend: Backend) {
        let redis = keel_faults::redis::RedisServer::start().await;
        let url = redis.url();
        let app = app_with(backend, move |raw| {
            raw.limits.cart_create = limit(60_000, 10);
            raw.redis_url = Some(url.into());
        })
        .await;
        let b = second_node(&app).await;
        let shop = shop(&app, "edge-redis", 10).await;
        let bases = [app.base_url.clone(), b];
        let answers = futures_util::future::join_all(
            (0..50).map(|i| create_cart_at(&app, &bases[i % 2], &shop)),
        )
        .await;
        let admitted = answers.iter().filter(|r| r.status() == StatusCode::CREATED).count();
        let refused = answers.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!((admitted, refused), (10, 40), "exactly the burst over both nodes");
        assert_eq!(backend_errors(&app.get("/metrics").await.text().await.expect("metrics")), 0);
        drop(redis);
    }

    /// Acceptance 4: Redis stopped mid-test: requests keep being answered within the exact
    /// timeout, decided in this node's memory, and the backend-error counter moves; Redis
    /// back: decisions are shared again.
    async fn with_redis_gone_the_node_decides_alone_and_shares_again_when_it_is_back(backend: Backend) {
        let mut redis = keel_faults::redis::RedisServer::start().await;
        let url = redis.url();
        let app = app_with(backend, move |raw| {
            raw.limits.cart_create = limit(60_000, 2);
            raw.redis_url = Some(url.into());
        })
        .await;
        let shop = shop(&app, "edge-outage", 10).await;
        for _ in 0..2 {
            assert_eq!(create_cart(&app, &shop, None).await.status(), StatusCode::CREATED);
        }
        assert_problem(create_cart(&app, &shop, None).await, 429, "rate_limited").await;
        redis.stop();
        // This node's memory has not seen the key: its own burst, then refusals.
        for _ in 0..2 {
            assert_eq!(create_cart(&app, &shop, None).await.status(), StatusCode::CREATED);
        }
        assert_problem(create_cart(&app, &shop, None).await, 429, "rate_limited").await;
        let errors = backend_errors(&app.get("/metrics").await.text().await.expect("metrics"));
        assert!(errors >= 3, "{errors}");
        assert_eq!(app.get("/readyz").await.status(), StatusCode::OK, "readiness stays green");
        redis.restart().await;
        // Back (empty): the memory's bucket is spent, so an admission can only be Redis's.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let res = create_cart(&app, &shop, None).await;
            if res.status() == StatusCode::CREATED {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "shared limits never resumed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settled = backend_errors(&app.get("/metrics").await.text().await.expect("metrics"));
        assert_eq!(create_cart(&app, &shop, None).await.status(), StatusCode::CREATED, "Redis's second of two");
        assert_problem(create_cart(&app, &shop, None).await, 429, "rate_limited").await;
        assert_eq!(backend_errors(&app.get("/metrics").await.text().await.expect("metrics")), settled, "no more errors");
    }

    /// Acceptance 5: with the node's in-flight cap at 8 and 8 slow requests holding the
    /// places, the 9th is answered 503 `overloaded` at once; the probes and `/metrics` still
    /// answer; the places come back when the requests end.
    async fn past_the_in_flight_cap_a_request_is_shed_at_once_and_probes_still_answer(backend: Backend) {
        let (routes, mut arrivals, release) = held_route("/v1/test/held");
        let app = spawn_app_with(backend, routes, |raw| raw.max_in_flight = 8).await;
        let held: Vec<_> = (0..8)
            .map(|_| tokio::spawn(app.client.get(app.url("/v1/test/held")).send()))
            .collect();
        for _ in 0..8 {
            arrivals.recv().await.expect("a held request arrived");
        }
        let shed = app.get("/v1/store/products?currency=USD").await;
        assert_eq!(header(&shed, "retry-after"), "1");
        assert_problem(shed, 503, "overloaded").await;
        for probe in ["/livez", "/readyz", "/metrics"] {
            assert_eq!(app.get(probe).await.status(), StatusCode::OK, "{probe} is never shed");
        }
        release.add_permits(8);
        for h in held {
            let res = h.await.expect("join").expect("answered");
            assert_eq!(res.text().await.expect("body"), "released");
        }
        let after = app.get("/v1/store/products?currency=USD").await;
        assert_ne!(after.status(), StatusCode::SERVICE_UNAVAILABLE, "the places came back");
    }

    /// Acceptance 1 and 2 (one node, in memory): a limit with burst 10 admits exactly 10 of
    /// 50 concurrent cart creations; every answer carries the policy and the state; the
    /// refusals are 429 problems with `Retry-After` and made nothing; another shop's bucket
    /// is its own.
    async fn a_burst_of_ten_admits_exactly_ten_of_fifty_and_refusals_do_nothing(backend: Backend) {
        let app = app_with(backend, |raw| raw.limits.cart_create = limit(60_000, 10)).await;
        let shop = shop(&app, "edge-burst", 10).await;
        let before = carts_created(&app, &shop).await;
        let answers = futures_util::future::join_all((0..50).map(|_| create_cart(&app, &shop, None))).await;
        let admitted: Vec<_> = answers.iter().filter(|r| r.status() == StatusCode::CREATED).collect();
        assert_eq!(admitted.len(), 10, "exactly the burst");
        for res in &answers {
            assert_eq!(item(&header(res, "ratelimit-policy"), "cart_create"), "\"cart_create\";q=10;w=600");
        }
        let mut remaining: Vec<String> = admitted.iter().map(|r| item(&header(r, "ratelimit"), "cart_create")).collect();
        remaining.sort();
        let mut expected: Vec<String> = (0..10).map(|r| format!("\"cart_create\";r={r};t=")).collect();
        expected.sort();
        for (got, prefix) in remaining.iter().zip(&expected) {
            assert!(got.starts_with(prefix.as_str()), "{got} / {prefix}");
        }
        let mut refused = 0;
        for res in answers {
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                refused += 1;
                let retry: u64 = header(&res, "retry-after").parse().expect("whole seconds");
                assert!((1..=60).contains(&retry), "{retry}");
                assert!(item(&header(&res, "ratelimit"), "cart_create").starts_with("\"cart_create\";r=0;t="));
                assert_problem(res, 429, "rate_limited").await;
            }
        }
        assert_eq!(refused, 40);
        assert_eq!(carts_created(&app, &shop).await - before, 10, "a refused request made nothing");
        // Another shop, same client address: its own bucket.
        let other = shop_fn(&app, "edge-other", 1).await;
        assert_eq!(create_cart(&app, &other, None).await.status(), StatusCode::CREATED);
    }

    /// After exactly the emission interval one more request is admitted, and only one.
    async fn one_more_is_admitted_after_the_emission_interval(backend: Backend) {
        let app = app_with(backend, |raw| raw.limits.checkout = limit(2_000, 1)).await;
        let shop = shop(&app, "edge-refill", 10).await;
        let cart = new_cart(&app, &shop, "USD").await;
        let path = format!("/v1/store/carts/{}/checkout", cart.id);
        let attempt = |key: &'static str| store(&app, &shop, Some(&cart.secret), Method::POST, &path, None, Some(key));
        // The empty cart's checkout is refused by the handler (409): the limiter admitted it.
        let first = attempt("c-1").await;
        assert_ne!(first.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_problem(attempt("c-2").await, 429, "rate_limited").await;
        // The interval is the behaviour under test: wait it out.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_ne!(attempt("c-3").await.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_problem(attempt("c-4").await, 429, "rate_limited").await;
    }

    /// Promotion codes: per cart, and per client address, separately (guessing codes).
    async fn promotion_attempts_are_limited_per_cart(backend: Backend) {
        let app = app_with(backend, |raw| raw.limits.promotion_cart = limit(60_000, 3)).await;
        let shop = shop(&app, "edge-promo", 10).await;
        let cart = new_cart(&app, &shop, "USD").await;
        let guess = |cart: &keel_testkit::shop::Cart, code: &str| {
            let path = format!("/v1/store/carts/{}/promotions", cart.id);
            let body = serde_json::json!({"code": code});
            let (app, shop, secret) = (&app, &shop, cart.secret.clone());
            async move { store(app, shop, Some(&secret), Method::POST, &path, Some(body), None).await }
        };
        for code in ["GUESS1", "GUESS2", "GUESS3"] {
            assert_ne!(guess(&cart, code).await.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        let fourth = guess(&cart, "GUESS4").await;
        assert_eq!(item(&header(&fourth, "ratelimit-policy"), "promotion_cart"), "\"promotion_cart\";q=3;w=180");
        assert_problem(fourth, 429, "rate_limited").await;
        let another = new_cart(&app, &shop, "USD").await;
        assert_ne!(guess(&another, "GUESS5").await.status(), StatusCode::TOO_MANY_REQUESTS, "another cart's own bucket");
    }

    /// Every storefront read is limited per shop and client address, every staff request per
    /// credential: one token spent leaves another's requests admitted.
    async fn reads_are_limited_per_address_and_staff_requests_per_credential(backend: Backend) {
        let app = app_with(backend, |raw| {
            raw.limits.store_read = limit(60_000, 3);
            raw.limits.admin_read = limit(60_000, 3);
        })
        .await;
        let shop = shop(&app, "edge-classes", 10).await;
        let read = || store(&app, &shop, None, Method::GET, "/v1/store/products?currency=USD", None, None);
        for _ in 0..3 {
            assert_eq!(read().await.status(), StatusCode::OK);
        }
        let refused = read().await;
        assert_eq!(item(&header(&refused, "ratelimit-policy"), "store_read"), "\"store_read\";q=3;w=180");
        assert_problem(refused, 429, "rate_limited").await;
        let (member, member_tokens) = app.member(&shop.owner, "reader@edge.test", "viewer").await;
        let _ = member;
        // The shop's setup made some staff reads with the owner's token already: spend the rest.
        let mut owner_admitted = 0;
        for _ in 0..4 {
            if app.get_as("/v1/admin/orders", &shop.owner.access_token).await.status() == StatusCode::OK {
                owner_admitted += 1;
            }
        }
        assert!(owner_admitted <= 3, "{owner_admitted}");
        assert_problem(app.get_as("/v1/admin/orders", &shop.owner.access_token).await, 429, "rate_limited").await;
        assert_eq!(app.get_as("/v1/admin/orders", &member_tokens.access_token).await.status(), StatusCode::OK, "another credential's own bucket");
    }

    /// Keys an attacker can vary are no way around a limit: the same token however its scheme
    /// is written; the same cart however its id is spelled; any number of made-up shops from
    /// one address; customer sign-ups are in the auth class. And a stranger without a cart's
    /// secret cannot spend the shopper's promotion attempts.
    async fn varied_keys_do_not_get_around_the_limits(backend: Backend) {
        let app = app_with(backend, |raw| {
            raw.limits.admin_read = limit(60_000, 3);
            raw.limits.promotion_cart = limit(60_000, 2);
            raw.limits.auth = limit(60_000, 1_000);
        })
        .await;
        let shop = shop(&app, "edge-vary", 10).await;
        let token = shop.owner.access_token.clone();
        let mut admitted = 0;
        for scheme in ["Bearer", "bearer", "BEARER", "Bearer ", "bEaReR"] {
            let res = app.client.get(app.url("/v1/admin/orders")).header("authorization", format!("{scheme} {token}")).send().await.expect("send");
            if res.status() == StatusCode::OK {
                admitted += 1;
            }
        }
        assert!(admitted <= 3, "one token, one bucket: {admitted} admitted");

        let cart = new_cart(&app, &shop, "USD").await;
        let stranger = new_cart(&app, &shop, "USD").await;
        let guess = |id: String, secret: String| {
            let (app, shop) = (&app, &shop);
            async move {
                store(app, shop, Some(&secret), Method::POST, &format!("/v1/store/carts/{id}/promotions"), Some(serde_json::json!({"code": "NOPE"})), None).await.status()
            }
        };
        // The stranger hammers the shopper's cart with its own secret: its own bucket.
        for _ in 0..3 {
            guess(cart.id.clone(), stranger.secret.clone()).await;
        }
        let encoded: String = cart.id.bytes().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "%{b:02X}");
            s
        });
        let lower_hex: String = cart.id.bytes().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "%{b:02x}");
            s
        });
        let spellings = [cart.id.clone(), encoded, lower_hex];
        let statuses: Vec<StatusCode> = futures_util::future::join_all(spellings.iter().map(|id| guess(id.clone(), cart.secret.clone()))).await;
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 1, "the shopper's two attempts, whatever the spelling: {statuses:?}");

        // A customer's sign-up is held to the auth class (per address), not the storefront's
        // looser writes.
        let signup = store(&app, &shop, None, Method::POST, "/v1/store/customers", Some(serde_json::json!({"email": "vary@edge.test", "password": "correct-horse-battery-staple-9"})), None).await;
        assert_eq!(item(&header(&signup, "ratelimit-policy"), "auth"), "\"auth\";q=1000;w=60000");
        assert_eq!(item(&header(&signup, "ratelimit-policy"), "store_write"), "");
    }

    /// One client address is held to its ceiling whatever shop keys it makes up.
    async fn made_up_shop_keys_do_not_escape_the_address_ceiling(backend: Backend) {
        let app = app_with(backend, |raw| raw.limits.client = limit(60_000, 5)).await;
        let mut limited = 0;
        for i in 0..8 {
            let res = app.client.get(app.url("/v1/store/products?currency=USD")).header("keel-publishable-key", format!("pk_madeup{i}_x")).send().await.expect("send");
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                limited += 1;
            }
        }
        assert_eq!(limited, 3, "5 of 8 from one address, whatever the key");
    }

    /// Behind a trusted proxy each shopper (the forwarded address) has a bucket of its own,
    /// and an IPv6 shopper counts by its /64.
    async fn behind_a_trusted_proxy_each_shopper_is_limited_not_the_proxy(backend: Backend) {
        let app = app_with(backend, |raw| {
            raw.limits.cart_create = limit(60_000, 2);
            raw.trusted_proxies = "127.0.0.1/32".into();
        })
        .await;
        let shop = shop(&app, "edge-proxy", 10).await;
        for _ in 0..2 {
            assert_eq!(create_cart(&app, &shop, Some("203.0.113.7")).await.status(), StatusCode::CREATED);
        }
        assert_problem(create_cart(&app, &shop, Some("203.0.113.7")).await, 429, "rate_limited").await;
        assert_eq!(create_cart(&app, &shop, Some("198.51.100.9")).await.status(), StatusCode::CREATED, "another shopper");
        for addr in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
            assert_eq!(create_cart(&app, &shop, Some(addr)).await.status(), StatusCode::CREATED);
        }
        assert_problem(create_cart(&app, &shop, Some("2001:db8:1:2:abcd::1")).await, 429, "rate_limited").await;
        assert_eq!(create_cart(&app, &shop, Some("2001:db8:1:3::1")).await.status(), StatusCode::CREATED, "another /64");
    }

    /// Acceptance 3: a shop's owner tightens a limit within its ceiling (above it: 422, nothing
    /// changed); the operator's ceiling (`keel tenant limits`) replaces the default for that
    /// shop and bounds its owner; one shop spending its whole-shop limit leaves another's
    /// requests admitted.
    async fn shop_overrides_hold_within_operator_ceilings_and_shops_are_apart(backend: Backend) {
        let app = app_with(backend, |raw| raw.limits.cart_create = limit(60_000, 5)).await;
        let a = shop(&app, "edge-own-a", 10).await;
        let b = shop(&app, "edge-own-b", 10).await;

        let res = set_limits(&app, &a, serde_json::json!({"cart_create": {"interval_ms": 60_000, "burst": 2}})).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            json(res).await["rate_limits"]["cart_create"],
            serde_json::json!({"interval_ms": 60_000, "burst": 2, "ceiling": {"interval_ms": 60_000, "burst": 5}, "overridden": true})
        );
        for _ in 0..2 {
            assert_eq!(create_cart(&app, &a, None).await.status(), StatusCode::CREATED);
        }
        let refused = create_cart(&app, &a, None).await;
        assert_eq!(item(&header(&refused, "ratelimit-policy"), "cart_create"), "\"cart_create\";q=2;w=120");
        assert_problem(refused, 429, "rate_limited").await;
        for _ in 0..3 {
            assert_eq!(create_cart(&app, &b, None).await.status(), StatusCode::CREATED, "the other shop keeps the default");
        }

        // Above the ceiling, an unknown policy, a zero: 422 naming each, nothing changed.
        let above = set_limits(&app, &a, serde_json::json!({"cart_create": {"interval_ms": 60_000, "burst": 6}})).await;
        let body = assert_problem(above, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["pointer"], "/rate_limits/cart_create");
        let unknown = set_limits(&app, &a, serde_json::json!({"client": {"interval_ms": 1, "burst": 1}})).await;
        assert_problem(unknown, 422, "validation_failed").await;
        let bad = set_limits(&app, &a, serde_json::json!({"checkout": {"interval_ms": 0, "burst": 1}, "store_read": {"interval_ms": 1, "burst": 0}})).await;
        let body = assert_problem(bad, 422, "validation_failed").await;
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(2), "{body}");
        // Staff limits are the operator's: an owner cannot lock the staff out.
        let staff = set_limits(&app, &a, serde_json::json!({"admin_write": {"interval_ms": 600_000, "burst": 1}})).await;
        assert_eq!(assert_problem(staff, 422, "validation_failed").await["errors"][0]["pointer"], "/rate_limits/admin_write");
        // All or nothing: a refused limit changes no other setting of the same request.
        let mixed = app
            .send_as(Method::PATCH, "/v1/admin/settings", &a.owner.access_token, Some(serde_json::json!({"show_stock_counts": true, "rate_limits": {"cart_create": {"interval_ms": 60_000, "burst": 6}}})))
            .await;
        assert_problem(mixed, 422, "validation_failed").await;
        let now = json(app.get_as("/v1/admin/settings", &a.owner.access_token).await).await;
        assert_eq!(now["show_stock_counts"], false, "nothing changed");
        let faster = set_limits(&app, &a, serde_json::json!({"cart_create": {"interval_ms": 59_999, "burst": 2}})).await;
        assert_problem(faster, 422, "validation_failed").await;
        assert_eq!(shop_limit(&app, &a, "cart_create").await["burst"], 2, "nothing changed");

        // The operator raises shop B's ceiling: B may make 8 carts, its owner no more.
        let b_id = tenant_of(&app, &b).await;
        let shown = operator_limits(&app, &[&b_id, "--ceiling", "cart_create=60000/8"]).await;
        assert_eq!(shown["rate_limits"]["cart_create"]["effective"], serde_json::json!({"interval_ms": 60_000, "burst": 8}));
        until_burst(&app, &b, "cart_create", 8).await;
        for _ in 0..5 {
            assert_eq!(create_cart(&app, &b, None).await.status(), StatusCode::CREATED);
        }
        let refused = create_cart(&app, &b, None).await;
        assert_eq!(item(&header(&refused, "ratelimit-policy"), "cart_create"), "\"cart_create\";q=8;w=480");
        assert_problem(refused, 429, "rate_limited").await;
        assert_problem(set_limits(&app, &b, serde_json::json!({"cart_create": {"interval_ms": 60_000, "burst": 9}})).await, 422, "validation_failed").await;
        // Lowered below the owner's override, the ceiling holds and the override is ignored.
        let a_id = tenant_of(&app, &a).await;
        let shown = operator_limits(&app, &[&a_id, "--ceiling", "cart_create=60000/1"]).await;
        assert_eq!(shown["rate_limits"]["cart_create"]["effective"]["burst"], 1);
        until_burst(&app, &a, "cart_create", 1).await;
        assert_eq!(shop_limit(&app, &a, "cart_create").await["overridden"], false);

        // Shop A spends its whole-shop limit: its next request is refused by it, B's is not.
        assert_eq!(set_limits(&app, &a, serde_json::json!({"shop": {"interval_ms": 60_000, "burst": 10}})).await.status(), StatusCode::OK);
        let mut admitted = 0;
        let refused = loop {
            let res = read(&app, &a).await;
            if res.status() != StatusCode::OK {
                break res;
            }
            admitted += 1;
            assert!(admitted <= 10, "the shop's limit never held");
        };
        assert_eq!(item(&header(&refused, "ratelimit-policy"), "shop"), "\"shop\";q=10;w=600");
        assert_problem(refused, 429, "rate_limited").await;
        assert_eq!(read(&app, &b).await.status(), StatusCode::OK, "another shop is untouched");
    }

    /// Load shedding per shop: with its cap at 2 and two slow requests of shop A holding the
    /// places, A's third is 503 `overloaded` at once while shop B is served; the places come
    /// back when the requests end.
    async fn past_a_shops_in_flight_cap_only_that_shop_is_shed(backend: Backend) {
        let (routes, mut arrivals, release) = held_route("/v1/store/test-held");
        let app = spawn_app_with(backend, routes, |raw| raw.max_in_flight_per_shop = 2).await;
        let a = shop(&app, "edge-shed-a", 1).await;
        let b = shop(&app, "edge-shed-b", 1).await;
        let held = |s: &Shop| tokio::spawn(app.client.get(app.url("/v1/store/test-held")).header("keel-publishable-key", &s.pk).send());
        let holding = [held(&a), held(&a)];
        for _ in 0..2 {
            arrivals.recv().await.expect("a held request arrived");
        }
        let shed = store(&app, &a, None, Method::GET, "/v1/store/products?currency=USD", None, None).await;
        assert_eq!(header(&shed, "retry-after"), "1");
        assert_problem(shed, 503, "overloaded").await;
        assert_eq!(store(&app, &b, None, Method::GET, "/v1/store/products?currency=USD", None, None).await.status(), StatusCode::OK, "another shop is served");
        release.add_permits(2);
        for h in holding {
            assert_eq!(h.await.expect("join").expect("answered").text().await.expect("body"), "released");
        }
        assert_eq!(store(&app, &a, None, Method::GET, "/v1/store/products?currency=USD", None, None).await.status(), StatusCode::OK, "the places came back");
    }

    /// Acceptance 6 (CORS): a publishable key's exact origins are granted on preflights and
    /// answers, any other origin gets no grant (and another key's origins count for nothing);
    /// staff routes grant only the operator's admin console origin, with credentials.
    async fn cors_grants_only_exact_allowed_origins(backend: Backend) {
        let app = app_with(backend, |raw| raw.cors.admin_origins = "https://admin.example.com".into()).await;
        let shop = shop(&app, "edge-cors", 1).await;
        let t = &shop.owner.access_token;
        let create = |body: serde_json::Value| app.send_as(Method::POST, "/v1/admin/api-keys", t, Some(body));
        for bad in ["*", "https://*.example.com", "http://shop.example.com", "https://shop.example.com/"] {
            let res = create(serde_json::json!({"name": "web", "kind": "publishable", "allowed_origins": [bad]})).await;
            assert_eq!(assert_problem(res, 422, "validation_failed").await["errors"][0]["pointer"], "/allowed_origins/0", "{bad}");
        }
        let secret = create(serde_json::json!({"name": "srv", "scopes": ["orders:read"], "allowed_origins": ["https://shop.example.com"]})).await;
        assert_problem(secret, 422, "validation_failed").await;
        let created = json(create(serde_json::json!({"name": "web", "kind": "publishable", "allowed_origins": ["https://shop.example.com"]})).await).await;
        assert_eq!(created["key"]["allowed_origins"], serde_json::json!(["https://shop.example.com"]));
        let pk = created["secret"].as_str().expect("pk").to_owned();

        let preflight = |path: &'static str, origin: &'static str| {
            app.client
                .request(Method::OPTIONS, app.url(path))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type, keel-publishable-key")
                .send()
        };
        let granted = preflight("/v1/store/carts", "https://shop.example.com").await.expect("send");
        assert_eq!(granted.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&granted, "access-control-allow-origin"), "https://shop.example.com");
        assert_eq!(header(&granted, "access-control-allow-credentials"), "", "no credentials on the storefront");
        assert!(header(&granted, "access-control-allow-methods").contains("POST"));
        assert!(header(&granted, "access-control-allow-headers").contains("Keel-Publishable-Key"));
        assert_eq!(header(&granted, "access-control-max-age"), "600");
        let other = preflight("/v1/store/carts", "https://evil.example.com").await.expect("send");
        assert_eq!(header(&other, "access-control-allow-origin"), "", "no grant for another origin");

        let read = |key: String, origin: &'static str| {
            app.client
                .get(app.url("/v1/store/products?currency=USD"))
                .header("keel-publishable-key", key)
                .header("origin", origin)
                .send()
        };
        let ok = read(pk.clone(), "https://shop.example.com").await.expect("send");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header(&ok, "access-control-allow-origin"), "https://shop.example.com");
        assert!(header(&ok, "access-control-expose-headers").contains("RateLimit"));
        assert!(ok.headers().get_all("vary").iter().any(|v| v.to_str().is_ok_and(|v| v.contains("Origin"))));
        let evil = read(pk.clone(), "https://evil.example.com").await.expect("send");
        assert_eq!(evil.status(), StatusCode::OK, "served, but no page of that origin may read it");
        assert_eq!(header(&evil, "access-control-allow-origin"), "");
        let other_key = read(shop.pk.clone(), "https://shop.example.com").await.expect("send");
        assert_eq!(header(&other_key, "access-control-allow-origin"), "", "origins are per key");

        let admin = preflight("/v1/admin/orders", "https://admin.example.com").await.expect("send");
        assert_eq!(header(&admin, "access-control-allow-origin"), "https://admin.example.com");
        assert_eq!(header(&admin, "access-control-allow-credentials"), "true");
        let storefront_origin = preflight("/v1/admin/orders", "https://shop.example.com").await.expect("send");
        assert_eq!(header(&storefront_origin, "access-control-allow-origin"), "", "a storefront origin is no admin console");
        let staff = app.client.get(app.url("/v1/admin/orders")).bearer_auth(t).header("origin", "https://admin.example.com").send().await.expect("send");
        assert_eq!(staff.status(), StatusCode::OK);
        assert_eq!(header(&staff, "access-control-allow-origin"), "https://admin.example.com");
        assert_eq!(header(&staff, "access-control-allow-credentials"), "true");
        let elsewhere = app.client.get(app.url("/v1/admin/orders")).bearer_auth(t).header("origin", "https://shop.example.com").send().await.expect("send");
        assert_eq!(header(&elsewhere, "access-control-allow-origin"), "");
    }
}
