//! Micro-benchmarks of the per-request CPU work outside the sockets: head parse and framing,
//! the forwarded-head rewrite (plain and with a rule's rewrites), routing lookups at 10 / 1,000
//! / 100,000 rules with host rules in the mix (the request's host is normalized from its raw
//! Host value in every lookup, as the proxy does), shard hashing.
//!
//! `cargo bench --bench hot_path` runs criterion, then prints the 100,000-route to 10-route
//! lookup ratio measured back to back (the goal is at most 1.1).
use criterion::{criterion_group, Criterion};
use std::hint::black_box;
use std::time::Instant;
use switchyard::config::{self, PathRoute, Rewrites, Route};
use switchyard::http::edits::{self, Edits};
use switchyard::http::framing;
use switchyard::http::head::{self, RequestHead, Scan};
use switchyard::http::rewrite::{self, Forward};
use switchyard::registry::{RegRoute, Registration};
use switchyard::routing::build::build;
use switchyard::routing::host::{self, HostBuf};
use switchyard::routing::shard::{self, HashKind};
use switchyard::routing::table::KeyInput;
use switchyard::routing::{Decision, Table};
use switchyard::upstream::set::UpstreamSet;

/// What wrk sends, and a browser-like head with a dozen headers.
const SMALL: &[u8] = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const BROWSER: &[u8] = b"GET /api/svc000001/items/42?page=2&sort=asc HTTP/1.1\r\n\
Host: gateway.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: none\r\n\
X-Request-Id: 5f0c6e7a-1b2c-4d3e-8f90-a1b2c3d4e5f6\r\n\r\n";

fn forward(e: &Edits) -> Forward<'_> {
    Forward {
        client_ip: "127.0.0.1",
        proto: "http",
        request_id: b"0123456789abcdef0123456789abcdef",
        api_key_name: None,
        shard: None,
        content_length: None,
        chunked: false,
        upgrade: false,
        host_fallback: "127.0.0.1:8001",
        path: None,
        drop_underscore: true,
        via: b"switchyard-0123456789abcdef",
        edits: e,
    }
}

