//! The rules a registration must pass before it is stored: source address, the permissions of
//! the registering key, route conflicts, and a per-address rate limit. Pure; time is an input.
use super::{RegRoute, Registration};
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

/// A key that holds `p`; Err says what is missing.
fn require(key: Option<&ApiKey>, p: &str, what: &str) -> Result<(), String> {
    match key {
        None => Err(format!(
            "{what} needs permission {p}: send an X-API-Key that holds it"
        )),
        Some(k) if !k.permissions.iter().any(|x| x == p) => Err(format!(
            "{what} needs permission {p}, which API key {} does not hold",
            k.name
        )),
        Some(_) => Ok(()),
    }
}

/// `[gateway] registration_permission`: when set, every registration and deregistration
/// needs a key holding it.
pub fn check_registration_permission(
    required: Option<&str>,
    key: Option<&ApiKey>,
) -> Result<(), String> {
    match required {
        None => Ok(()),
        Some(p) => require(key, p, "registering and deregistering"),
    }
}

/// Replacing or deleting a registered service needs every permission its current routes
/// carry: otherwise a keyless caller could drop a guarded route or point it elsewhere.
pub fn check_owner(current: &Registration, key: Option<&ApiKey>) -> Result<(), String> {
    for r in &current.routes {
        if let Some(p) = &r.permission {
            require(
                key,
                p,
                &format!("changing service {} (route {})", current.service, r.path),
            )?;
        }
    }
    Ok(())
}

/// Whether some path matches both patterns.
fn intersects(a: &Pattern, b: &Pattern) -> bool {
    use crate::routing::pattern::Seg;
    let (n, m) = (a.segs.len(), b.segs.len());
    let lengths = match (a.trailing, b.trailing) {
        (false, false) => n == m,
        (true, false) => m > n,
        (false, true) => n > m,
        (true, true) => true,
    };
    lengths
        && a.segs.iter().zip(&b.segs).all(|(x, y)| match (x, y) {
            (Seg::Lit(x), Seg::Lit(y)) => x == y,
            _ => true,
        })
}

/// A route of `reg` that would take requests away from a permission-guarded route (static,
/// or another service's) without carrying that permission: one that matches some of the
/// same requests and ranks at least as high (SPEC §3), or is the same pattern. A route
/// carries one permission, so it must carry exactly the guard's.
pub fn find_unguarded(
    reg: &Registration,
    statics: &[Route],
    others: &[Registration],
) -> Option<String> {
    use crate::routing::table::rank;
    // The low 24 bits of a rank are the order in the file, which a new registration may
    // change: ties count as taking the requests.
    let class =
        |p: &Pattern, has_methods: bool, is_static: bool| rank(p, has_methods, is_static, 0) >> 24;
    type Guard<'a> = (Pattern, Vec<String>, bool, &'a str, String, &'a [String]);
    let mut guards: Vec<Guard<'_>> = Vec::new();
    for s in statics {
        if let Some(p) = &s.permission {
            guards.push((
                s.path.clone(),
                s.methods.clone(),
                true,
                p,
                format!("the static route {}", s.path),
                &s.hosts,
            ));
        }
    }
    for o in others.iter().filter(|o| o.service != reg.service) {
        for r in &o.routes {
            if let Some(p) = &r.permission {
                let pat = r.path.clone();
                let methods = r.method.iter().cloned().collect();
                guards.push((
                    pat,
                    methods,
                    false,
                    p,
                    format!("route {} of service {}", r.path, o.service),
                    &r.hosts,
                ));
            }
        }
    }
    for r in &reg.routes {
        let rp = &r.path;
        let r_class = class(rp, r.method.is_some(), false);
        for (gp, gm, g_static, perm, what, g_hosts) in &guards {
            let methods_overlap = match &r.method {
                None => true,
                Some(m) => gm.is_empty() || gm.contains(m),
            };
            // Host groups come before specificity (SPEC §3): a route with hosts takes every
            // request for a host it shares with the guard, however general its path; one
            // without hosts never takes a request from a guard that names hosts. Counting a
            // wildcard route as taking from an exact one errs on the safe side.
            if !crate::routing::host::can_overlap(&r.hosts, g_hosts) {
                continue;
            }
            let takes = match (r.hosts.is_empty(), g_hosts.is_empty()) {
                (false, true) => true,
                (true, false) => false,
                _ => *rp == *gp || r_class >= class(gp, !gm.is_empty(), *g_static),
            };
            if methods_overlap
                && intersects(rp, gp)
                && takes
                && r.permission.as_deref() != Some(*perm)
            {
                return Some(format!(
                    "route {} would take requests from {what}, which needs permission {perm}: give the route \"permission\": \"{perm}\"",
                    r.path
                ));
            }
        }
    }
    None
}

