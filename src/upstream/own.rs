//! switchyard's own listening addresses, so that a connect to one of them is refused (a
//! backend that is switchyard itself would loop). Pure set logic; the connect path asks it
//! only when a port matches, so a normal connect costs nothing extra.
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnListeners {
    addrs: Vec<SocketAddr>,
}

impl OwnListeners {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        OwnListeners { addrs }
    }

    /// True if some listener has this port: the only case in which [`OwnListeners::is_own`]
    /// needs the connection's local address.
    pub fn has_port(&self, port: u16) -> bool {
        self.addrs.iter().any(|a| a.port() == port)
    }

    /// True if a connection from `local` to `peer` reaches one of our listeners. One bound to
    /// a specific address is reached at that address (or at the unspecified address, which
    /// connects to this host); one bound to `0.0.0.0` / `::` at any address of this host:
    /// loopback, unspecified, or the one the kernel also chose as our source address
    /// (`local.ip() == peer.ip()` only when the peer is this host).
    pub fn is_own(&self, local: Option<SocketAddr>, peer: SocketAddr) -> bool {
        let same_host = |ip: IpAddr| {
            ip.is_loopback() || ip.is_unspecified() || local.is_some_and(|l| l.ip() == ip)
        };
        let peer_ip = canonical(peer.ip());
        self.addrs.iter().any(|a| {
            a.port() == peer.port()
                && if a.ip().is_unspecified() {
                    same_host(peer_ip)
                } else {
                    canonical(a.ip()) == peer_ip
                        || (peer_ip.is_unspecified() && same_host(canonical(a.ip())))
                }
        })
    }
}

/// v4-mapped IPv6 as IPv4, so `::ffff:127.0.0.1` and `127.0.0.1` compare equal.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn specific_and_wildcard_listeners() {
        let own = OwnListeners::new(vec![sa("127.0.0.1:8080"), sa("0.0.0.0:9901")]);
        assert!(own.has_port(8080) && own.has_port(9901) && !own.has_port(80));
        assert!(own.is_own(None, sa("127.0.0.1:8080")));
        assert!(own.is_own(None, sa("[::ffff:127.0.0.1]:8080")));
        assert!(!own.is_own(None, sa("127.0.0.2:8080")));
        assert!(!own.is_own(None, sa("10.0.0.5:8080")));
        assert!(
            own.is_own(None, sa("0.0.0.0:8080")),
            "0.0.0.0 reaches this host"
        );
        assert!(own.is_own(None, sa("127.0.0.9:9901")));
        assert!(own.is_own(Some(sa("10.0.0.5:40000")), sa("10.0.0.5:9901")));
        assert!(!own.is_own(Some(sa("10.0.0.5:40000")), sa("10.0.0.6:9901")));
        assert!(!own.is_own(None, sa("10.0.0.5:9901")));
    }
}
