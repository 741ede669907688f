//! The client's address, for per-address limits (logins, password resets, unpaid orders).
//!
//! Without trusted proxies (`KEEL_TRUSTED_PROXIES` empty, the default) it is the TCP peer, and
//! forwarding headers are ignored: anyone can write them. Behind a load balancer every request
//! comes from the balancer, so the operator lists its ranges; then, for a request whose peer is
//! one of them, Keel reads the one forwarding header the operator names
//! (`KEEL_FORWARDED_HEADER`: `x-forwarded-for`, the default, or `forwarded`, RFC 7239) and
//! walks its hops **from the right**, skipping trusted proxies, and stops at the first hop that
//! is not one: the address the outermost trusted proxy saw. Hops to its left were written by
//! the client and are never believed. A hop that is not an address (`unknown`, an obfuscated
//! name, garbage) ends the walk at the last trusted hop, so a broken chain can only make Keel
//! count a proxy, never a forged client. Only the named header is read: a client cannot slip
//! an address past a proxy that rewrites the other one.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header::FORWARDED, request::Parts},
};
use keel_kernel::net::Cidr;

use crate::{AppState, problem::Problem};

/// Which forwarding header trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// How the client address is found, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddrPolicy {
    pub trusted_proxies: Vec<Cidr>,
    pub header: ForwardedHeader,
}

impl Default for ClientAddrPolicy {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// One hop of `X-Forwarded-For`: an address, perhaps with a port.
fn xff_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The `for=` of one `Forwarded` element (RFC 7239 §4, §6): a node name that is an address
/// (IPv6 in brackets), perhaps quoted and with a port. `unknown` and obfuscated names are not.
fn forwarded_hop(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, _port) = rest.split_once(']')?;
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = value.split_once(':').map_or(value, |(h, _)| h);
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Splits a header's elements at commas outside quoted strings.
fn elements(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

impl ClientAddrPolicy {
    /// Whether `ip` is a trusted proxy (its forwarding headers count).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut current = canonical(peer);
        if !self.trusts(current) {
            if self.trusted_proxies.is_empty() {
                warn_once_if_forwarded(headers);
            }
            return current;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => FORWARDED.as_str(),
        };
        // Every line of the header, in order, is one list (RFC 9110 §5.3).
        let mut hops: Vec<Option<IpAddr>> = Vec::new();
        for line in headers.get_all(name) {
            let Ok(line) = line.to_str() else {
                hops.push(None);
                continue;
            };
            for element in elements(line) {
                hops.push(match self.header {
                    ForwardedHeader::XForwardedFor => xff_hop(element),
                    ForwardedHeader::Forwarded => forwarded_hop(element),
                });
            }
        }
        for hop in hops.into_iter().rev() {
            match hop.map(canonical) {
                Some(ip) if self.trusts(ip) => current = ip,
                Some(ip) => return ip,
                None => return current,
            }
        }
        current
    }
}

/// Logs once per process that requests carry forwarding headers while no proxy is trusted:
/// behind a load balancer that means every client shares the balancer's address and its
/// per-address limits (the header itself is still ignored, as it must be).
fn warn_once_if_forwarded(headers: &HeaderMap) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if (headers.contains_key("x-forwarded-for") || headers.contains_key(FORWARDED))
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "requests carry X-Forwarded-For or Forwarded but KEEL_TRUSTED_PROXIES is empty: \
             behind a load balancer, every client then counts as the balancer's address"
        );
    }
}

/// The client's address as Keel counts it (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            // The listener always provides it; a router served without it is a wiring bug.
            return Err(Problem::internal(&std::io::Error::other(
                "the request carries no peer address",
            )));
        };
        Ok(Self(
            state.client_addr.client_addr(peer.ip(), &parts.headers),
        ))
    }
}

impl ClientAddr {
    /// The address as the per-address limits key it (IPv6 by its /64).
    pub fn key(self) -> IpAddr {
        keel_kernel::net::client_key(self.0)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn policy(header: ForwardedHeader, trusted: &[&str]) -> ClientAddrPolicy {
        ClientAddrPolicy {
            trusted_proxies: trusted
                .iter()
                .map(|c| Cidr::parse(c).expect("cidr"))
                .collect(),
            header,
        }
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let p = ClientAddrPolicy::default();
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client_addr(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let p = policy(ForwardedHeader::XForwardedFor, &["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client_addr(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let p = policy(ForwardedHeader::XForwardedFor, &["10.0.0.0/8"]);
        // The client forged the first entry; the proxy appended what it saw.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // All trusted: the leftmost is the client.
        let h = headers("x-forwarded-for", &["10.0.0.9, 10.0.0.7"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.0.0.9"));
        // Garbage where the client should be: the proxy is counted, never a forged address.
        let h = headers("x-forwarded-for", &["203.0.113.9, garbage, 10.0.0.7"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.0.0.7"));
        // No header at all: the trusted peer itself.
        assert_eq!(
            p.client_addr(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn rfc_7239_elements_are_read_with_quotes_ports_and_brackets() {
        let p = policy(ForwardedHeader::Forwarded, &["10.0.0.0/8", "fd00::/8"]);
        let h = headers(
            "forwarded",
            &[
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#,
                "For=\"10.1.2.3:80\"",
            ],
        );
        assert_eq!(p.client_addr(ip("fd00::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=unknown, for=10.0.0.5"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.0.0.5"));
        // The header the operator did not name is not read.
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_their_ipv4_addresses() {
        let p = policy(ForwardedHeader::XForwardedFor, &["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["::ffff:203.0.113.9, ::ffff:10.0.0.7"]);
        assert_eq!(p.client_addr(ip("::ffff:10.0.0.2"), &h), ip("203.0.113.9"));
    }
}
