//! The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary) that an L4
//! listener with `send_proxy` writes to the target first, so the target sees the client address.
use crate::config::tcp::ProxyVersion;
use std::net::{IpAddr, SocketAddr};

/// The v2 signature: chosen by the spec so that it can never start a valid v1 line or HTTP.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The header for a connection from `client` accepted on `local`.
pub fn header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(client, local);
    match version {
        ProxyVersion::V1 => v1(src, dst),
        ProxyVersion::V2 => v2(src, dst),
    }
}

/// Both addresses in one family, as both versions need: a v4-mapped IPv6 address (a client of
/// a dual-stack `[::]` listener) is given as IPv4 when the other one can be too, else both as
/// IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canon(a), canon(b));
    match (a.ip(), b.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
        _ => (v6(a), v6(b)),
    }
}

fn v6(s: SocketAddr) -> SocketAddr {
    match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    }
}

fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // AF_INET, STREAM; 4 + 4 + 2 + 2 address bytes.
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            let (s, d) = (v6(src), v6(dst));
            let oct = |a: SocketAddr| match a.ip() {
                IpAddr::V6(ip) => ip.octets(),
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            };
            // AF_INET6, STREAM; 16 + 16 + 2 + 2 address bytes.
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&oct(s));
            out.extend_from_slice(&oct(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines_as_in_the_spec() {
        // The example of proxy-protocol.txt section 2.1.
        assert_eq!(
            header(
                ProxyVersion::V1,
                sa("192.168.0.1:56324"),
                sa("192.168.0.11:443")
            ),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            header(ProxyVersion::V1, sa("[2001:db8::1]:5000"), sa("[::1]:80")),
            b"PROXY TCP6 2001:db8::1 ::1 5000 80\r\n"
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(
            header(
                ProxyVersion::V1,
                sa("[::ffff:10.0.0.1]:1000"),
                sa("[::ffff:10.0.0.2]:2000")
            ),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n"
        );
        assert_eq!(
            header(
                ProxyVersion::V1,
                sa("[::ffff:10.0.0.1]:1000"),
                sa("[::1]:2000")
            ),
            b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1000 2000\r\n"
        );
    }

    #[test]
    fn v2_binary_layout() {
        let h = header(
            ProxyVersion::V2,
            sa("192.168.0.1:56324"),
            sa("192.168.0.11:443"),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        want.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        want.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(h, want);
        let h = header(ProxyVersion::V2, sa("[::1]:1"), sa("[::2]:2"));
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(h[16 + 15], 1);
        assert_eq!(h[32 + 15], 2);
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }
}
