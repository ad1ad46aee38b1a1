//! Switchyard's own listening sockets and this host's addresses: whether a backend address
//! would connect back into switchyard itself (a forwarding loop, or the admin API exposed on
//! the data port). Registration refuses such urls; the data plane asks again at connect time,
//! because a DNS name can change after it was registered. The decision is pure; only
//! `HostAddrs::discover` reads the interfaces.
use std::net::{IpAddr, SocketAddr};

/// Every address of this host's interfaces, and their broadcast addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddrs {
    pub ips: Vec<IpAddr>,
    pub broadcasts: Vec<IpAddr>,
}

impl HostAddrs {
    /// Reads the interfaces (getifaddrs). On error, only the loopback range counts as local,
    /// which `is_local` knows without a list.
    pub fn discover() -> HostAddrs {
        let mut out = HostAddrs::default();
        let Ok(ifaces) = nix::ifaddrs::getifaddrs() else {
            log::warn!(
                "cannot list this host's interface addresses; only loopback counts as local"
            );
            return out;
        };
        let ip_of = |s: &nix::sys::socket::SockaddrStorage| -> Option<IpAddr> {
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        };
        for i in ifaces {
            if let Some(ip) = i.address.as_ref().and_then(ip_of) {
                if !out.ips.contains(&ip) {
                    out.ips.push(ip);
                }
            }
            if let Some(b) = i.broadcast.as_ref().and_then(ip_of) {
                if !out.broadcasts.contains(&b) {
                    out.broadcasts.push(b);
                }
            }
        }
        out
    }

    /// Whether a connection to `ip` stays on this host: the whole loopback range, the
    /// unspecified address (Linux connects it to loopback), and every interface address.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.ips.iter().any(|a| a.to_canonical() == ip)
    }
}

/// One of switchyard's listening sockets, as bound (a port 0 in the config is the real port
/// here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `data`, `admin`, `tls`, `tcp` (for messages).
    pub role: &'static str,
    pub addr: SocketAddr,
}

/// Whether connecting to `target` reaches a socket listening on `listener`.
///
/// A listener on `0.0.0.0` accepts on every IPv4 address of the host; one on `::` is
/// dual-stack (Linux's default `bindv6only = 0`, which socket2 leaves alone) and accepts on
/// every address. v4-mapped IPv6 addresses are their IPv4 address.
pub fn reaches(listener: SocketAddr, target: SocketAddr, host: &HostAddrs) -> bool {
    if listener.port() != target.port() {
        return false;
    }
    let (l, t) = (listener.ip().to_canonical(), target.ip().to_canonical());
    if t.is_unspecified() {
        // connect(0.0.0.0) goes to this host; which listener answers depends on the kernel.
        return true;
    }
    match l {
        IpAddr::V4(v4) if v4.is_unspecified() => t.is_ipv4() && host.is_local(t),
        IpAddr::V6(v6) if v6.is_unspecified() => host.is_local(t),
        l => l == t,
    }
}

/// The set of switchyard's own listeners and this host's addresses, published in
/// `Shared::own_listeners` and replaced when the `[[tcp]]` listeners change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnListeners {
    pub listeners: Vec<Listener>,
    pub host: HostAddrs,
}

impl OwnListeners {
    pub fn new(listeners: Vec<Listener>, host: HostAddrs) -> Self {
        OwnListeners { listeners, host }
    }

