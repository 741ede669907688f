//! Realtime delivery over real HTTP, once per backend (ADR 0040): Server-Sent Events streams
//! of committed events that resume with `Last-Event-ID` without gap or repeat, heartbeats at
//! the exact interval, exact caps per shop, slow consumers cut off at the exact buffer while
//! others keep receiving, and an order's stream only for its own shopper.

use std::time::{Duration, Instant};

use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{self, admin, json},
    spawn_app_with,
    sse::{Frame, SseStream},
};
use reqwest::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn app(backend: Backend, configure: impl FnOnce(&mut keel::config::RawConfig)) -> TestApp {
    spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
        // Relays promptly when woken; the interval only matters when nothing wakes it.
        raw.webhooks.relay_interval_ms = 50;
        configure(raw);
    })
    .await
}

async fn stream(app: &TestApp, token: &str, query: &str, last: Option<&str>) -> SseStream {
    let mut req = app
        .client
        .get(app.url(&format!("/v1/admin/events/stream{query}")))
        .bearer_auth(token);
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    SseStream::open(req.send().await.expect("the stream opens")).await
}

/// Creates `n` products in one batch (one `product.created` event each, in one commit).
async fn products(app: &TestApp, token: &str, prefix: &str, n: usize) {
    let items: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "title": format!("Item {i}"), "handle": format!("{prefix}-{i}"), "status": "active",
                "variants": [{"sku": format!("{prefix}-{i}"), "prices": [{"amount": 100, "currency": "USD"}]}]
            })
        })
        .collect();
    let res = admin(
        app,
        token,
        Method::POST,
        "/v1/admin/products/batch",
        Some(serde_json::json!({ "products": items })),
        None,
    )
    .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// The shop's `product.created` event ids in log order.
