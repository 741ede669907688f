//! A real HTTP receiver for webhooks and account notifications, started by a test on
//! `127.0.0.1`: it records every request and answers the scripted statuses in turn (then
//! 200), optionally after an exact delay. Signatures are checked with [`verifies`], an
//! independent implementation of the Standard Webhooks scheme written from the spec text,
//! not Keel's code.

use std::sync::{Arc, Mutex};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A running receiver: its URL and the requests it got, in order.
#[derive(Debug)]
pub struct Receiver {
    pub url: String,
    got: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

/// A receiver answering `script` in turn (then 200), at once.
pub async fn receiver(script: Vec<u16>) -> Receiver {
    receiver_with_delay(script, std::time::Duration::ZERO).await
}

/// A receiver that records each request when it arrives and answers it after `delay`.
pub async fn receiver_with_delay(script: Vec<u16>, delay: std::time::Duration) -> Receiver {
    let (tx, got) = tokio::sync::mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (tx, script) = (tx.clone(), script.clone());
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let _ = tx.send(Received {
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    body,
                });
                let status = script.lock().expect("script").next().unwrap_or(200);
                if !delay.is_zero() {
                    // The receiver under test is slow on purpose: this is its answer time.
                    tokio::time::sleep(delay).await;
                }
                axum::http::StatusCode::from_u16(status).expect("status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        got,
    }
}

impl Receiver {
    /// The next request, or a failure after 20 s.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.got.recv())
            .await
            .expect("a delivery within 20 s")
            .expect("the receiver runs")
    }

    /// A request if one already arrived.
    pub fn try_next(&mut self) -> Option<Received> {
        self.got.try_recv().ok()
    }
}

/// The spec's verification: the secret is the base64 after `whsec_`; the signed content is
/// `{id}.{timestamp}.{body}`; a header may carry several space-separated `v1,<base64>`.
pub fn verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key size");
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

/// Webhooks open to loopback receivers, with fast loops and retries.
pub fn fast_webhooks(raw: &mut keel::config::RawConfig) {
    raw.webhooks.allow_http = true;
    raw.webhooks.allow_cidrs = "127.0.0.1/32,::1/128".into();
    raw.webhooks.retry_schedule = "100ms,100ms,100ms".into();
    raw.webhooks.jitter_ms = 0;
    raw.webhooks.relay_interval_ms = 50;
    raw.webhooks.delivery_interval_ms = 50;
}