/// Same path, overlapping methods and an exact host in common (or neither has hosts): a
/// duplicate (SPEC §3).
fn same_route(a: &RegRoute, pb: &Pattern, methods_b: &[String], hosts_b: &[String]) -> bool {
    a.path == *pb
        && match a.method.as_deref() {
            None => true,
            Some(m) => methods_b.is_empty() || methods_b.iter().any(|x| x == m),
        }
        && crate::routing::host::share_entry(&a.hosts, hosts_b)
}

/// A route of `reg` equal to a static route or to another service's route (409).
pub fn find_conflict(
    reg: &Registration,
    statics: &[Route],
    others: &[Registration],
) -> Option<String> {
    for r in &reg.routes {
        for s in statics {
            if same_route(r, &s.path, &s.methods, &s.hosts) {
                return Some(format!(
                    "route {} conflicts with the static route {}",
                    r.path, s.path
                ));
            }
        }
        for o in others.iter().filter(|o| o.service != reg.service) {
            for orr in &o.routes {
                let methods: Vec<String> = orr.method.iter().cloned().collect();
                if same_route(r, &orr.path, &methods, &orr.hosts) {
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

    fn reg(name: &str, path: &str, method: Option<&str>, perm: Option<&str>) -> Registration {
        Registration {
            service: name.into(),
            url: "http://127.0.0.1:1".into(),
            health_endpoint: "/health".into(),
            tls: false,
            tls_ca: None,
            tls_server_name: None,
            protocol: Default::default(),
            routes: vec![RegRoute {
                method: method.map(String::from),
                path: Pattern::parse(path).unwrap(),
                permission: perm.map(String::from),
                hosts: vec![],
            }],
            hold_timeout: None,
            hold_max: None,
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
            path: Pattern::parse("/api/comments/*").unwrap(),
            methods: vec!["GET".into()],
            backend: "c".into(),
            permission: None,
            hosts: vec![],
            rewrites: Default::default(),
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

    fn route(path: &str, methods: &[&str], perm: Option<&str>) -> Route {
        Route {
            path: Pattern::parse(path).unwrap(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            backend: "b".into(),
            permission: perm.map(String::from),
            hosts: vec![],
            rewrites: Default::default(),
        }
    }

    fn with_hosts(mut r: Registration, hosts: &[&str]) -> Registration {
        r.routes[0].hosts = hosts.iter().map(|h| h.to_string()).collect();
        r
    }

    #[test]
    fn hosts_decide_conflicts() {
        let mut hosted = route("/api/*", &[], None);
        hosted.hosts = vec!["api.example.com".into()];
        let statics = vec![hosted];
        let plain = reg("a", "/api/*", None, None);
        assert!(
            find_conflict(&plain, &statics, &[]).is_none(),
            "host-less vs hosted"
        );
        let same = with_hosts(reg("a", "/api/*", None, None), &["api.example.com"]);
        assert!(find_conflict(&same, &statics, &[]).is_some());
        let other = with_hosts(reg("a", "/api/*", None, None), &["www.example.com"]);
        assert!(find_conflict(&other, &statics, &[]).is_none());
        let wild = with_hosts(reg("a", "/api/*", None, None), &["*.example.com"]);
        assert!(find_conflict(&wild, &statics, &[]).is_none());
        let b = with_hosts(
            reg("b", "/api/*", None, None),
            &["x.com", "api.example.com"],
        );
        assert!(find_conflict(&same, &[], &[b]).is_some());
    }

    #[test]
    fn a_route_with_hosts_takes_from_guards_for_those_hosts() {
        let statics = vec![route("/admin/*", &[], Some("admin"))];
        // Less specific, but its host group comes first: it takes the guarded requests.
        let r = with_hosts(reg("x", "/*", None, None), &["admin.example.com"]);
        assert!(find_unguarded(&r, &statics, &[]).is_some());
        let r = with_hosts(reg("x", "/*", None, Some("admin")), &["admin.example.com"]);
        assert!(find_unguarded(&r, &statics, &[]).is_none());
        // A guard that names hosts is never reached by a host-less route.
        let mut g = route("/admin/*", &[], Some("admin"));
        g.hosts = vec!["admin.example.com".into()];
        let statics = vec![g];
        assert!(find_unguarded(&reg("x", "/admin/x/*", None, None), &statics, &[]).is_none());
        // Disjoint hosts: no overlap at all.
        let r = with_hosts(reg("x", "/admin/x/*", None, None), &["www.example.com"]);
        assert!(find_unguarded(&r, &statics, &[]).is_none());
        let r = with_hosts(reg("x", "/admin/x/*", None, None), &["*.example.com"]);
        assert!(find_unguarded(&r, &statics, &[]).is_some());
    }

    #[test]
    fn pattern_intersection() {
        let i = |a: &str, b: &str| {
            let (a, b) = (Pattern::parse(a).unwrap(), Pattern::parse(b).unwrap());
            assert_eq!(intersects(&a, &b), intersects(&b, &a), "symmetric");
            intersects(&a, &b)
        };
        assert!(i("/admin/*", "/admin/secret/*"));
        assert!(i("/admin/*", "/admin/x"));
        assert!(!i("/admin/*", "/admin"));
        assert!(i("/a/*/c", "/a/b/*"));
        assert!(!i("/a/*/c", "/a/b/d"));
        assert!(i("/*", "/anything"));
        assert!(!i("/x/*", "/y/*"));
        assert!(!i("/a/b", "/a/b/c"));
    }

    #[test]
    fn more_specific_routes_must_carry_the_guard() {
        let statics = vec![route("/admin/*", &[], Some("admin"))];
        let u = |path: &str, m: Option<&str>, p: Option<&str>| {
            find_unguarded(&reg("x", path, m, p), &statics, &[])
        };
        assert!(u("/admin/secret/*", None, None).is_some());
        assert!(u("/admin/secret", Some("GET"), None).is_some());
        assert!(u("/admin/secret/*", None, Some("other")).is_some());
        assert!(u("/admin/*", None, None).is_some(), "equal");
        assert!(u("/admin/secret/*", None, Some("admin")).is_none());
        // Less specific or disjoint routes leave the guarded route in charge.
        assert!(u("/*", None, None).is_none());
        assert!(u("/public/*", None, None).is_none());
        // A guard on GET only: a POST route does not take its requests.
        let statics = vec![route("/admin/*", &["GET"], Some("admin"))];
        assert!(find_unguarded(&reg("x", "/admin/x", Some("POST"), None), &statics, &[]).is_none());
        assert!(find_unguarded(&reg("x", "/admin/x", None, None), &statics, &[]).is_some());
        // Another service's guarded route counts too, but a service's own does not.
        let other = reg("b", "/api/*", None, Some("api"));
        assert!(find_unguarded(
            &reg("a", "/api/x/*", None, None),
            &[],
            std::slice::from_ref(&other)
        )
        .is_some());
        assert!(find_unguarded(&reg("b", "/api/x/*", None, None), &[], &[other]).is_none());
    }

    #[test]
    fn owners_and_registration_permission() {
        use sha2::{Digest, Sha256};
        let k = ApiKey {
            name: "k".into(),
            sha256: Sha256::digest(b"k").into(),
            permissions: vec!["registry:write".into(), "a".into()],
        };
        let cur = reg("s", "/x/*", None, Some("a"));
        assert!(check_owner(&cur, Some(&k)).is_ok());
        assert!(check_owner(&cur, None).is_err());
        assert!(check_owner(&reg("s", "/x/*", None, Some("b")), Some(&k)).is_err());
        assert!(check_owner(&reg("s", "/x/*", None, None), None).is_ok());
        assert!(check_registration_permission(None, None).is_ok());
        assert!(check_registration_permission(Some("registry:write"), None).is_err());
        assert!(check_registration_permission(Some("registry:write"), Some(&k)).is_ok());
        assert!(check_registration_permission(Some("registry:admin"), Some(&k)).is_err());
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
