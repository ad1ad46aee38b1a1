//! The rules a registration must pass before it is stored: source address, the permissions of
//! the registering key, route conflicts, and a per-address rate limit. Pure; time is an input.
use super::Registration;
use crate::config::{ApiKey, Route};
use crate::routing::pattern::Pattern;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Whether `ip` may register (v4-mapped v6 addresses count as their v4 address).
pub fn allowed(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// The API key a presented secret belongs to. Every configured digest is compared in
/// constant time, so timing does not tell how close a guess was or which key matched.
pub fn find_key<'k>(keys: &'k [ApiKey], presented: &[u8]) -> Option<&'k ApiKey> {
    use sha2::{Digest, Sha256};
    let digest: [u8; 32] = Sha256::digest(presented).into();
    let mut found = None;
    for k in keys {
        let diff = k
            .sha256
            .iter()
            .zip(&digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && found.is_none() {
            found = Some(k);
        }
    }
    found
}

/// The permissions a registration needs that `key` does not hold; Err names the first.
pub fn check_permissions(reg: &Registration, key: Option<&ApiKey>) -> Result<(), String> {
    for r in &reg.routes {
        if let Some(p) = &r.permission {
            match key {
                None => {
                    return Err(format!(
                        "route {} needs permission {p}: send an X-API-Key that holds it",
                        r.path
                    ))
                }
                Some(k) if !k.permissions.iter().any(|x| x == p) => {
                    return Err(format!("API key {} does not hold permission {p}", k.name))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn same_route(path_a: &str, method_a: Option<&str>, path_b: &str, methods_b: &[String]) -> bool {
    let (Ok(a), Ok(b)) = (Pattern::parse(path_a), Pattern::parse(path_b)) else {
        return false;
    };
    a == b
        && match method_a {
            None => true,
            Some(m) => methods_b.is_empty() || methods_b.iter().any(|x| x == m),
        }
}

/// A route of `reg` equal to a static route or to another service's route (409).
pub fn find_conflict(
    reg: &Registration,
    statics: &[Route],
    others: &[Registration],
) -> Option<String> {
    for r in &reg.routes {
        for s in statics {
            if same_route(&r.path, r.method.as_deref(), &s.path, &s.methods) {
                return Some(format!(
                    "route {} conflicts with the static route {}",
                    r.path, s.path
                ));
            }
        }
        for o in others.iter().filter(|o| o.service != reg.service) {
            for orr in &o.routes {
                let methods: Vec<String> = orr.method.iter().cloned().collect();
                if same_route(&r.path, r.method.as_deref(), &orr.path, &methods) {
                    return Some(format!(
                        "route {} is already registered by service {}",
                        r.path, o.service
                    ));
                }
            }
        }
    }
    None
}

/// A fixed one-minute window per source address.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl RateLimiter {
    pub fn new(limit: u32) -> Self {
        RateLimiter {
            limit,
            window: Duration::from_secs(60),
            seen: HashMap::new(),
        }
    }

    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Counts an attempt from `ip` at `now`; false when it is over the limit.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.seen.len() > 10_000 {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let e = self.seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegRoute;

    fn reg(name: &str, path: &str, method: Option<&str>, perm: Option<&str>) -> Registration {
        Registration {
            service: name.into(),
            url: "http://127.0.0.1:1".into(),
            health_endpoint: "/health".into(),
            tls: false,
            tls_ca: None,
            tls_server_name: None,
            routes: vec![RegRoute {
                method: method.map(String::from),
                path: path.into(),
                permission: perm.map(String::from),
            }],
        }
    }

    #[test]
    fn cidr_allow_list() {
        let nets: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(allowed(&nets, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&nets, "10.2.3.4".parse().unwrap()));
        assert!(allowed(&nets, "::ffff:10.2.3.4".parse().unwrap()));
        assert!(!allowed(&nets, "127.0.0.2".parse().unwrap()));
        assert!(!allowed(&nets, "::1".parse().unwrap()));
    }

    #[test]
    fn keys_and_permissions() {
        use sha2::{Digest, Sha256};
        let keys = vec![ApiKey {
            name: "blog".into(),
            sha256: Sha256::digest(b"test").into(),
            permissions: vec!["comments:read".into()],
        }];
        let k = find_key(&keys, b"test").unwrap();
        assert_eq!(k.name, "blog");
        assert!(find_key(&keys, b"tesT").is_none());
        assert!(check_permissions(&reg("a", "/x", None, Some("comments:read")), Some(k)).is_ok());
        assert!(check_permissions(&reg("a", "/x", None, Some("comments:write")), Some(k)).is_err());
        assert!(check_permissions(&reg("a", "/x", None, Some("comments:read")), None).is_err());
        assert!(check_permissions(&reg("a", "/x", None, None), None).is_ok());
    }

    #[test]
    fn conflicts() {
        let statics = vec![Route {
            path: "/api/comments/*".into(),
            methods: vec!["GET".into()],
            backend: "c".into(),
            permission: None,
        }];
        assert!(find_conflict(
            &reg("a", "/api/comments/*", Some("GET"), None),
            &statics,
            &[]
        )
        .is_some());
        assert!(find_conflict(&reg("a", "/api/comments/*", None, None), &statics, &[]).is_some());
        assert!(find_conflict(
            &reg("a", "/api/comments/*", Some("POST"), None),
            &statics,
            &[]
        )
        .is_none());
        let other = reg("b", "/api/x/*", None, None);
        assert!(find_conflict(
            &reg("a", "/api/x/*", Some("GET"), None),
            &[],
            std::slice::from_ref(&other)
        )
        .is_some());
        assert!(
            find_conflict(&reg("b", "/api/x/*", None, None), &[], &[other]).is_none(),
            "a service may replace itself"
        );
    }

    #[test]
    fn rate_limit_per_address_per_minute() {
        let mut rl = RateLimiter::new(3);
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(rl.allow(a, t0) && rl.allow(a, t0) && rl.allow(a, t0));
        assert!(!rl.allow(a, t0 + Duration::from_secs(59)));
        assert!(rl.allow(b, t0));
        assert!(rl.allow(a, t0 + Duration::from_secs(60)));
    }
}
