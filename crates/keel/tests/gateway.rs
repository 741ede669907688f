//! Gateway mode over real HTTP, once per backend (issue 23, ADR 0038): Keel in front of a
//! legacy shop API, played here by `LegacyShop`, a real HTTP server in the test (a simulator
//! of a merchant's old API: it records what reaches it and answers JSON naming itself).

use std::sync::{Arc, Mutex};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, Method as AxumMethod, Uri},
    response::IntoResponse,
};
use keel_testkit::{
    Backend, TestApp, assert_problem, backend_tests,
    shop::{json, shop},
    spawn_app_with,
};
use reqwest::StatusCode;

/// One request the legacy API got.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    target: String,
    headers: HeaderMap,
}

/// The legacy shop API simulator: answers every request `200 {"legacy": true, ...}` with a
/// hop-by-hop header of its own (which must not reach Keel's client), and records it.
struct LegacyShop {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl LegacyShop {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().fallback(
            move |method: AxumMethod, uri: Uri, headers: HeaderMap, _body: Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("lock").push(Got {
                        method: method.to_string(),
                        target: uri
                            .path_and_query()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        headers,
                    });
                    let mut res =
                        axum::Json(serde_json::json!({"legacy": true, "path": uri.path()}))
                            .into_response();
                    res.headers_mut()
                        .insert("connection", HeaderValue::from_static("x-legacy-hop"));
                    res.headers_mut()
                        .insert("x-legacy-hop", HeaderValue::from_static("1"));
                    res.headers_mut()
                        .insert("x-legacy-end", HeaderValue::from_static("kept"));
                    res
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, got }
    }

