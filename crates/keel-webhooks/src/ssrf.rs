//! The SSRF guard: a webhook URL may only lead to a public address. Checked when an endpoint
//! is created or changed and again before every send; the connection then goes to the checked
//! address (no second DNS lookup, so no rebinding), and redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use keel_kernel::net::Cidr;

/// What the guard allows: plain `http` only when configured, and non-public addresses only
/// inside explicit ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    pub allow_http: bool,
    pub allow_cidrs: Vec<Cidr>,
}

/// Why a URL or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be an absolute https URL")]
    NotUrl,
    #[error("must use https")]
    Scheme,
    #[error("must not carry credentials")]
    Credentials,
    #[error("the host resolves to a {0} address, which webhooks may not reach")]
    Forbidden(&'static str),
    #[error("the host does not resolve")]
    Unresolvable,
}

/// The kind of non-public address `ip` is, if it is one.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (`::ffff:0:0/96`): a v6 spelling of a v4 address that some stacks
            // connect to as v4 and some filters read as v6; never a webhook target.
            if v6.to_ipv4_mapped().is_some() {
                return Some("IPv4-mapped");
            }
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg0 & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg0 & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.segments()[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) addresses embed an IPv4 address too.
                Some("IPv4-compatible")
            } else if seg0 == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if seg0 == 0x64 && v6.segments()[1] == 0xff9b {
                Some("NAT64")
            } else if v6.segments()[..4] == [0, 0, 0, 0] && v6.segments()[4..6] == [0xffff, 0] {
                // IPv4-translated (`::ffff:0:0:0/96`, RFC 2765): a v4 address for SIIT.
                Some("IPv4-translated")
            } else if seg0 == 0x2001 && v6.segments()[1] == 0 {
                // Teredo (`2001::/32`) tunnels to an IPv4 address embedded in the address.
                Some("Teredo")
            } else if seg0 == 0x2002 {
                // 6to4 (`2002::/16`) embeds an IPv4 address a relay may forward to.
                Some("6to4")
            } else if seg0 & 0xffc0 == 0xfec0 {
                // Site-local (`fec0::/10`): deprecated, still routed inside some networks.
                Some("site-local")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.169.254 (cloud metadata) is here too.
        Some("link-local or cloud metadata")
    } else if o[0] == 100 && (64..=127).contains(&o[1]) {
        Some("CGNAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if o[0] >= 240 {
        Some("reserved")
    } else if ip.is_documentation() {
        Some("documentation")
    } else if o[0] == 198 && (18..=19).contains(&o[1]) {
        Some("benchmarking")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else {
        None
    }
}

impl SsrfPolicy {
    /// Refuses an address that is not public, unless an allowed range contains it.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), Refusal> {
        match forbidden_kind(ip) {
            Some(kind) if !self.allow_cidrs.iter().any(|c| c.contains(ip)) => {
                Err(Refusal::Forbidden(kind))
            }
            _ => Ok(()),
        }
    }

    /// Checks a URL's form: absolute, https (or http when allowed), no credentials.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, Refusal> {
        let url = url::Url::parse(raw).map_err(|_| Refusal::NotUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refusal::Scheme),
            _ => return Err(Refusal::NotUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        if url.host().is_none() {
            return Err(Refusal::NotUrl);
        }
        Ok(url)
    }

    /// Resolves the URL's host and checks every address; answers the address to connect to.
    pub async fn resolve(&self, url: &url::Url) -> Result<SocketAddr, Refusal> {
        let port = url.port_or_known_default().ok_or(Refusal::NotUrl)?;
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
                .await
                .map_err(|_| Refusal::Unresolvable)?
                .collect(),
            None => return Err(Refusal::NotUrl),
        };
        if addrs.is_empty() {
            return Err(Refusal::Unresolvable);
        }
        // Every address must pass: a name with one private address is refused, whichever the
        // client would pick.
        for a in &addrs {
            self.check_addr(a.ip())?;
        }
        Ok(addrs[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &SsrfPolicy, ip: &str) -> bool {
        policy.check_addr(ip.parse().expect("ip")).is_err()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        let p = SsrfPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
            "240.0.0.1",
            // Finding 8: IPv4-mapped (even of a public address), 6to4 and site-local; and the
            // IPv4-translated and Teredo forms.
            "::ffff:8.8.8.8",
            "::ffff:0:7f00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2002:c000:0204::1",
            "2002:7f00:1::1",
            "fec0::1",
            "feff::1",
        ] {
            assert!(refused(&p, ip), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!refused(&p, ip), "{ip}");
        }
    }

    #[test]
    fn allowlisted_ranges_open_exactly_what_they_contain() {
        let p = SsrfPolicy {
            allow_http: true,
            allow_cidrs: vec![
                Cidr::parse("127.0.0.1/32").expect("cidr"),
                Cidr::parse("::1/128").expect("cidr"),
            ],
        };
        assert!(!refused(&p, "127.0.0.1"));
        assert!(!refused(&p, "::1"));
        assert!(
            refused(&p, "::ffff:127.0.0.1"),
            "an IPv4-mapped spelling is never let through by an IPv4 range"
        );
        assert!(refused(&p, "127.0.0.2"));
        assert!(refused(&p, "10.0.0.1"));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
        assert!(
            Cidr::parse("10.0.0.0/8")
                .expect("cidr")
                .contains("10.255.0.1".parse().expect("ip"))
        );
    }

    #[test]
    fn urls_must_be_https_without_credentials() {
        let strict = SsrfPolicy::default();
        assert_eq!(
            strict.check_url("http://example.com/").err(),
            Some(Refusal::Scheme)
        );
        assert_eq!(
            strict.check_url("file:///etc/passwd").err(),
            Some(Refusal::NotUrl)
        );
        assert_eq!(
            strict.check_url("https://user:pw@example.com/").err(),
            Some(Refusal::Credentials)
        );
        assert_eq!(strict.check_url("not a url").err(), Some(Refusal::NotUrl));
        assert!(strict.check_url("https://example.com/hooks").is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let p = SsrfPolicy {
            allow_http: true,
            allow_cidrs: Vec::new(),
        };
        let url = p.check_url("http://localhost:9/").expect("form");
        assert!(matches!(p.resolve(&url).await, Err(Refusal::Forbidden(_))));
    }
}
