//! The HTTP client every webhook and account-notification delivery goes through.
//!
//! - **One client, connections reused.** Building a client per attempt (as before issue 19)
//!   loaded the TLS roots and opened a fresh connection every time; one endpoint then took
//!   about 20 deliveries a second.
//! - **The SSRF guard is the resolver.** Every name the client connects to is resolved by
//!   [`GuardedResolver`], which refuses the whole name when any of its addresses is not public
//!   (unless the operator allowed its range), so the address connected to is always one that
//!   was checked: there is no second lookup to rebind. Literal addresses in a URL never reach a
//!   resolver; [`check_literal`] checks them before the request is sent.
//! - **No proxy.** reqwest honours `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` by default, and
//!   a proxy resolves the host again itself, outside the guard (finding 8). The client is built
//!   with none, whatever the environment says.
//! - **No redirects**, and the exact attempt timeout of the policy.

use std::{net::SocketAddr, sync::Arc, time::Duration as StdDuration};

use keel_webhooks::ssrf::{Refusal, SsrfPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves names and refuses those with any address the SSRF policy forbids.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
}

/// Why the resolver refused a name (the attempt's recorded error names it).
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(Refusal);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Refused(Refusal::Unresolvable))?
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused(Refusal::Unresolvable)) as _);
            }
            // Every address must pass: a name with one forbidden address is refused,
            // whichever the connector would try first.
            for a in &addrs {
                policy.check_addr(a.ip()).map_err(Refused)?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The delivery client: guarded resolver, no proxy, no redirects, the exact timeout.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub fn client(policy: &SsrfPolicy, timeout: StdDuration) -> Result<reqwest::Client, String> {
    // Exactly one provider; a second install attempt is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .dns_resolver(Arc::new(GuardedResolver {
            policy: Arc::new(policy.clone()),
        }))
        .build()
        .map_err(|e| format!("cannot build the delivery client: {e}"))
}

/// Checks a URL whose host is a literal address (no resolver sees those).
pub fn check_literal(policy: &SsrfPolicy, url: &url::Url) -> Result<(), Refusal> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => policy.check_addr(ip.into()),
        Some(url::Host::Ipv6(ip)) => policy.check_addr(ip.into()),
        Some(url::Host::Domain(_)) => Ok(()),
        None => Err(Refusal::NotUrl),
    }
}

/// The attempt's recorded error for a failed send: `timeout`, the guard's refusal, or the
/// connection error (never a secret: the URL's credentials are refused up front).
pub fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timeout".to_owned();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = e.source();
    }
    format!("connection: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_with_a_forbidden_address_are_refused_by_the_resolver() {
        let policy = SsrfPolicy::default();
        let resolver = GuardedResolver {
            policy: Arc::new(policy),
        };
        let refused = resolver
            .resolve("localhost".parse().expect("name"))
            .await
            .err()
            .expect("loopback refused");
        assert!(refused.to_string().starts_with("refused: "), "{refused}");
        let allowed = GuardedResolver {
            policy: Arc::new(SsrfPolicy {
                allow_http: true,
                allow_cidrs: vec![
                    keel_webhooks::ssrf::Cidr::parse("127.0.0.0/8").expect("cidr"),
                    keel_webhooks::ssrf::Cidr::parse("::1/128").expect("cidr"),
                ],
            }),
        };
        let addrs: Vec<SocketAddr> = allowed
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed range")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn literal_addresses_are_checked_before_sending() {
        let policy = SsrfPolicy {
            allow_http: true,
            allow_cidrs: Vec::new(),
        };
        for url in [
            "http://127.0.0.1/x",
            "http://[::1]/x",
            "http://[::ffff:8.8.8.8]/x",
            "http://169.254.169.254/latest",
        ] {
            let u = url::Url::parse(url).expect("url");
            assert!(check_literal(&policy, &u).is_err(), "{url}");
        }
        let public = url::Url::parse("http://8.8.8.8/x").expect("url");
        assert!(check_literal(&policy, &public).is_ok());
    }
}
