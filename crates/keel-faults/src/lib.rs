//! A fault-injecting HTTP proxy for tests (issue 22): it stands between Keel and a dependency
//! (a payment provider's simulator), on `127.0.0.1`, forwards every request, and on the test's
//! command answers some itself instead: a status (500, 503), a 429 with `Retry-After`, an
//! exact delay before forwarding, or silence (the request is held until the caller gives up).
//! It counts what arrived, what it forwarded and the most requests it held at once, so a test
//! can prove what a circuit breaker or a bulkhead let through.
#![forbid(unsafe_code)]

pub mod localstripe;
pub mod redis;
pub mod stripe_sim;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status itself, with an empty JSON object.
    Status(u16),
    /// Answer 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_s: u64 },
    /// Wait this long, then forward.
    Delay(Duration),
    /// Never answer.
    Silence,
}

#[derive(Debug, Default)]
struct State {
    /// The next requests' faults, in turn.
    script: Mutex<VecDeque<Fault>>,
    /// The fault for every request once the script is spent (`None`: forward).
    standing: Mutex<Option<Fault>>,
    arrived: AtomicU64,
    forwarded: AtomicU64,
    held: AtomicU64,
    peak: AtomicU64,
}

impl State {
    fn next(&self) -> Option<Fault> {
        let scripted = self
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        scripted.or_else(|| {
            self.standing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

/// A running proxy: its base URL, and the test's controls.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub url: String,
    state: Arc<State>,
}

/// Counts the requests held (arrived, not yet answered) and the most at once.
struct Held<'a>(&'a State);

impl<'a> Held<'a> {
    fn new(state: &'a State) -> Self {
        let now = state.held.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (a base URL such as `http://127.0.0.1:8420`).
    pub async fn start(upstream: &str) -> Self {
        let state = Arc::new(State::default());
        let upstream = upstream.trim_end_matches('/').to_owned();
        // Where the process's reqwest has TLS, it needs the process's provider (ring) before
        // the first client; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (state, client, upstream) =
                    (handler_state.clone(), client.clone(), upstream.clone());
                async move { proxy(&state, &client, &upstream, method, &uri, headers, body).await }
            },
        );
        Self {
            url: serve_on_loopback(app).await,
            state,
        }
    }

    /// The next requests get these faults, in turn (after any still scripted).
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(faults);
    }

    /// Every request after the script gets `fault` (`None`: forwarded).
    pub fn always(&self, fault: Option<Fault>) {
        *self
            .state
            .standing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Requests that reached the proxy.
    pub fn arrived(&self) -> u64 {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Requests passed on to the upstream.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// The most requests held at once (arrived and not yet answered).
    pub fn peak_held(&self) -> u64 {
        self.state.peak.load(Ordering::SeqCst)
    }
}

async fn proxy(
    state: &State,
    client: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.arrived.fetch_add(1, Ordering::SeqCst);
    let _held = Held::new(state);
    match state.next() {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [("content-type", "application/json")], "{}").into_response();
        }
        Some(Fault::TooMany { retry_after_s }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_s.to_string())],
                "{}",
            )
                .into_response();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Silence) => std::future::pending::<()>().await,
        None => {}
    }
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = client
        .request(method, format!("{upstream}{path}"))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Serves `app` on a free loopback port until the test's runtime ends; answers its base URL.
pub(crate) async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// One request a [`Recorder`] got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Header names in lower case, with their values (as text).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on `127.0.0.1` that answers 200 to every POST and records it (for a
/// dependency's callbacks, such as a payment provider's webhooks).
#[derive(Debug)]
pub struct Recorder {
    /// Its base URL; any path is accepted.
    pub url: String,
    got: tokio::sync::mpsc::UnboundedReceiver<Recorded>,
}

impl Recorder {
    pub async fn start() -> Self {
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                let _ = tx.send(Recorded {
                    path: uri.path().to_owned(),
                    headers,
                    body: body.to_vec(),
                });
                StatusCode::OK
            }
        });
        Self {
            url: serve_on_loopback(app).await,
            got,
        }
    }

    /// The next request, in arrival order (waits for it).
    pub async fn next(&mut self) -> Recorded {
        self.got.recv().await.expect("the recorder runs")
    }
}
