//! Findings 7 and 11: slow clients cannot hold the server (an exact header-read timeout, an
//! exact idle keep-alive timeout and an exact cap on open connections, each shown with raw
//! sockets), and `/metrics` can live on a listener of its own.

use std::time::{Duration, Instant};

use keel_testkit::{Backend, backend_tests, spawn_app_with};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Reads until the server closes the connection; answers what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0_u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

fn addr(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

/// How long the tests wait at most for something that must happen: a bound, never a pause.
const BOUND: Duration = Duration::from_secs(30);

backend_tests! {
    async fn a_client_trickling_its_headers_is_cut_off_at_the_header_read_timeout(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            c.header_read_timeout_ms = 1_000;
        })
        .await;
        let server = addr(&app.base_url);
        let mut slow = connect(&server).await;
        let started = Instant::now();
        let (mut reader, mut writer) = slow.split();
        // Slowloris: a header line, then one byte every 100 ms for as long as the socket lasts.
        let trickle = async {
            writer.write_all(b"GET /livez HTTP/1.1\r\nHost: keel\r\n").await.expect("first bytes");
            loop {
                if writer.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let cut = async {
            let mut buf = [0_u8; 256];
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => started.elapsed(),
                Ok(_) => panic!("the server answered headers that never ended"),
            }
        };
        let elapsed = tokio::time::timeout(BOUND, async {
            tokio::select! {
                () = trickle => unreachable!("the trickle only ends when the socket fails"),
                e = cut => e,
            }
        })
        .await
        .expect("the server cut the slow client off");
        assert!(elapsed >= Duration::from_secs(1), "not before the timeout: {elapsed:?}");
        // Meanwhile and after, ordinary requests answer.
        assert_eq!(app.get("/livez").await.status(), 200);
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        assert!(metrics.contains("keel_http_header_timeouts_total 1\n"), "{metrics}");
    }

    async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            c.idle_timeout_ms = 800;
        })
        .await;
        let mut conn = connect(&addr(&app.base_url)).await;
        conn.write_all(b"GET /livez HTTP/1.1\r\nHost: keel\r\n\r\n").await.expect("request");
        let mut buf = [0_u8; 4096];
        let n = conn.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        let answered = Instant::now();
        let rest = tokio::time::timeout(BOUND, read_to_close(&mut conn)).await.expect("closed by the server");
        assert!(rest.is_empty(), "nothing more was sent");
        assert!(answered.elapsed() >= Duration::from_millis(800), "{:?}", answered.elapsed());
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        assert!(metrics.contains("keel_http_idle_timeouts_total 1\n"), "{metrics}");
    }

    async fn connections_past_the_cap_are_refused_while_open_ones_keep_answering(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            c.max_connections = 3;
            c.header_read_timeout_ms = 60_000;
        })
        .await;
        let server = addr(&app.base_url);
        // One keep-alive connection that works, and two that say nothing: the cap is reached.
        let mut working = connect(&server).await;
        let ask = b"GET /livez HTTP/1.1\r\nHost: keel\r\n\r\n";
        working.write_all(ask).await.expect("request");
        let mut buf = [0_u8; 4096];
        let n = working.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let silent: Vec<TcpStream> = vec![connect(&server).await, connect(&server).await];
        // The fourth is closed at once, without an answer, even though it sends a request.
        let mut refused = connect(&server).await;
        let _ = refused.write_all(ask).await;
        let got = tokio::time::timeout(BOUND, read_to_close(&mut refused)).await.expect("closed");
        assert!(got.is_empty(), "refused without an answer: {}", String::from_utf8_lossy(&got));
        // The open connections keep answering.
        working.write_all(ask).await.expect("request");
        let n = working.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Closing one frees its place.
        drop(silent);
        drop(working);
        let answered = tokio::time::timeout(BOUND, async {
            loop {
                if let Ok(res) = app.client.get(app.url("/livez")).send().await
                    && res.status() == 200
                {
                    return res;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a place frees up");
        assert_eq!(answered.status(), 200);
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        let refused: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("keel_http_connections_refused_total "))
            .and_then(|v| v.parse().ok())
            .expect("refused counter");
        assert!(refused >= 1, "{metrics}");
    }

    async fn one_client_cannot_hold_every_connection(backend: Backend) {
        let limited = |trusted: &'static str| {
            move |c: &mut keel::config::RawConfig| {
                c.max_connections_per_address = 3;
                c.header_read_timeout_ms = 60_000;
                c.trusted_proxies = trusted.into();
            }
        };
        let ask = b"GET /livez HTTP/1.1\r\nHost: keel\r\n\r\n";
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), limited("")).await;
        let server = addr(&app.base_url);
        let held = [connect(&server).await, connect(&server).await, connect(&server).await];
        let mut fourth = connect(&server).await;
        let _ = fourth.write_all(ask).await;
        let got = tokio::time::timeout(BOUND, read_to_close(&mut fourth)).await.expect("closed");
        assert!(got.is_empty(), "the address's fourth is refused: {}", String::from_utf8_lossy(&got));
        drop(held);
        // A trusted proxy carries many clients: its connections are not capped per address.
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), limited("127.0.0.1/32")).await;
        let server = addr(&app.base_url);
        let _held = [connect(&server).await, connect(&server).await, connect(&server).await];
        let mut fourth = connect(&server).await;
        fourth.write_all(ask).await.expect("request");
        let mut buf = [0_u8; 4096];
        let n = fourth.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }

    async fn metrics_on_their_own_listener_are_gone_from_the_public_port(backend: Backend) {
        let app = spawn_app_with(backend, keel_testkit::utoipa_axum::router::OpenApiRouter::new(), |c| {
            c.metrics_listen = Some("127.0.0.1:0".into());
        })
        .await;
        assert_eq!(app.get("/livez").await.status(), 200);
        keel_testkit::assert_problem(app.get("/metrics").await, 404, "not_found").await;
        let metrics_url = app.metrics_url.clone().expect("a metrics listener");
        let res = app.client.get(format!("{metrics_url}/metrics")).send().await.expect("metrics");
        assert_eq!(res.status(), 200);
        let text = res.text().await.expect("text");
        assert!(text.contains(r#"keel_http_requests_total{method="GET",route="/livez",status="2xx"} 1"#), "{text}");
        // The metrics listener serves nothing else.
        let other = app.client.get(format!("{metrics_url}/livez")).send().await.expect("request");
        keel_testkit::assert_problem(other, 404, "not_found").await;
        let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("doc");
        assert!(doc["paths"].get("/metrics").is_none(), "not documented on the API listener");
    }
}