fn head_parse_and_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("head");
    for (name, req) in [("small", SMALL), ("browser", BROWSER)] {
        let mut h = RequestHead::default();
        g.bench_function(format!("scan+parse+framing/{name}"), |b| {
            b.iter(|| {
                let buf = black_box(req);
                let Ok(Scan::Complete(n)) = head::scan(buf, 0, 65536) else {
                    unreachable!()
                };
                head::parse(buf, n, &mut h).unwrap();
                black_box(framing::request(buf, &h).unwrap())
            })
        });
        let Ok(Scan::Complete(n)) = head::scan(req, 0, 65536) else {
            unreachable!()
        };
        head::parse(req, n, &mut h).unwrap();
        let mut canon = Vec::new();
        g.bench_function(format!("admit/{name}"), |b| {
            let policy = switchyard::http::admit::Policy {
                underscore: switchyard::http::admit::Underscore::Drop,
                via_token: b"switchyard-0123456789abcdef",
            };
            b.iter(|| {
                black_box(switchyard::http::admit::request(
                    black_box(req),
                    &h,
                    &policy,
                    &mut canon,
                ))
            })
        });
        let mut out = Vec::with_capacity(1024);
        let rule_edits = Rewrites {
            strip_prefix: Some("/api".into()),
            set_request_headers: vec![
                ("Host".into(), "backend.internal".into()),
                ("X-Env".into(), "prod".into()),
            ],
            remove_request_headers: vec!["Cookie".into(), "X-Debug".into()],
            ..Default::default()
        }
        .edits();
        for (label, e) in [("", &edits::NONE), ("+rule edits", &rule_edits)] {
            g.bench_function(format!("rewrite/{name}{label}"), |b| {
                b.iter(|| {
                    let fwd = forward(e);
                    rewrite::request_head(black_box(req), &h, &fwd, &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    g.finish();
}

/// A table with `n` rules split over five kinds: pattern routes and path prefixes without
/// hosts, routes of registered services (one service each), pattern routes for an exact host
/// each and path prefixes for a wildcard host each, plus a catch-all. Numbers are zero-padded
/// so that every size is looked up with paths and hosts of the same length.
fn table_with(n: usize) -> Table {
    let base = r#"
[[targets]]
address = "127.0.0.1:18001"
[[backends]]
name = "api"
addresses = ["127.0.0.1:18002", "127.0.0.1:18003"]
"#;
    let mut cfg = config::parse(base, "bench", Box::new(|_| None)).expect("base config");
    let per = (n / 5).max(2);
    let route = |path: String, hosts: Vec<String>| Route {
        path: switchyard::routing::pattern::Pattern::parse(&path).expect("bench pattern"),
        methods: vec![],
        backend: "api".into(),
        permission: None,
        hosts,
        rewrites: Rewrites::default(),
    };
    let prefix = |path: String, hosts: Vec<String>| PathRoute {
        path,
        address: config::address::parse("127.0.0.1:18004", false).unwrap(),
        health_check_endpoint: None,
        hosts,
        rewrites: Rewrites::default(),
    };
    for i in 0..per {
        cfg.routes
            .push(route(format!("/api/svc{i:06}/items/*"), vec![]));
        cfg.path_routes
            .push(prefix(format!("/static{i:06}"), vec![]));
        cfg.routes.push(route(
            "/api/v2/*".into(),
            vec![format!("h{i:06}.example.com")],
        ));
        cfg.path_routes.push(prefix(
            "/files".into(),
            vec![format!("*.t{i:06}.example.com")],
        ));
    }
    let services: Vec<Registration> = (0..n.saturating_sub(4 * per).max(2))
        .map(|i| Registration {
            service: format!("svc{i}"),
            // A few hundred distinct addresses: registered services share hosts in practice.
            url: format!("http://127.0.0.1:{}", 20000 + i % 256),
            health_endpoint: "/health".into(),
            tls: false,
            tls_ca: None,
            tls_server_name: None,
            protocol: Default::default(),
            routes: vec![RegRoute {
                method: None,
                path: switchyard::routing::pattern::Pattern::parse(&format!("/reg{i:06}/v1/*"))
                    .expect("bench pattern"),
                permission: None,
                hosts: vec![],
            }],
            hold_timeout: None,
            hold_max: None,
        })
        .collect();
    build(&cfg, &services, &UpstreamSet::default())
}

/// (raw Host value, path) pairs that exist at every size: one per rule kind, the host-less
/// ones with a Host that names no rule (so the exact and wildcard groups are looked up and
/// missed first), and a miss that falls to the catch-all.
const LOOKUPS: [(&[u8], &[u8]); 6] = [
    (b"gateway.example.com", b"/api/svc000001/items/42"),
    (b"gateway.example.com", b"/static000001/css/site.css"),
    (b"gateway.example.com", b"/reg000001/v1/users/7"),
    (b"H000001.Example.com:8443", b"/api/v2/orders/9"),
    (b"x.t000001.example.com", b"/files/a.txt"),
    (b"gateway.example.com", b"/nothing/here/at/all"),
];

fn lookup<'t>(t: &'t Table, raw_host: &[u8], path: &[u8]) -> Option<&'t switchyard::routing::Rule> {
    let none = |_: &str| None;
    let keys = KeyInput {
        query: None,
        header: &none,
    };
    let mut hb = HostBuf::default();
    let h = host::of_request(black_box(path), Some(black_box(raw_host)), &mut hb);
    match t.route(b"GET", h, Some(black_box(path)), &keys) {
        Decision::Forward { rule, .. } => Some(rule),
        _ => None,
    }
}

fn route_all(t: &Table) -> usize {
    let mut hits = 0;
    for (h, p) in LOOKUPS {
        if let Some(rule) = lookup(t, h, p) {
            hits += rule.label.len();
        }
    }
    hits
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in [10, 1_000, 100_000] {
        let t = table_with(n);
        // Every lookup lands on the rule of its kind, at every size.
        let kinds: Vec<&str> = LOOKUPS
            .iter()
            .map(|(h, p)| lookup(&t, h, p).map_or("-", |r| r.origin.as_str()))
            .collect();
        assert!(kinds[3].starts_with("routes[") && kinds[4].starts_with("path_routes["));
        assert_eq!(kinds[2], "service svc1");
        assert_eq!(kinds[5], "targets");
        g.bench_function(format!("6 lookups/{n} rules"), |b| {
            b.iter(|| black_box(route_all(&t)))
        });
    }
    g.finish();
}

fn shard_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard pick (10 pods)");
    let key = b"1234567890123456789";
    for kind in [
        HashKind::Md5,
        HashKind::Discord,
        HashKind::Jump,
        HashKind::Rendezvous,
    ] {
        g.bench_function(kind.as_str(), |b| {
            b.iter(|| black_box(shard::pick(kind, black_box(key), 10).unwrap()))
        });
    }
    g.finish();
}

/// Times both tables in alternating slices, so that drift of a shared machine hits both.
fn ratio_100k_to_10() {
    let small = table_with(10);
    let big = table_with(100_000);
    let (mut ts, mut tb) = (0u128, 0u128);
    for _ in 0..20 {
        for (t, acc) in [(&small, &mut ts), (&big, &mut tb)] {
            let start = Instant::now();
            for _ in 0..50_000 {
                black_box(route_all(t));
            }
            *acc += start.elapsed().as_nanos();
        }
    }
    // Per lookup as well, to see which kind of rule grows with the table.
    for (h, p) in LOOKUPS {
        let mut t = [0u128; 2];
        for _ in 0..10 {
            for (i, table) in [&small, &big].into_iter().enumerate() {
                let start = Instant::now();
                for _ in 0..50_000 {
                    black_box(lookup(table, h, p).is_some());
                }
                t[i] += start.elapsed().as_nanos();
            }
        }
        println!(
            "  {:<26} {:<28} {:.1} ns -> {:.1} ns",
            String::from_utf8_lossy(h),
            String::from_utf8_lossy(p),
            t[0] as f64 / 500_000.0,
            t[1] as f64 / 500_000.0
        );
    }
    let per = |ns: u128| ns as f64 / (20.0 * 50_000.0 * LOOKUPS.len() as f64);
    println!(
        "route lookup (host normalized + table): {:.1} ns at 10 rules, {:.1} ns at 100,000 rules, ratio {:.3} (goal <= 1.1)",
        per(ts),
        per(tb),
        tb as f64 / ts as f64
    );
}

criterion_group!(benches, head_parse_and_framing, routing, shard_hash);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio_100k_to_10();
}
