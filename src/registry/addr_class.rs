//! Address classes a registered backend may never have: link-local (cloud metadata services
//! live at 169.254.169.254), unspecified, multicast and broadcast. A registration is a request
//! from the network to make switchyard connect somewhere; these are the SSRF favourites. Pure.
use super::self_target::HostAddrs;
use std::net::IpAddr;

/// Why `ip` cannot be a backend, or None when it can.
pub fn forbidden(ip: IpAddr, host: &HostAddrs) -> Option<&'static str> {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 0 {
                // 0.0.0.0/8 is "this network": 0.0.0.0 itself connects to this host.
                Some("an unspecified address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() || host.broadcasts.contains(&ip) {
                Some("a broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("an unspecified address")
            } else if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let h = HostAddrs {
            ips: vec![],
            broadcasts: vec!["10.255.255.255".parse().unwrap()],
        };
        let bad = [
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("10.255.255.255", "broadcast"),
        ];
        for (ip, class) in bad {
            let why = forbidden(ip.parse().unwrap(), &h).unwrap_or("");
            assert!(why.contains(class), "{ip}: {why:?}");
        }
        for ok in [
            "127.0.0.1",
            "10.0.0.8",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert_eq!(forbidden(ok.parse().unwrap(), &h), None, "{ok}");
        }
    }
}