async fn logged(app: &TestApp, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/events?type=product.created&limit=100&cursor={c}"),
            None => "/v1/admin/events?type=product.created&limit=100".to_owned(),
        };
        let page = json(app.get_as(&path, token).await).await;
        for e in page["data"].as_array().expect("events") {
            ids.push(e["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

async fn read_ids(s: &mut SseStream, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let (id, kind, data) = s.event().await.expect("the stream goes on");
        assert_eq!(kind, "product.created", "{data}");
        assert_eq!(data["id"], id, "the data is the event as the log shows it");
        ids.push(id);
    }
    ids
}

backend_tests! {
    async fn a_resumed_stream_gets_exactly_the_missed_events_in_order_then_live_ones(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let (_, owner) = app.owner_with_tokens("sse-resume").await;
        let token = &owner.access_token;
        let mut s = stream(&app, token, "?type=product.*", None).await;
        products(&app, token, "first", 1).await;
        let first = read_ids(&mut s, 1).await;
        drop(s);

        // While disconnected: 50 events.
        products(&app, token, "missed", 50).await;
        let mut s = stream(&app, token, "?type=product.*", Some(&first[0])).await;
        let resumed = read_ids(&mut s, 50).await;
        let log = logged(&app, token).await;
        assert_eq!(log.len(), 51);
        assert_eq!(resumed, log[1..], "exactly the missed events, in order");

        // Then live, nothing repeated.
        products(&app, token, "live", 1).await;
        let live = read_ids(&mut s, 1).await;
        assert_eq!(live[0], logged(&app, token).await[51]);
    }

    async fn a_resume_replays_at_most_the_exact_count_and_the_next_resume_goes_on(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.max_replay = 30).await;
        let (_, owner) = app.owner_with_tokens("sse-replay").await;
        let token = &owner.access_token;
        // A resume replays relayed events (in the relay's order); a live stream that got all
        // of them shows they were relayed.
        let mut live = stream(&app, token, "?type=product.created", None).await;
        products(&app, token, "old", 70).await;
        let log = logged(&app, token).await;
        assert_eq!(read_ids(&mut live, 70).await, log);
        drop(live);
        let mut s = stream(&app, token, "?type=product.created", Some(&log[0])).await;
        let first = read_ids(&mut s, 30).await;
        assert_eq!(s.event().await, None, "the stream ends after the exact replay count");
        let mut s = stream(&app, token, "?type=product.created", Some(&first[29])).await;
        let second = read_ids(&mut s, 30).await;
        let mut s = stream(&app, token, "?type=product.created", Some(&second[29])).await;
        let third = read_ids(&mut s, 9).await;
        assert_eq!([first, second, third].concat(), log[1..]);
    }

    async fn heartbeats_follow_the_exact_silence(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.heartbeat_ms = 300).await;
        let (_, owner) = app.owner_with_tokens("sse-beat").await;
        let opened = Instant::now();
        // A type no event has: the setup's own events may still be on their way.
        let mut s = stream(&app, &owner.access_token, "?type=quiet.", None).await;
        assert_eq!(s.frame().await, Some(Frame::Comment("heartbeat".into())));
        assert!(
            opened.elapsed() >= Duration::from_millis(300),
            "not before the exact interval"
        );
        assert_eq!(s.frame().await, Some(Frame::Comment("heartbeat".into())));
    }

    async fn a_bad_last_event_id_changes_nothing_and_says_why(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let (_, owner) = app.owner_with_tokens("sse-bad").await;
        let res = app
            .client
            .get(app.url("/v1/admin/events/stream"))
            .bearer_auth(&owner.access_token)
            .header("last-event-id", "42; DROP TABLE")
            .send()
            .await
            .expect("answer");
        assert_problem(res, 400, "bad_request").await;
        let res = app.get_as("/v1/admin/events/stream?type=Order", &owner.access_token).await;
        assert_problem(res, 400, "bad_request").await;
    }

    async fn the_stream_needs_the_event_log_permission(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let (_, owner) = app.owner_with_tokens("sse-perm").await;
        let (_, staff) = app.member(&owner, "staff@example.test", "staff").await;
        let res = app.get_as("/v1/admin/events/stream", &staff.access_token).await;
        assert_problem(res, 403, "forbidden").await;
        let res = app.get("/v1/admin/events/stream").await;
        assert_problem(res, 401, "unauthorized").await;
    }

    async fn connections_per_shop_are_capped_exactly(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.max_connections_per_shop = 2).await;
        let (_, a) = app.owner_with_tokens("sse-cap-a").await;
        let (_, b) = app.owner_with_tokens("sse-cap-b").await;
        let _one = stream(&app, &a.access_token, "", None).await;
        let _two = stream(&app, &a.access_token, "", None).await;
        let res = app.get_as("/v1/admin/events/stream", &a.access_token).await;
        assert_problem(res, 429, "too_many_connections").await;
        // Another shop is not held back by the first one's streams.
        let _other = stream(&app, &b.access_token, "", None).await;
    }

    async fn a_subscriber_that_stops_reading_is_cut_off_while_others_receive_everything(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.buffer = 256).await;
        let (owner, tokens) = app.owner_with_tokens("sse-slow").await;
        let token = &tokens.access_token;
        let mut reader = stream(&app, token, "?type=test.", None).await;
        // The slow subscriber: a raw connection with a small receive buffer that never reads.
        let addr = app.base_url.trim_start_matches("http://").to_owned();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small receive buffer");
        let mut slow = socket
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect");
        slow.write_all(
            format!(
                "GET /v1/admin/events/stream?type=test. HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
        // The first event proves both streams are subscribed before the burst.
        let tenant: keel_kernel::TenantId = owner.tenant_id.parse().expect("tenant id");
        let log = app.store.events();
        let event = |i: usize| {
            keel_kernel::event::NewEvent::new(
                tenant,
                "test.bulk",
                &serde_json::json!({ "n": i, "filler": "x".repeat(8192) }),
                time::OffsetDateTime::now_utc(),
            )
            .expect("event")
        };
        log.append(&[event(0)]).await.expect("append");
        assert_eq!(reader.event().await.expect("first").2["data"]["n"], 0);
        // About 16 MB of committed events, more than a socket holds, in commits of 100 that
        // the reading subscriber takes in before the next (its 256 places always suffice).
        let burst: Vec<_> = (1..=2000).map(event).collect();
        for commit in burst.chunks(100) {
            log.append(commit).await.expect("append");
            for want in commit {
                let (id, _, data) = reader.event().await.expect("the reading subscriber goes on");
                assert_eq!(id, want.id.to_string(), "every event, in order");
                assert_eq!(data["data"]["n"], want.payload["n"]);
            }
        }

        // The slow one: what fitted its socket, then the close event, then the end.
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut all))
            .await
            .expect("the server ends the slow stream")
            .expect("read");
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(200)]);
        assert!(text.contains("event: slow_consumer"), "cut off with a reason");
        let delivered = text.matches("event: test.bulk").count();
        assert!(delivered < 2001, "cut off before the end, after {delivered}");
    }

    async fn an_orders_stream_is_its_shoppers_alone(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "sse-order", 10).await;
        let (cart, _) = shop::ready_cart(&app, &s, "USD", &[(&s.tee, 1)], shop::ny(), &s.us_shipping, None).await;
        let order = json(shop::checkout(&app, &s, &cart, "sse-1").await).await;
        let order_id = order["id"].as_str().expect("order id").to_owned();
        let path = format!("/v1/store/orders/{order_id}/stream");

        // Another guest's secret, and another shop's key: 404, as for the order itself.
        let (other, _) = shop::ready_cart(&app, &s, "USD", &[(&s.mug, 1)], shop::ny(), &s.us_shipping, None).await;
        let res = shop::store(&app, &s, Some(&other.secret), Method::GET, &path, None, None).await;
        assert_problem(res, 404, "not_found").await;
        let t = shop::shop(&app, "sse-order-b", 1).await;
        let res = shop::store(&app, &t, Some(&cart.secret), Method::GET, &path, None, None).await;
        assert_problem(res, 404, "not_found").await;

        let mut live = SseStream::open(
            shop::store(&app, &s, Some(&cart.secret), Method::GET, &path, None, None).await,
        )
        .await;
        let paid = shop::pay(&app, &s, &cart, &order_id, "sse-pay").await;
        assert_eq!(paid.status(), 201, "{}", paid.text().await.unwrap_or_default());
        let (id, kind, data) = live.event().await.expect("an event");
        assert_eq!(kind, "order.paid");
        assert_eq!(data["order_id"], order_id);
        assert_eq!(data.get("data"), None, "a shopper sees what happened, not the payload");

        // Resuming from the start of the order's timeline: what came before, in order.
        let log = json(
            app.get_as("/v1/admin/events?limit=100", &s.owner.access_token).await,
        )
        .await;
        let ids: Vec<String> = log["data"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["data"]["order_id"] == order_id.as_str())
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        assert!(ids.len() >= 2, "placed and paid at least: {ids:?}");
        assert_eq!(ids.last(), Some(&id));
        let mut req = app
            .client
            .get(app.url(&path))
            .header("keel-publishable-key", &s.pk)
            .header("keel-cart-secret", &cart.secret)
            .header("last-event-id", &ids[0]);
        req = req.header("accept", "text/event-stream");
        let mut resumed = SseStream::open(req.send().await.expect("answer")).await;
        for want in &ids[1..] {
            let (got, _, _) = resumed.event().await.expect("an event");
            assert_eq!(&got, want);
        }
    }

    async fn a_stream_ends_when_its_token_expires_or_its_session_is_revoked(backend: Backend) {
        let app = app(backend, |raw| raw.auth.access_token_ttl_s = 2).await;
        let (_, owner) = app.owner_with_tokens("sse-expiry").await;
        let opened = Instant::now();
        let mut s = stream(&app, &owner.access_token, "?type=quiet.", None).await;
        let (_, kind, data) = s.event().await.expect("a closing event");
        assert_eq!(kind, "credential_expired", "{data}");
        assert!(opened.elapsed() < Duration::from_secs(3), "at the token's exp");
        assert_eq!(s.event().await, None);

        let app = app_default(backend).await;
        let (_, owner) = app.owner_with_tokens("sse-revoke").await;
        let mut s = stream(&app, &owner.access_token, "?type=quiet.", None).await;
        let res = app.post_json("/v1/auth/logout", &serde_json::json!({"refresh_token": owner.refresh_token})).await;
        assert_eq!(res.status(), 204);
        let (_, kind, _) = s.event().await.expect("a closing event");
        assert_eq!(kind, "credential_revoked");
        assert_eq!(s.event().await, None);
    }
}

