//! Where a notification may come from: the peer address and the source allow-list.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The peer address of the connection a request came in on, for
/// [`allow_network`](super::NotifyReceiverBuilder::allow_network). Insert it as a request extension
/// (a `SocketAddr` extension is read too). With axum, copy it from `ConnectInfo`:
///
/// ```
/// use std::net::SocketAddr;
///
/// use axum::extract::ConnectInfo;
/// use tower_withings::notify::{NotifyReceiver, PeerAddr};
///
/// let (receiver, _notifications) = NotifyReceiver::builder(NotifyReceiver::random_secret())
///     .allow_network("203.0.113.0/24".parse().unwrap())
///     .build()
///     .unwrap();
/// let receiver = tower::ServiceBuilder::new()
///     .map_request(|mut request: axum::extract::Request| {
///         let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().copied();
///         if let Some(ConnectInfo(peer)) = peer {
///             request.extensions_mut().insert(PeerAddr(peer));
///         }
///         request
///     })
///     .service(receiver);
/// let app: axum::Router = axum::Router::new().route_service("/withings/notify/{secret}", receiver);
/// // Serve it with `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
/// # let _ = app;
/// ```
///
/// Behind a reverse proxy the peer is the proxy: insert the client address your proxy
/// vouches for instead (never an `X-Forwarded-For` header anyone can send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// An IP network (`203.0.113.0/24`, `2001:db8::/32`, or one address) for the source
/// allow-list. IPv4-mapped IPv6 peers (`::ffff:203.0.113.9`) match IPv4 networks.
///
/// ```
/// use tower_withings::notify::Network;
///
/// let net: Network = "203.0.113.0/24".parse().unwrap();
/// assert!(net.contains("203.0.113.9".parse().unwrap()));
/// assert!(net.contains("::ffff:203.0.113.9".parse().unwrap()));
/// assert!(!net.contains("203.0.114.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Network>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`Network`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNetworkError(String);

impl fmt::Display for ParseNetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP network: write an address or address/prefix, e.g. 203.0.113.0/24",
            self.0
        )
    }
}

impl std::error::Error for ParseNetworkError {}

impl Network {
    /// The network of `addr` with a `prefix`-bit mask (at most 32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Network> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        let canonical = addr.to_canonical();
        let prefix = if addr.is_ipv6() && canonical.is_ipv4() {
            prefix.checked_sub(96)?
        } else {
            prefix
        };
        Some(Network {
            addr: canonical,
            prefix,
        })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
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

impl FromStr for Network {
    type Err = ParseNetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseNetworkError(crate::error::shorten(s));
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Network::new(addr, prefix).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net: Network = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let any: Network = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let mapped: Network = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.9.9.9".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        assert!("::ffff:10.0.0.0/8".parse::<Network>().is_err());
    }
}
