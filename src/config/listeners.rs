//! Listen addresses that cannot all be bound: after resolving names (`localhost`), two
//! listeners on one port overlap when they share an address or one of them is a wildcard that
//! covers the other (`0.0.0.0` every IPv4 address, `::` every address: Linux sockets are
//! dual-stack by default). `check` reports them with key and line instead of letting the run
//! fail with EADDRINUSE.
use super::address::{self, Address};
use super::check::Checker;
use super::schema::RawConfig;
use super::value::Val;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Whether binding `a` and then `b` (SO_REUSEADDR, no SO_REUSEPORT) fails.
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |w: IpAddr, o: IpAddr| match w {
        IpAddr::V4(v4) => v4.is_unspecified() && o.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    x == y || covers(x, y) || covers(y, x)
}

/// What a listen address binds to (every address a name resolves to: which one `bind`
/// takes depends on the resolver's order).
pub fn resolve(a: &Address) -> Vec<SocketAddr> {
    match a.ip() {
        Some(ip) => vec![SocketAddr::new(ip, a.port)],
        None => (a.host.as_str(), a.port)
            .to_socket_addrs()
            .map(|it| it.collect())
            .unwrap_or_default(),
    }
}

/// Reports every pair of overlapping listeners, on the later one's key and line.
pub(super) fn check(c: &mut Checker<'_>, raw: &RawConfig, server: &Address, admin: &Address) {
    let span = |v: Option<&Val<String>>| v.map(|v| v.span.clone());
    let server_val = raw
        .server
        .as_ref()
        .and_then(|s| s.listen.as_ref())
        .or(raw.listen.as_ref());
    let mut all: Vec<(String, Option<std::ops::Range<usize>>, Address)> = vec![
        ("server.listen".into(), span(server_val), server.clone()),
        (
            "admin.listen".into(),
            span(raw.admin.as_ref().and_then(|a| a.listen.as_ref())),
            admin.clone(),
        ),
    ];
    for (i, t) in raw.tcp.iter().enumerate() {
        if let Ok(a) = address::parse(t.listen.value.trim(), true) {
            all.push((format!("tcp[{i}].listen"), Some(t.listen.span.clone()), a));
        }
    }
    if let Some(t) = &raw.tls {
        let v = t.listen.as_ref();
        let text = v.map_or(crate::config::tls::DEFAULT_LISTEN, |v| v.value.trim());
        if let Ok(a) = address::parse(text, true) {
            all.push(("tls.listen".into(), span(v), a));
        }
    }
    let resolved: Vec<Vec<SocketAddr>> = all.iter().map(|(_, _, a)| resolve(a)).collect();
    for j in 1..all.len() {
        for i in 0..j {
            // The very same address is reported where it is compared as written.
            if all[i].2 == all[j].2 {
                continue;
            }
            let hit = resolved[j].iter().find_map(|b| {
                resolved[i]
                    .iter()
                    .find(|a| overlap(**a, *b))
                    .map(|a| (*a, *b))
            });
            if let Some((a, b)) = hit {
                let (key, span, addr) = &all[j];
                c.problem(
                    span.as_ref(),
                    key,
                    format!(
                        "{addr} ({b}) overlaps {} = {} ({a}): both cannot be bound",
                        all[i].0, all[i].2
                    ),
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(a: &str, b: &str) -> bool {
        let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(overlap(a, b), overlap(b, a), "symmetric");
        overlap(a, b)
    }

    #[test]
    fn wildcards_cover_their_family_and_v6_covers_all() {
        assert!(o("127.0.0.1:80", "127.0.0.1:80"));
        assert!(o("0.0.0.0:80", "127.0.0.1:80"));
        assert!(o("0.0.0.0:80", "10.0.0.1:80"));
        assert!(o("[::]:80", "127.0.0.1:80"));
        assert!(o("[::]:80", "[::1]:80"));
        assert!(o("[::]:80", "0.0.0.0:80"));
        assert!(o("[::ffff:127.0.0.1]:80", "127.0.0.1:80"));
        assert!(!o("0.0.0.0:80", "[::1]:80"));
        assert!(!o("127.0.0.1:80", "127.0.0.2:80"));
        assert!(!o("127.0.0.1:80", "127.0.0.1:81"));
        assert!(
            !o("127.0.0.1:0", "127.0.0.1:0"),
            "port 0 is a fresh port each time"
        );
    }

    fn problems(src: &str) -> String {
        match super::super::parse(src, "t.toml", Box::new(|_| None)) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn check_reports_key_and_line() {
        let e = problems(
            "[server]\nlisten = \"127.0.0.1:18080\"\n[admin]\nlisten = \"0.0.0.0:18080\"\n",
        );
        assert!(
            e.contains("t.toml:4: admin.listen") && e.contains("overlaps server.listen"),
            "{e}"
        );
        let e = problems(
            "[server]\nlisten = \"127.0.0.1:18080\"\n[admin]\nlisten = \"localhost:18080\"\n",
        );
        assert!(e.contains("t.toml:4: admin.listen"), "{e}");
        let e = problems("[server]\nlisten = \"127.0.0.1:18080\"\n[[tcp]]\nlisten = \"[::]:18080\"\ntargets = [\"127.0.0.1:1\"]\n");
        assert!(e.contains("t.toml:4: tcp[0].listen"), "{e}");
        // The default data listener is 0.0.0.0:8080: an admin port 8080 anywhere overlaps it.
        let e = problems("[admin]\nlisten = \"127.0.0.1:8080\"\n");
        assert!(e.contains("t.toml:2: admin.listen"), "{e}");
        assert_eq!(
            problems(
                "[server]\nlisten = \"127.0.0.1:18080\"\n[admin]\nlisten = \"127.0.0.2:18080\"\n"
            ),
            ""
        );
    }
}
