//! The client's address behind trusted proxies.
//!
//! The per-address limits (failed key attempts, WHIP sessions) need the
//! address of the client, not of the CDN edge or load balancer in front:
//! behind one, every request would come from a handful of addresses and one
//! guesser would lock everybody out. A proxy names the client in
//! `X-Forwarded-For`, appending the address it saw to the list it got. Any
//! client can write that header too, so it is believed only from the
//! proxies the operator names ([`TrustedProxies`], `--trusted-proxy CIDR`),
//! and only as far back as the chain is trusted: walking the list from the
//! right, the first address that is not a trusted proxy is the client (the
//! rule of nginx's `real_ip_recursive on` and of RFC 7239 §7.4's advice).
//! Without trusted proxies the header is ignored and the TCP peer is the
//! client.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

/// The header read from trusted proxies (de facto standard; RFC 7239's
/// `Forwarded` is rarely sent by CDNs).
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// A network in CIDR notation: `10.0.0.0/8`, `2001:db8::/32`, or one
/// address (`192.0.2.7`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or network (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr {
            net: net.to_canonical(),
            prefix,
        })
    }
}

impl Cidr {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts `networks`.
    pub fn new(networks: Vec<Cidr>) -> Self {
        Self(networks)
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`: `peer`
    /// itself unless it is a trusted proxy; else the rightmost address of
    /// `X-Forwarded-For` (over every such header, in order) that is not a
    /// trusted proxy. An entry that is not an address stops the walk: what
    /// lies left of it was written by someone untrusted, so the last trusted
    /// hop is taken as the client.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.7:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(FORWARDED_FOR, v.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn networks_parse_and_contain() {
        let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains(ip("10.255.1.2")));
        assert!(net.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "192.0.2.7".parse().expect("one address");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "x", "10.0.0.0/", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let spoofed = headers(&["203.0.113.5"]);
        assert_eq!(
            none.client(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        let cdn = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        // From an untrusted peer, the header is the client's own words.
        assert_eq!(cdn.client(ip("198.51.100.1"), &spoofed), ip("198.51.100.1"));
        // From the proxy: the address it appended.
        assert_eq!(cdn.client(ip("10.0.0.2"), &spoofed), ip("203.0.113.5"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "2001:db8::/32".parse().expect("cidr"),
        ]);
        // The client forged the leftmost entry; the edge appended the real
        // address, then an inner proxy appended the edge's.
        let chain = headers(&["192.0.2.99, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &chain), ip("203.0.113.5"));
        let ported = headers(&["[2001:db9::7]:4711, 10.9.9.9:80"]);
        assert_eq!(
            proxies.client(ip("2001:db8::1"), &ported),
            ip("2001:db9::7")
        );
        // Garbage right of the client: the last trusted hop is blamed.
        let garbage = headers(&["203.0.113.5, not-an-address, 10.1.1.1"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &garbage), ip("10.1.1.1"));
        // Only proxies in the list, or no header: the furthest one.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &headers(&["10.3.3.3"])),
            ip("10.3.3.3")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }
}