    /// The listener a connection to `target` would reach, if any.
    pub fn find(&self, target: SocketAddr) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| reaches(l.addr, target, &self.host))
    }

    /// The first of `targets` that reaches one of our listeners, with that listener.
    pub fn first_own<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a SocketAddr>,
    ) -> Option<(SocketAddr, &Listener)> {
        targets
            .into_iter()
            .find_map(|t| self.find(*t).map(|l| (*t, l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn host() -> HostAddrs {
        HostAddrs {
            ips: vec!["10.1.2.3".parse().unwrap(), "fd00::5".parse().unwrap()],
            broadcasts: vec!["10.1.255.255".parse().unwrap()],
        }
    }

    #[test]
    fn specific_listener_only_its_own_address() {
        let h = host();
        assert!(reaches(sa("127.0.0.1:8080"), sa("127.0.0.1:8080"), &h));
        assert!(!reaches(sa("127.0.0.1:8080"), sa("127.0.0.1:8081"), &h));
        assert!(!reaches(sa("127.0.0.1:8080"), sa("127.0.0.2:8080"), &h));
        assert!(!reaches(sa("127.0.0.1:8080"), sa("10.1.2.3:8080"), &h));
        assert!(reaches(
            sa("127.0.0.1:8080"),
            sa("[::ffff:127.0.0.1]:8080"),
            &h
        ));
        assert!(reaches(sa("[::1]:8080"), sa("[::1]:8080"), &h));
    }

    #[test]
    fn wildcard_v4_listener_takes_every_local_v4_address() {
        let h = host();
        for t in [
            "127.0.0.1:80",
            "127.9.9.9:80",
            "10.1.2.3:80",
            "0.0.0.0:80",
            "[::ffff:10.1.2.3]:80",
        ] {
            assert!(reaches(sa("0.0.0.0:80"), sa(t), &h), "{t}");
        }
        for t in ["10.1.2.4:80", "10.1.2.3:81", "[::1]:80", "[fd00::5]:80"] {
            assert!(!reaches(sa("0.0.0.0:80"), sa(t), &h), "{t}");
        }
    }

    #[test]
    fn wildcard_v6_listener_is_dual_stack() {
        let h = host();
        for t in [
            "[::1]:80",
            "[fd00::5]:80",
            "127.0.0.1:80",
            "10.1.2.3:80",
            "[::]:80",
        ] {
            assert!(reaches(sa("[::]:80"), sa(t), &h), "{t}");
        }
        assert!(!reaches(sa("[::]:80"), sa("[fd00::6]:80"), &h));
        assert!(!reaches(sa("[::]:80"), sa("192.0.2.1:80"), &h));
    }

    #[test]
    fn unspecified_target_reaches_any_listener_on_its_port() {
        let h = HostAddrs::default();
        assert!(reaches(sa("127.0.0.1:80"), sa("0.0.0.0:80"), &h));
        assert!(reaches(sa("127.0.0.1:80"), sa("[::]:80"), &h));
    }

    #[test]
    fn own_listeners_name_the_one_reached() {
        let own = OwnListeners::new(
            vec![
                Listener {
                    role: "data",
                    addr: sa("0.0.0.0:8080"),
                },
                Listener {
                    role: "admin",
                    addr: sa("127.0.0.1:9901"),
                },
                Listener {
                    role: "tcp",
                    addr: sa("[::]:5433"),
                },
            ],
            host(),
        );
        assert_eq!(own.find(sa("10.1.2.3:8080")).map(|l| l.role), Some("data"));
        assert_eq!(
            own.find(sa("127.0.0.1:9901")).map(|l| l.role),
            Some("admin")
        );
        assert_eq!(own.find(sa("10.1.2.3:9901")), None);
        assert_eq!(own.find(sa("[fd00::5]:5433")).map(|l| l.role), Some("tcp"));
        assert_eq!(own.find(sa("192.0.2.7:8080")), None);
        let ts = [sa("192.0.2.7:9901"), sa("127.0.0.1:9901")];
        assert_eq!(
            own.first_own(&ts).map(|(t, l)| (t, l.role)),
            Some((ts[1], "admin"))
        );
    }

    #[test]
    fn discovery_finds_loopback() {
        // Every Linux host, container or not, has `lo`.
        let h = HostAddrs::discover();
        assert!(h.ips.iter().any(|ip| ip.is_loopback()), "{h:?}");
        assert!(h.is_local("127.0.0.1".parse().unwrap()));
        assert!(h.is_local("127.200.0.1".parse().unwrap()));
    }
}
