//! GraphQL subscriptions over a real WebSocket (`graphql-transport-ws`), once per backend:
//! committed events exactly once and in order, connection management (an expired token and a
//! revoked session close the socket, a subscriber that stops reading is dropped at the exact
//! buffer while others keep receiving, connection caps, origins), and live presence.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use keel_testkit::{
    Backend, TestApp, backend_tests,
    shop::{self, created},
    spawn_app_with,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest as _, protocol::frame::coding::CloseCode,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn app(backend: Backend, configure: impl FnOnce(&mut keel::config::RawConfig)) -> TestApp {
    spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
        raw.webhooks.relay_interval_ms = 50;
        configure(raw);
    })
    .await
}

/// Opens a `graphql-transport-ws` socket to `path` with extra upgrade headers.
async fn open(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", app.base_url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(s, _)| s)
}

/// The next protocol message (pings answered by the library), or the close code.
async fn next(ws: &mut Socket) -> Result<Value, Option<u16>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server sends within the test's bound");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// `connection_init` with `payload`; answers the server's reply (`connection_ack`) or close code.
async fn init(ws: &mut Socket, payload: Value) -> Result<Value, Option<u16>> {
    ws.send(Message::Text(
        json!({"type": "connection_init", "payload": payload})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    next(ws).await
}

async fn admin_socket(app: &TestApp, token: &str) -> Socket {
    let mut ws = open(app, "/v1/admin/graphql", &[]).await.expect("upgrade");
    let ack = init(&mut ws, json!({"authorization": format!("Bearer {token}")})).await;
    assert_eq!(ack.expect("acknowledged")["type"], "connection_ack");
    ws
}

async fn send_subscribe(ws: &mut Socket, id: &str, query: &str, variables: Value) {
    ws.send(Message::Text(
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
}

/// Subscribes, then waits for a protocol pong: the server handles a connection's messages in
/// order, so the subscription has started when the pong comes back.
async fn subscribe(ws: &mut Socket, id: &str, query: &str, variables: Value) {
    send_subscribe(ws, id, query, variables).await;
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .expect("ping");
    loop {
        let msg = next(ws).await.expect("open");
        match msg["type"].as_str() {
            Some("pong") => return,
            Some("error") => panic!("subscription refused: {msg}"),
            _ => {}
        }
    }
}

/// The next `next` message's data for subscription `id`.
async fn data(ws: &mut Socket, id: &str) -> Value {
    loop {
        let msg = next(ws).await.expect("open");
        match msg["type"].as_str() {
            Some("next") if msg["id"] == id => {
                assert_eq!(msg["payload"]["errors"], Value::Null, "{msg}");
                return msg["payload"]["data"].clone();
            }
            Some("ping") => {
                ws.send(Message::Text(json!({"type": "pong"}).to_string().into()))
                    .await
                    .expect("pong");
            }
            Some("error") => panic!("subscription refused: {msg}"),
            _ => {}
        }
    }
}

/// Reads until the server closes; answers its close code.
async fn closed(ws: &mut Socket) -> Option<u16> {
    loop {
        if let Err(code) = next(ws).await {
            return code;
        }
    }
}

const ORDER_EVENTS: &str =
    "subscription($t: [String!]) { orderEvents(types: $t) { id type data } }";

backend_tests! {
    async fn order_events_arrive_once_and_in_order_for_orders_placed_over_rest(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "ws-events", 10).await;
        let mut ws = admin_socket(&app, &s.owner.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({"t": ["order.*"]})).await;
        // Another shop's orders never reach this subscription.
        let other = shop::shop(&app, "ws-events-b", 10).await;
        shop::placed_order(&app, &other, "ws-other").await;
        let id = shop::placed_order(&app, &s, "ws-1").await;
        let paid = shop::pay(&app, &s, &shop::Cart { id: String::new(), secret: String::new() }, &id, "ws-pay").await;
        assert_eq!(paid.status(), 201);
        let first = data(&mut ws, "1").await;
        let second = data(&mut ws, "1").await;
        assert_eq!(first["orderEvents"]["type"], "order.placed");
        assert_eq!(first["orderEvents"]["data"]["order_id"], id.as_str());
        assert_eq!(second["orderEvents"]["type"], "order.paid");
        assert_eq!(second["orderEvents"]["data"]["order_id"], id.as_str());
        // Exactly once: the log holds these two, and the next event on the socket is a new one.
        let again = shop::placed_order(&app, &s, "ws-2").await;
        let third = data(&mut ws, "1").await;
        assert_eq!(third["orderEvents"]["data"]["order_id"], again.as_str());
        assert_eq!(third["orderEvents"]["type"], "order.placed");
    }

    async fn an_expired_access_token_closes_the_socket_at_its_expiry(backend: Backend) {
        let app = app(backend, |raw| raw.auth.access_token_ttl_s = 2).await;
        let (_, owner) = app.owner_with_tokens("ws-expiry").await;
        let mut ws = admin_socket(&app, &owner.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({})).await;
        let opened = Instant::now();
        assert_eq!(closed(&mut ws).await, Some(4401));
        assert!(opened.elapsed() < Duration::from_secs(3), "closed at the token's exp, not later");
    }

    async fn a_revoked_session_closes_its_sockets_at_once(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let (_, owner) = app.owner_with_tokens("ws-revoke").await;
        let mut ws = admin_socket(&app, &owner.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({})).await;
        let res = app.post_json("/v1/auth/logout", &json!({"refresh_token": owner.refresh_token})).await;
        assert_eq!(res.status(), 204);
        assert_eq!(closed(&mut ws).await, Some(4403));
    }

    async fn a_subscriber_that_stops_reading_is_dropped_while_others_keep_receiving(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.buffer = 256).await;
        let (owner, tokens) = app.owner_with_tokens("ws-slow").await;
        let token = &tokens.access_token;
        let mut reader = admin_socket(&app, token).await;
        subscribe(&mut reader, "r", ORDER_EVENTS, json!({"t": ["order.bulk"]})).await;
        let mut slow = admin_socket(&app, token).await;
        subscribe(&mut slow, "s", ORDER_EVENTS, json!({"t": ["order.bulk"]})).await;
        let tenant: keel_kernel::TenantId = owner.tenant_id.parse().expect("tenant");
        let log = app.store.events();
        let event = |i: usize| {
            keel_kernel::event::NewEvent::new(tenant, "order.bulk", &json!({"n": i, "filler": "x".repeat(8192)}), time::OffsetDateTime::now_utc())
                .expect("event")
        };
        // Both subscribed before the burst: the first event reaches the reader.
        log.append(&[event(0)]).await.expect("append");
        assert_eq!(data(&mut reader, "r").await["orderEvents"]["data"]["n"], 0);
        // About 16 MB in commits of 100 that the reader takes in before the next one.
        let burst: Vec<_> = (1..=2000).map(event).collect();
        for commit in burst.chunks(100) {
            log.append(commit).await.expect("append");
            for want in commit {
                let got = data(&mut reader, "r").await;
                assert_eq!(got["orderEvents"]["id"], want.id.to_string(), "every event, in order");
            }
        }
        assert_eq!(closed(&mut slow).await, Some(keel_graphql::SLOW_CONSUMER));
    }

    async fn connections_are_capped_per_shop_and_browsers_need_an_allowed_origin(backend: Backend) {
        let app = app(backend, |raw| raw.realtime.max_connections_per_shop = 1).await;
        let (_, owner) = app.owner_with_tokens("ws-cap").await;
        let _first = admin_socket(&app, &owner.access_token).await;
        let mut second = open(&app, "/v1/admin/graphql", &[]).await.expect("upgrade");
        let refused = init(&mut second, json!({"authorization": format!("Bearer {}", owner.access_token)})).await;
        assert_eq!(refused.map(|_| ()), Err(Some(4429)));
        // A page on another site cannot open a socket with a browser's credentials.
        let cross = open(&app, "/v1/admin/graphql", &[("origin", "https://evil.example")]).await;
        match cross {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
            other => panic!("a foreign origin was upgraded: {:?}", other.map(|_| ())),
        }
        // No credential: refused at init with the protocol's close.
        let mut anonymous = open(&app, "/v1/admin/graphql", &[]).await.expect("upgrade");
        let code = init(&mut anonymous, json!({})).await.map(|_| ());
        assert!(matches!(code, Err(Some(c)) if c == u16::from(CloseCode::from(4403))), "{code:?}");
    }

    async fn staff_on_one_product_see_each_other_until_the_exact_presence_time(backend: Backend) {
        let app = app(backend, |raw| raw.graphql.presence_ttl_ms = 1500).await;
        let s = shop::shop(&app, "ws-presence", 1).await;
        let (_, ann) = app.member(&s.owner, "ann@presence.test", "staff").await;
        let products = app.get_as("/v1/admin/products?limit=1", &s.owner.access_token).await;
        let product = shop::json(products).await["data"][0]["id"].as_str().expect("id").to_owned();
        let enter = |token: String, mode: &'static str| {
            let (app, product) = (&app, product.clone());
            async move {
                let res = app.client.post(app.url("/v1/admin/graphql")).bearer_auth(token)
                    .json(&json!({"query": "mutation($r: ID!, $m: String) { enterResource(resource: $r, mode: $m) }", "variables": {"r": product, "m": mode}}))
                    .send().await.expect("answer");
                let body: Value = res.json().await.expect("JSON");
                assert_eq!(body["data"]["enterResource"], true, "{body}");
            }
        };
        let mut ws = admin_socket(&app, &s.owner.access_token).await;
        send_subscribe(&mut ws, "p", "subscription($r: ID!) { presence(resource: $r) { userId displayName mode } }", json!({"r": product})).await;
        assert_eq!(data(&mut ws, "p").await["presence"], json!([]));
        enter(s.owner.access_token.clone(), "editing").await;
        let before_ann = Instant::now();
        enter(ann.access_token.clone(), "viewing").await;
        let mut both = data(&mut ws, "p").await["presence"].clone();
        if both.as_array().map(Vec::len) == Some(1) {
            both = data(&mut ws, "p").await["presence"].clone();
        }
        let names: Vec<&str> = both.as_array().expect("list").iter().filter_map(|p| p["displayName"].as_str()).collect();
        assert_eq!(names.len(), 2, "{both}");
        assert!(names.contains(&"ann"), "the part of the email before @: {both}");
        // Ann stops; the owner keeps its heartbeat: Ann is gone after the exact time.
        loop {
            enter(s.owner.access_token.clone(), "editing").await;
            let now = data(&mut ws, "p").await["presence"].clone();
            if now.as_array().map(Vec::len) == Some(1) {
                assert_eq!(now[0]["mode"], "editing");
                break;
            }
        }
        let gone = before_ann.elapsed();
        assert!(gone >= Duration::from_millis(1500), "not before the exact time: {gone:?}");
        assert!(gone < Duration::from_secs(3), "at the exact time, not much later: {gone:?}");
    }

    async fn only_subscriptions_run_over_the_socket_within_an_exact_count(backend: Backend) {
        let app = app(backend, |raw| {
            raw.graphql.max_operations_per_connection = 2;
            raw.graphql.init_timeout_ms = 500;
        })
        .await;
        let (_, owner) = app.owner_with_tokens("ws-ops").await;
        // A query over the socket (it would escape the edge's limits): closed, 4400.
        let mut ws = admin_socket(&app, &owner.access_token).await;
        send_subscribe(&mut ws, "q", "{ orders(first: 100) { edges { node { id } } } }", json!({})).await;
        assert_eq!(closed(&mut ws).await, Some(4400));
        // Two subscriptions at once, then a third: closed, 4429.
        let mut ws = admin_socket(&app, &owner.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({})).await;
        subscribe(&mut ws, "2", ORDER_EVENTS, json!({})).await;
        send_subscribe(&mut ws, "3", ORDER_EVENTS, json!({})).await;
        assert_eq!(closed(&mut ws).await, Some(4429));
        // A finished subscription frees its place.
        let mut ws = admin_socket(&app, &owner.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({})).await;
        subscribe(&mut ws, "2", ORDER_EVENTS, json!({})).await;
        ws.send(Message::Text(json!({"id": "1", "type": "complete"}).to_string().into())).await.expect("send");
        subscribe(&mut ws, "3", ORDER_EVENTS, json!({})).await;
        // A socket that never says who it is: closed after the exact time, 4408.
        // Taken before the upgrade is asked: the server's timer starts after it.
        let opened = Instant::now();
        let mut silent = open(&app, "/v1/admin/graphql", &[]).await.expect("upgrade");
        assert_eq!(closed(&mut silent).await, Some(4408));
        assert!(opened.elapsed() >= Duration::from_millis(500));
    }

    async fn a_new_role_closes_the_members_sockets(backend: Backend) {
        let app = app(backend, |_| {}).await;
        let s = shop::shop(&app, "ws-role", 1).await;
        let (id, staff) = app.member(&s.owner, "demoted@ws.test", "staff").await;
        let mut ws = admin_socket(&app, &staff.access_token).await;
        subscribe(&mut ws, "1", ORDER_EVENTS, json!({})).await;
        let res = shop::admin(&app, &s.owner.access_token, reqwest::Method::PATCH, &format!("/v1/admin/users/{id}"), Some(json!({"role": "viewer"})), None).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
        assert_eq!(closed(&mut ws).await, Some(4403));
    }

    async fn a_persisted_only_storefront_takes_no_query_text_over_the_socket(backend: Backend) {
        let dir = tempfile::tempdir().expect("temp dir");
        let query = "subscription($o: ID!) { orderStatus(orderId: $o) { type } }";
        let file = dir.path().join("persisted.json");
        std::fs::write(&file, json!({ keel_graphql::sha256_hex(query): query }).to_string()).expect("write");
        let path = file.to_string_lossy().into_owned();
        let app = app(backend, move |raw| {
            raw.graphql.persisted_queries_file = Some(path);
            raw.graphql.store_persisted_only = true;
        })
        .await;
        let s = shop::shop(&app, "ws-pq", 5).await;
        let (cart, _) = shop::ready_cart(&app, &s, "USD", &[(&s.tee, 1)], shop::ny(), &s.us_shipping, None).await;
        let order = created(shop::checkout(&app, &s, &cart, "ws-pq-1").await).await;
        let order = order["id"].as_str().expect("id").to_owned();
        let connect = async || {
            let mut ws = open(&app, "/v1/store/graphql", &[]).await.expect("upgrade");
            let ack = init(&mut ws, json!({"keel-publishable-key": s.pk, "keel-cart-secret": cart.secret})).await;
            assert_eq!(ack.expect("ack")["type"], "connection_ack");
            ws
        };
        let mut ws = connect().await;
        send_subscribe(&mut ws, "t", query, json!({"o": order})).await;
        assert_eq!(closed(&mut ws).await, Some(4400), "text is refused");
        let mut ws = connect().await;
        ws.send(Message::Text(json!({"id": "h", "type": "subscribe", "payload": {"variables": {"o": order},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": keel_graphql::sha256_hex(query)}}}}).to_string().into()))
            .await.expect("send");
        ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.expect("ping");
        loop {
            let msg = next(&mut ws).await.expect("open");
            if msg["type"] == "pong" {
                break;
            }
        }
        let paid = shop::pay(&app, &s, &cart, &order, "ws-pq-pay").await;
        assert_eq!(paid.status(), 201);
        assert_eq!(data(&mut ws, "h").await["orderStatus"]["type"], "order.paid");
    }
}
