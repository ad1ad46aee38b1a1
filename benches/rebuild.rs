//! The control plane's cost per registry event: rebuilding the routing table of 1,000 and
//! 10,000 registered services (one route each, a few hundred distinct addresses, a small
//! static config), as every replica of a fleet does for each etcd watch event.
//!
//! The upstream set is warm, as in a running replica: the table is built once, then each
//! iteration builds it again with one service replaced (the realistic event), and the old
//! table is dropped inside the timed part too (a replica drops it after the swap).
//!
//! A second case changes `[server]`'s hold between builds, which makes every service again
//! (none is reused): what every rebuild cost before unchanged services were reused (less the
//! quadratic upstream scan that went with them).
//!
//! Criterion times wall clock, which on a shared machine is mostly other processes' time; after
//! it, the bench prints the CPU time of this thread per build (from
//! `/proc/thread-self/schedstat`), medians of 30 builds of each kind.
//!
//! `cargo bench --bench rebuild`
use criterion::{criterion_group, BatchSize, Criterion};
use std::hint::black_box;
use switchyard::config;
use switchyard::registry::{parse_registration, Registration};
use switchyard::routing::build::build;
use switchyard::upstream::set::UpstreamSet;

const BASE: &str = r#"
[[targets]]
address = "127.0.0.1:18001"
[[backends]]
name = "api"
addresses = ["127.0.0.1:18002", "127.0.0.1:18003"]
[[routes]]
path = "/api/*"
backend = "api"
[[path_routes]]
path = "/static"
address = "127.0.0.1:18004"
"#;

/// Service `i` as the registration API receives it (`rev` changes its route, so a replaced
/// service is a different registration).
fn service(i: usize, rev: usize) -> Registration {
    let body = format!(
        r#"{{"service": "svc{i:06}", "url": "http://127.0.0.1:{}", "health_endpoint": "/health", "routes": [{{"path": "/reg{i:06}/v{rev}/*"}}]}}"#,
        20000 + i % 256
    );
    parse_registration(body.as_bytes()).expect("a valid registration")
}

fn rebuild(c: &mut Criterion) {
    let cfg = config::parse(BASE, "bench", Box::new(|_| None)).expect("base config");
    let mut g = c.benchmark_group("rebuild");
    for n in [1_000usize, 10_000] {
        let services: Vec<Registration> = (0..n).map(|i| service(i, 1)).collect();
        let set = UpstreamSet::default();
        let mut table = Some(build(&cfg, &services, &set));
        let mut flip = 0usize;
        g.bench_function(format!("{n} services, one replaced"), |b| {
            b.iter_batched(
                || {
                    flip += 1;
                    let mut next = services.clone();
                    next[n / 2] = service(n / 2, 2 + flip % 2);
                    next
                },
                |next| {
                    let t = build(&cfg, black_box(&next), &set);
                    drop(table.replace(t));
                },
                BatchSize::LargeInput,
            )
        });
        let mut other = cfg.clone();
        other.server.hold.max += 1;
        let cfgs = [cfg.clone(), other];
        g.bench_function(format!("{n} services, all made again"), |b| {
            b.iter_batched(
                || {
                    flip += 1;
                    (&cfgs[flip % 2], services.clone())
                },
                |(cfg, next)| {
                    let t = build(cfg, black_box(&next), &set);
                    drop(table.replace(t));
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// CPU time this thread has run, in ns (Linux); None elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Median CPU ms of 30 builds, each from `next(i)`'s config and services.
fn cpu_ms<'c>(
    set: &UpstreamSet,
    mut next: impl FnMut(usize) -> (&'c config::Config, Vec<Registration>),
) -> Option<f64> {
    let mut table = None;
    let mut v = Vec::new();
    for i in 0..30 {
        let (cfg, services) = next(i);
        let t0 = thread_cpu_ns()?;
        drop(table.replace(build(cfg, black_box(&services), set)));
        v.push((thread_cpu_ns()? - t0) as f64 / 1e6);
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn cpu_per_build() {
    let cfg = config::parse(BASE, "bench", Box::new(|_| None)).expect("base config");
    let mut other = cfg.clone();
    other.server.hold.max += 1;
    for n in [1_000usize, 10_000] {
        let services: Vec<Registration> = (0..n).map(|i| service(i, 1)).collect();
        let set = UpstreamSet::default();
        let _warm = build(&cfg, &services, &set);
        let one = cpu_ms(&set, |i| {
            let mut next = services.clone();
            next[n / 2] = service(n / 2, 2 + i % 2);
            (&cfg, next)
        });
        let all = cpu_ms(&set, |i| {
            (if i % 2 == 0 { &other } else { &cfg }, services.clone())
        });
        match (one, all) {
            (Some(one), Some(all)) => println!(
                "CPU per rebuild, {n} services: one replaced {one:.2} ms, all made again {all:.2} ms ({:.1}x)",
                all / one
            ),
            _ => println!("CPU time per thread is not available here"),
        }
    }
}

criterion_group!(benches, rebuild);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    cpu_per_build();
}