async fn app_default(backend: Backend) -> TestApp {
    app(backend, |_| {}).await
}

/// Cluster mode: two nodes on one PostgreSQL database and one JetStream stream. An event
/// committed through node A reaches a stream held by node B, through B's own tail of the bus.
#[tokio::test]
async fn events_committed_on_one_node_reach_subscribers_on_another_through_the_bus() {
    let nats = keel_testdb::nats().await;
    // A stream and subjects of this test's own: tests share one server.
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (stream_name, prefix) = (format!("KEEL_TEST_{tag}"), format!("keel.test.{tag}"));
    let bus = |raw: &mut keel::config::RawConfig| {
        raw.webhooks.relay_interval_ms = 50;
        raw.nats_url = Some(nats.url.clone().into());
        raw.nats.stream.clone_from(&stream_name);
        raw.nats.subject_prefix.clone_from(&prefix);
    };
    let a = spawn_app_with(
        Backend::Postgres,
        utoipa_axum::router::OpenApiRouter::new(),
        bus,
    )
    .await;
    let (url, secret) = (a.db.url(), a.settings.secret_key.clone());
    let b = spawn_app_with(
        Backend::Postgres,
        utoipa_axum::router::OpenApiRouter::new(),
        |raw| {
            bus(raw);
            raw.database_url = Some(url.into());
            raw.secret_key = secret;
        },
    )
    .await;
    let (_, owner) = a.owner_with_tokens("sse-bus").await;
    let token = &owner.access_token;
    let mut on_b = stream(&b, token, "?type=product.", None).await;
    products(&a, token, "bus", 3).await;
    let mut got = read_ids(&mut on_b, 3).await;
    let mut log = logged(&a, token).await;
    // Both nodes relay (their batches interleave on the bus): every event once; the order of
    // different products' events is not promised across relays.
    got.sort();
    log.sort();
    assert_eq!(got, log, "every event, once, on the other node");
    let bus = keel::event_bus(&a.settings)
        .await
        .expect("bus")
        .expect("configured");
    bus.delete_stream()
        .await
        .expect("the test's stream is removed");
}
