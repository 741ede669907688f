//! What the adapter's tests share: a localstripe server (PyPI, a stateful Stripe API
//! simulator written by others, installed by `scripts/test`) on a free loopback port.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use keel_kernel::money::Currency;
use keel_payments::domain::Amount;
use keel_payments_stripe::StripeProvider;
use keel_resilience::{Dependency, Policy};

/// A localstripe server on a free loopback port, stopped when dropped.
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
    // The adapter installs the process's TLS provider; this client is made before it.
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

pub const SECRET: &str = "sk_test_keel";

pub fn usd(minor: i64) -> Amount {
    Amount {
        minor,
        currency: Currency::parse("USD").expect("USD"),
    }
}

pub fn provider(base: &str) -> StripeProvider {
    provider_with(base, Policy::default())
}

pub fn provider_with(base: &str, policy: Policy) -> StripeProvider {
    StripeProvider::new(
        base,
        Duration::from_secs(2),
        Dependency::new("stripe", policy),
    )
    .expect("provider")
}