    fn requests(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-legacy";

async fn app(
    backend: Backend,
    legacy: &str,
    routes: &str,
    configure: impl FnOnce(&mut keel::config::RawConfig),
) -> TestApp {
    let (legacy, routes) = (legacy.to_owned(), routes.to_owned());
    spawn_app_with(
        backend,
        utoipa_axum::router::OpenApiRouter::new(),
        move |raw| {
            raw.gateway.upstream = Some(legacy);
            raw.gateway.routes = routes;
            raw.gateway.signing_secret = Some(SECRET.to_owned().into());
            configure(raw);
        },
    )
    .await
}

/// The status of `GET path` sent as raw bytes on a fresh connection.
async fn raw_status(app: &TestApp, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

backend_tests! {
    /// A route Keel does not own reaches the legacy API with Keel's request id and a
    /// `Forwarded` element for the client (a client's own forwarding claims dropped: it is no
    /// trusted proxy), without hop-by-hop headers either way, without Keel's cookies or a
    /// client's made-up principal headers.
    async fn unowned_routes_reach_the_legacy_api_with_forwarded_and_request_id_only(backend: Backend) {
        let legacy = LegacyShop::start().await;
        let app = app(backend, &legacy.url, "", |_| {}).await;
        let res = app
            .client
            .get(app.url("/legacy/catalog?page=2"))
            .header("x-request-id", "req-gateway-1")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("forwarded", "for=203.0.113.66")
            .header("keel-principal", "kind=staff;tenant=ten_forged")
            .header("cookie", "keel_csrf=abc; legacy_session=xyz")
            .header("x-end-to-end", "kept")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], "req-gateway-1");
        assert!(res.headers().get("x-legacy-hop").is_none(), "hop-by-hop on the way back");
        assert_eq!(res.headers()["x-legacy-end"], "kept");
        assert_eq!(json(res).await["legacy"], true);

        let got = legacy.requests();
        assert_eq!(got.len(), 1);
        let got = &got[0];
        assert_eq!((got.method.as_str(), got.target.as_str()), ("GET", "/legacy/catalog?page=2"));
        assert_eq!(header(&got.headers, "x-request-id").as_deref(), Some("req-gateway-1"));
        let host = app.base_url.trim_start_matches("http://");
        assert_eq!(header(&got.headers, "forwarded"), Some(format!("for=127.0.0.1;proto=http;host=\"{host}\"")));
        for hop in ["x-secret-hop", "keep-alive", "proxy-authorization", "keel-principal"] {
            assert!(got.headers.get(hop).is_none(), "{hop} reached the legacy API");
        }
        assert_eq!(header(&got.headers, "cookie").as_deref(), Some("legacy_session=xyz"), "Keel's cookies stay with Keel");
        assert_eq!(header(&got.headers, "x-end-to-end").as_deref(), Some("kept"));
    }

    /// Route ownership by configuration: with `/v1/store/products=legacy` the legacy API
    /// answers that prefix although Keel has it; the same database served with the prefix
    /// moved (`=keel`, or no entry) is answered by Keel; a `keel` prefix is never forwarded.
    async fn moving_a_prefix_to_keel_by_configuration_switches_who_answers(backend: Backend) {
        let legacy = LegacyShop::start().await;
        let before = app(backend, &legacy.url, "/v1/store/products=legacy,/old-admin=keel", |_| {}).await;
        let shop = shop(&before, "gateway-move", 1).await;
        let read = |base: String| {
            let client = before.client.clone();
            let pk = shop.pk.clone();
            async move {
                client.get(format!("{base}/v1/store/products?currency=USD")).header("keel-publishable-key", pk).send().await.expect("send")
            }
        };
        let legacy_answer = json(read(before.base_url.clone()).await).await;
        assert_eq!(legacy_answer["legacy"], true, "{legacy_answer}");
        assert_eq!(legacy.requests().len(), 1);
        assert_problem(before.get("/old-admin/reports").await, 404, "not_found").await;
        assert_eq!(legacy.requests().len(), 1, "a `keel` prefix is never forwarded");

        let mut moved = before.settings.clone();
        moved.gateway.as_mut().expect("gateway").routes = vec![("/v1/store/products".into(), keel_http::gateway::Owner::Keel)];
        let node = keel::App::build(&moved, false).await.expect("node");
        let base = format!("http://{}", node.local_addr());
        tokio::spawn(node.run_until_stopped(std::future::pending()));
        let keel_answer = json(read(base).await).await;
        assert!(keel_answer["data"].is_array(), "Keel answers: {keel_answer}");
        assert_eq!(legacy.requests().len(), 1, "the legacy API was not asked");
    }

    /// Forwarded routes are held to the client address's limit: past it, 429 and the legacy
    /// API never sees the request.
    async fn forwarded_routes_are_held_to_keels_rate_limits(backend: Backend) {
        let legacy = LegacyShop::start().await;
        let app = app(backend, &legacy.url, "", |raw| {
            raw.limits.client = keel::config::RawLimit { interval_ms: 60_000, burst: 5 };
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(app.get("/legacy/ping").await.status());
        }
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5, "{statuses:?}");
        assert_problem(app.get("/legacy/ping").await, 429, "rate_limited").await;
        assert_eq!(legacy.requests().len(), 5, "refused requests never reach the legacy API");
    }

    /// A `legacy-auth` prefix: no Keel credential, 401 and nothing forwarded; a staff token,
    /// forwarded with the principal signed (the legacy API checks it with the shared secret)
    /// and without the token itself.
    async fn legacy_auth_prefixes_pass_the_principal_signed_never_the_token(backend: Backend) {
        let legacy = LegacyShop::start().await;
        let app = app(backend, &legacy.url, "/legacy-admin=legacy-auth", |_| {}).await;
        let (owner, tokens) = app.owner_with_tokens("gateway-auth").await;
        assert_problem(app.get("/legacy-admin/reports?x=1").await, 401, "unauthorized").await;
        assert_problem(app.get_as("/legacy-admin/reports?x=1", "not-a-token").await, 401, "unauthorized").await;
        assert!(legacy.requests().is_empty());

        let res = app.get_as("/legacy-admin/reports?x=1", &tokens.access_token).await;
        assert_eq!(res.status(), StatusCode::OK);
        let request_id = res.headers()["x-request-id"].to_str().expect("id").to_owned();
        let got = legacy.requests().pop().expect("forwarded");
        assert!(got.headers.get("authorization").is_none(), "Keel's token stays with Keel");
        let principal = header(&got.headers, "keel-principal").expect("principal");
        assert_eq!(principal, format!("kind=staff;tenant={};id={};role=owner", owner.tenant_id, owner.user_id));
        let ts: i64 = header(&got.headers, "keel-principal-timestamp").expect("ts").parse().expect("seconds");
        let expected = keel_http::gateway::sign(SECRET.as_bytes(), ts, &request_id, "GET", "/legacy-admin/reports?x=1", &principal);
        assert_eq!(header(&got.headers, "keel-principal-signature"), Some(expected));
    }

    /// A legacy API that cannot be reached: 502 `upstream_unavailable`; after the exact number
    /// of failures its circuit opens and Keel answers 503 with `Retry-After`, sending nothing.
    async fn an_unreachable_legacy_api_is_a_502_then_an_open_circuit(backend: Backend) {
        // A port nothing listens on: bound, then closed.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let app = app(backend, &format!("http://{closed}"), "", |raw| {
            raw.gateway.circuit_failures = 2;
        })
        .await;
        for _ in 0..2 {
            assert_problem(app.get("/legacy/ping").await, 502, "upstream_unavailable").await;
        }
        let open = app.get("/legacy/ping").await;
        assert!(open.headers().get("retry-after").is_some());
        assert_problem(open, 503, "service_unavailable").await;
    }

    /// The review's attacks: a path that would resolve to a `legacy-auth` prefix upstream
    /// (dot segments, encoded dots or slashes) is refused, nothing forwarded; Keel's own
    /// credentials never reach the legacy API on a plain `legacy` route; a Host with quotes
    /// cannot add a `Forwarded` element; override headers are dropped.
    async fn paths_that_read_differently_upstream_and_keel_credentials_never_pass(backend: Backend) {
        let legacy = LegacyShop::start().await;
        let app = app(backend, &legacy.url, "/admin=legacy-auth", |_| {}).await;
        let (_, tokens) = app.owner_with_tokens("gateway-attacks").await;
        // Sent as raw bytes: an HTTP client library would resolve the dots itself.
        for path in ["/x/%2e%2e/admin/users", "/x/.%2E/admin/users", "/x%2fadmin/users", "/x/../admin/users", "/x/%5C../admin"] {
            assert_eq!(raw_status(&app, path).await, 400, "{path}");
        }
        assert!(legacy.requests().is_empty(), "nothing was forwarded");

        for credential in [tokens.access_token.clone(), "sk_test_secret".to_owned()] {
            let res = app
                .client
                .get(app.url("/catalog"))
                .bearer_auth(&credential)
                .header("keel-publishable-key", "pk_x_y")
                .header("x-original-url", "/admin/users")
                .header("x-forwarded-host", "evil.example.com")
                .header("host", "shop.example.com\", for=6.6.6.6;host=\"x")
                .send()
                .await
                .expect("send");
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = app.client.get(app.url("/catalog")).bearer_auth("legacy-own-token").send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK);
        let got = legacy.requests();
        assert_eq!(got.len(), 3);
        for g in &got[..2] {
            assert!(g.headers.get("authorization").is_none(), "Keel's credential stays with Keel");
            for h in ["keel-publishable-key", "x-original-url", "x-forwarded-host"] {
                assert!(g.headers.get(h).is_none(), "{h} reached the legacy API");
            }
            let forwarded = header(&g.headers, "forwarded").expect("forwarded");
            assert!(!forwarded.contains("6.6.6.6") && !forwarded.contains("host="), "{forwarded}");
        }
        assert_eq!(header(&got[2].headers, "authorization").as_deref(), Some("Bearer legacy-own-token"), "the legacy API's own credentials pass");
    }
}
