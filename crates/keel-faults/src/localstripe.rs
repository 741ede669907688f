//! localstripe (PyPI), a stateful Stripe API simulator written by others, installed by
//! `scripts/test` into its own virtualenv: started on a free loopback port per test, and the
//! shopper's browser played against it as Stripe.js would.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The secret key tests give localstripe (it accepts any `sk_test_` key).
pub const SECRET: &str = "sk_test_keel";

/// A localstripe server on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct LocalStripe {
    child: Child,
    pub base: String,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn localstripe_bin() -> std::path::PathBuf {
    let venv = std::env::var_os("KEEL_LOCALSTRIPE_VENV").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/keel/venv-localstripe")
        },
        std::path::PathBuf::from,
    );
    let bin = venv.join("bin/localstripe");
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/test (it installs localstripe) or set KEEL_LOCALSTRIPE_VENV",
        bin.display()
    );
    bin
}

pub async fn start() -> LocalStripe {
    // Where the process's reqwest has TLS (the Stripe adapter's tests), it needs the process's
    // provider (ring, as everywhere in Keel) before the first client; a second install is a
    // no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    // A port found free can be taken by another test's server before this one binds it: a
    // server that exits at start is replaced on another port.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(localstripe_bin())
            // Its state starts empty: without the flag it reloads what earlier runs left in
            // its file under /tmp.
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("localstripe starts");
        let mut server = LocalStripe {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if server.child.try_wait().expect("status").is_some() {
                break;
            }
            let answered = client
                .get(format!("{}/v1/payment_intents", server.base))
                .bearer_auth(SECRET)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("localstripe did not start on any of five ports");
}

/// What Stripe.js does in the shopper's browser: a test card, attached to the payment,
/// confirmed.
pub async fn pay_as_the_browser(base: &str, intent: &str) {
    let client = reqwest::Client::new();
    let pm: serde_json::Value = client
        .post(format!("{base}/v1/payment_methods"))
        .bearer_auth(SECRET)
        .form(&[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ])
        .send()
        .await
        .expect("payment method")
        .json()
        .await
        .expect("json");
    let pm = pm["id"].as_str().expect("pm id").to_owned();
    let attached = client
        .post(format!("{base}/v1/payment_intents/{intent}"))
        .bearer_auth(SECRET)
        .form(&[("payment_method", pm.as_str())])
        .send()
        .await
        .expect("attach");
    assert!(attached.status().is_success());
    let confirmed = client
        .post(format!("{base}/v1/payment_intents/{intent}/confirm"))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("confirm");
    assert!(confirmed.status().is_success());
}

/// Registers a webhook endpoint with localstripe: it signs every event it sends there with
/// `secret`.
pub async fn register_webhook(base: &str, name: &str, url: &str, secret: &str) {
    let registered = reqwest::Client::new()
        .post(format!("{base}/_config/webhooks/{name}"))
        .form(&[("url", url), ("secret", secret)])
        .send()
        .await
        .expect("register");
    assert!(registered.status().is_success());
}
