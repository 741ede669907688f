//! Network addresses as the edge sees them: address ranges ([`Cidr`]) for allow lists and
//! trusted proxies, and the client key that per-address limits count by ([`client_key`]).

use std::net::{IpAddr, Ipv6Addr};

/// An address range, e.g. `127.0.0.1/32` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let net: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The address per-address limits count by. IPv4-mapped IPv6 is its IPv4 address; any other
/// IPv6 address is its /64 prefix, because one subscriber is routinely handed a whole /64 and
/// can rotate through it at will (RFC 6177), so counting single IPv6 addresses would give
/// each client an endless supply of fresh ones.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(
            || IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            IpAddr::V4,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_by_its_address() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:ffff:eeee:dddd:1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn ranges_contain_exactly_their_addresses() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains(ip("10.1.255.1")) && !c.contains(ip("10.2.0.1")));
        let six = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(six.contains(ip("2001:db8:ffff::1")) && !six.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("::ffff:10.1.0.1")), "families never mix");
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nonsense").is_none());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("203.0.113.9"))
        );
    }
}
