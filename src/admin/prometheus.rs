//! `GET /metrics`: a prometheus-client `Collector` that reads the data plane's atomics at
//! scrape time, rendered as OpenMetrics or, by default, the Prometheus 0.0.4 text format.
use crate::health::Status;
use crate::state::Shared;
use crate::upstream::Upstream;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt::Error;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The collector registered for one scrape.
struct Scrape(Arc<Shared>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// Renders the metrics; `openmetrics` when the scraper asked for it in `Accept`.
pub fn render(shared: &Arc<Shared>, openmetrics: bool) -> (&'static str, Vec<u8>) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(shared.clone())));
    let mut out = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        log::error!("encoding /metrics failed");
    }
    if openmetrics {
        (OPENMETRICS, out.into_bytes())
    } else {
        (TEXT_004, to_text_004(&out).into_bytes())
    }
}

/// OpenMetrics text to Prometheus 0.0.4 text, for the metrics this module writes: a counter
/// family is named `x` in OpenMetrics but `x_total` (its samples' name) in 0.0.4, and
/// `# UNIT` / `# EOF` do not exist there. Without this, promtool and older scrapers see the
/// counters' samples as untyped metrics without help.
pub fn to_text_004(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        if let Some(p) = meta {
            let rest = &line[p.len()..];
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(&name) {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every address once: the same address checked on two endpoints is two cells, summed here
/// (counters) or reduced to the worst (status) so that label sets stay unique.
struct AddressRow {
    label: Box<str>,
    status: Status,
    up_since_ms: u64,
    checks_ok: u64,
    checks_failed: u64,
    connect_failures: u64,
    requests: u64,
    failures: u32,
    in_flight: u64,
    ejections: u64,
    ejected: bool,
}

fn worst(a: Status, b: Status) -> Status {
    let rank = |s| match s {
        Status::Up => 0,
        Status::Unknown => 1,
        Status::Down => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn address_rows(all: &[Arc<Upstream>]) -> Vec<AddressRow> {
    let mut rows: Vec<AddressRow> = Vec::with_capacity(all.len());
    for u in all {
        let (ok, failed) = u.health.checks();
        let row = AddressRow {
            label: u.label.clone(),
            status: u.status(),
            up_since_ms: u.health.up_since_ms(),
            checks_ok: ok,
            checks_failed: failed,
            connect_failures: u.stats.connect_failures.load(Relaxed),
            requests: u.stats.requests.load(Relaxed),
            failures: u.health.failures(),
            in_flight: u.stats.in_flight.load(Relaxed),
            ejections: u.outlier.ejections(),
            ejected: !u.outlier.in_service(),
        };
        match rows.iter_mut().find(|r| r.label == row.label) {
            Some(r) => {
                r.status = worst(r.status, row.status);
                r.up_since_ms = if r.status == Status::Up {
                    r.up_since_ms.max(row.up_since_ms)
                } else {
                    0
                };
                r.checks_ok += row.checks_ok;
                r.checks_failed += row.checks_failed;
                r.connect_failures += row.connect_failures;
                r.requests += row.requests;
                r.failures = r.failures.max(row.failures);
                r.in_flight += row.in_flight;
                r.ejections += row.ejections;
                r.ejected |= row.ejected;
            }
            None => rows.push(row),
        }
    }
    rows
}

/// Per-pool figures: `up` of each member (with its pool), requests in flight, holding.
fn pools(enc: &mut DescriptorEncoder, table: &crate::routing::Table) -> Result<(), Error> {
    let mut seen: BTreeMap<&str, &crate::routing::select::Pool> = BTreeMap::new();
    for r in table.rules() {
        seen.entry(r.pool.name.as_str()).or_insert(&r.pool);
    }
    let mut members: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for (name, p) in &seen {
        for u in &p.upstreams {
            *members.entry((name, &u.label)).or_default() |= u.in_service();
        }
    }
    family(
        enc,
        "switchyard_up",
        "1 when the address takes traffic in the pool (UP and not ejected), else 0.",
        None,
        MetricType::Gauge,
        members.iter().map(|((pool, address), up)| {
            (
                [("pool", pool.to_string()), ("address", address.to_string())],
                ConstGauge::new(i64::from(*up)),
            )
        }),
    )?;
    let by_pool = |f: fn(&crate::routing::select::Pool) -> u64| {
        seen.iter()
            .map(move |(n, p)| ([("pool", n.to_string())], f(p)))
            .collect::<Vec<_>>()
    };
    family(
        enc,
        "switchyard_pool_in_flight",
        "Requests routed to the pool and not finished yet, held ones included: the figure to autoscale the pool on.",
        None,
        MetricType::Gauge,
        by_pool(|p| p.rt.in_flight.load(Relaxed))
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(v as i64))),
    )?;
    family(
        enc,
        "switchyard_pool_held",
        "Requests waiting for the pool to get a usable address (hold_timeout).",
        None,
        MetricType::Gauge,
        by_pool(|p| u64::from(p.rt.hold.waiting()))
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(v as i64))),
    )?;
    for (name, help, f) in [
        (
            "switchyard_pool_hold_timeouts",
            "Held requests that got 503 when hold_timeout ran out.",
            (|p: &crate::routing::select::Pool| p.rt.hold.timed_out.load(Relaxed))
                as fn(&crate::routing::select::Pool) -> u64,
        ),
        (
            "switchyard_pool_hold_overflows",
            "Requests that got 503 at once because hold_max requests were waiting already.",
            |p| p.rt.hold.overflowed.load(Relaxed),
        ),
        (
            "switchyard_pool_hold_served",
            "Held requests that got an address before hold_timeout.",
            |p| p.rt.hold.served.load(Relaxed),
        ),
    ] {
        family(
            enc,
            name,
            help,
            None,
            MetricType::Counter,
            by_pool(f)
                .into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
    }
    Ok(())
}

/// One route label's latency and bytes, summed over the rules that share the label.
#[derive(Default)]
struct RuleSums {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
    bytes_in: u64,
    bytes_out: u64,
}

impl RuleSums {
    fn add(&mut self, t: &crate::metrics::RuleTotals) {
        let (sum, count, buckets) = t.duration.snapshot();
        self.sum += sum;
        self.count += count;
        if self.buckets.is_empty() {
            self.buckets = buckets;
        } else {
            for (mine, (_, n)) in self.buckets.iter_mut().zip(buckets) {
                mine.1 += n;
            }
        }
        self.bytes_in += t.bytes_in.load(Relaxed);
        self.bytes_out += t.bytes_out.load(Relaxed);
    }
}

/// Per-rule latency histogram and byte counters, labelled by route like `switchyard_requests`.
fn rule_families(
    enc: &mut DescriptorEncoder,
    by_rule: &BTreeMap<&str, RuleSums>,
) -> Result<(), Error> {
    let mut me = enc.encode_descriptor(
        "switchyard_route_request_duration",
        "Time from a complete request head to the end of the response, by rule (route label), in seconds.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (route, s) in by_rule {
        me.encode_family(&[("route", *route)])?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.sum, s.count, &s.buckets, None,
            )?;
    }
    for (name, help, f) in [
        (
            "switchyard_route_request_bytes",
            "Request bytes read from clients (head and body), by rule (route label).",
            (|s: &RuleSums| s.bytes_in) as fn(&RuleSums) -> u64,
        ),
        (
            "switchyard_route_response_bytes",
            "Response bytes written to clients (head and body), by rule (route label).",
            |s| s.bytes_out,
        ),
    ] {
        family(
            enc,
            name,
            help,
            None,
            MetricType::Counter,
            by_rule
                .iter()
                .map(|(route, s)| ([("route", *route)], ConstCounter::new(f(s)))),
        )?;
    }
    Ok(())
}

/// `process_*` as Prometheus' client libraries write them (from /proc), and the access log's
/// dropped lines.
fn process(enc: &mut DescriptorEncoder, _shared: &crate::state::Shared) -> Result<(), Error> {
    let Some(p) = crate::observe::process::Process::read() else {
        return Ok(());
    };
    single(
        enc,
        "process_start_time",
        "Start time of the process since unix epoch in seconds.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
        ConstGauge::new(p.start_time_seconds),
    )?;
    single(
        enc,
        "process_resident_memory",
        "Resident memory size in bytes.",
        Some(&Unit::Bytes),
        MetricType::Gauge,
        ConstGauge::new(p.resident_memory_bytes as i64),
    )?;
    single(
        enc,
        "process_virtual_memory",
        "Virtual memory size in bytes.",
        Some(&Unit::Bytes),
        MetricType::Gauge,
        ConstGauge::new(p.virtual_memory_bytes as i64),
    )?;
    single(
        enc,
        "process_open_fds",
        "Number of open file descriptors.",
        None,
        MetricType::Gauge,
        ConstGauge::new(p.open_fds as i64),
    )?;
    if let Some(m) = p.max_fds {
        single(
            enc,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            None,
            MetricType::Gauge,
            ConstGauge::new(m as i64),
        )?;
    }
    single(
        enc,
        "process_cpu",
        "Total user and system CPU time spent in seconds.",
        Some(&Unit::Seconds),
        MetricType::Counter,
        ConstCounter::new(p.cpu_seconds),
    )?;
    Ok(())
}

/// Writes one family of constant samples: `(labels, value)` pairs.
fn family<L, M>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut me = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, m) in samples {
        m.encode(me.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a family with one sample and no labels.
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    m: impl EncodeMetric,
) -> Result<(), Error> {
    m.encode(enc.encode_descriptor(name, help, unit, kind)?)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let shared = &self.0;
        let table = shared.dp.table.load();
        let now_ms = crate::clock::unix_ms();

        // Requests by route, backend and code, for every rule the table has (Table::rules,
        // so no kind is left out). Rules sharing a label (one pattern with different
        // `methods`, or on different hosts) are summed so that every label set appears once.
        let mut by_key: BTreeMap<(&str, &str, &'static str), u64> = BTreeMap::new();
        let mut by_rule: BTreeMap<&str, RuleSums> = BTreeMap::new();
        for rule in table.rules() {
            let members = rule.pool.upstreams.iter().map(|u| Some(&*u.label));
            for (i, backend) in members.chain([None]).enumerate() {
                let slot = rule.stats.slot(backend.map(|_| i));
                for (code, n) in slot.nonzero() {
                    let key = (rule.label.as_str(), backend.unwrap_or("-"), code);
                    *by_key.entry(key).or_default() += n;
                }
            }
            by_rule
                .entry(rule.label.as_str())
                .or_default()
                .add(rule.stats.totals());
        }
        for (code, n) in shared.dp.metrics.unrouted.nonzero() {
            *by_key.entry(("-", "-", code)).or_default() += n;
        }
        family(
            &mut enc,
            "switchyard_requests",
            "Requests answered, by rule (route label; - when none matched), backend address (- when switchyard answered itself) and status code (exact for common codes, else the class such as 4xx).",
            None,
            MetricType::Counter,
            by_key.into_iter().map(|((route, backend, code), n)| {
                (
                    [("route", route), ("backend", backend), ("code", code)],
                    ConstCounter::new(n),
                )
            }),
        )?;
        rule_families(&mut enc, &by_rule)?;

        let (sum, count, buckets) = shared.dp.metrics.duration.snapshot();
        let mut me = enc.encode_descriptor(
            "switchyard_request_duration",
            "Time from a complete request head to the end of the response, in seconds.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        me.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;

        single(
            &mut enc,
            "switchyard_open_connections",
            "Client connections open on the data port.",
            None,
            MetricType::Gauge,
            ConstGauge::new(shared.dp.open() as i64),
        )?;

        let h2 = &shared.dp.h2;
        single(
            &mut enc,
            "switchyard_h2_connections",
            "HTTP/2 client connections accepted (TLS with ALPN h2, or h2c with prior knowledge).",
            None,
            MetricType::Counter,
            ConstCounter::new(h2.connections.load(Relaxed)),
        )?;
        single(
            &mut enc,
            "switchyard_h2_streams",
            "HTTP/2 streams (requests) opened by clients.",
            None,
            MetricType::Counter,
            ConstCounter::new(h2.streams.load(Relaxed)),
        )?;
        single(
            &mut enc,
            "switchyard_h2_refused_streams",
            "HTTP/2 streams refused (REFUSED_STREAM) because their connection had h2_max_concurrent_streams in flight.",
            None,
            MetricType::Counter,
            ConstCounter::new(h2.refused_streams.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "switchyard_h2_goaway",
            "HTTP/2 connections closed with GOAWAY for abuse, by reason (rapid_reset, continuation, control_flood) or for a protocol error (protocol_error).",
            None,
            MetricType::Counter,
            [
                ("rapid_reset", &h2.goaway_rapid_reset),
                ("continuation", &h2.goaway_continuation),
                ("control_flood", &h2.goaway_control_flood),
                ("protocol_error", &h2.protocol_errors),
            ]
            .map(|(r, n)| ([("reason", r)], ConstCounter::new(n.load(Relaxed)))),
        )?;
        family(
            &mut enc,
            "switchyard_requests_by_protocol",
            "Requests finished, by the client's protocol (HTTP/1.0, HTTP/1.1, HTTP/2).",
            None,
            MetricType::Counter,
            crate::metrics::PROTOCOLS
                .iter()
                .zip(shared.dp.metrics.by_protocol.iter())
                .map(|(p, n)| ([("protocol", *p)], ConstCounter::new(n.load(Relaxed)))),
        )?;
        let hs = &shared.dp.tls.handshakes;
        family(
            &mut enc,
            "switchyard_tls_handshakes",
            "TLS handshakes on the HTTPS listener, by result (ok, error: protocol error, alert or refused version; timeout: nothing within request_header_timeout).",
            None,
            MetricType::Counter,
            [("ok", &hs.ok), ("error", &hs.error), ("timeout", &hs.timeout)]
                .map(|(r, n)| ([("result", r)], ConstCounter::new(n.load(Relaxed)))),
        )?;
        let certs = shared.dp.tls.store();
        family(
            &mut enc,
            "switchyard_tls_certificate_expiry_timestamp",
            "When the certificate served for each host expires, in Unix seconds.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            certs.hosts().map(|(h, e)| {
                (
                    [("host", h.to_string())],
                    ConstGauge::new(e.loaded.not_after),
                )
            }),
        )?;

        let rows = address_rows(&shared.all_upstreams());
        let addr = |r: &AddressRow| [("address", r.label.to_string())];
        family(
            &mut enc,
            "switchyard_upstream_up",
            "1 when the address is UP (or not health-checked), 0 when it is DOWN or UNKNOWN.",
            None,
            MetricType::Gauge,
            rows.iter()
                .map(|r| (addr(r), ConstGauge::new(i64::from(r.status == Status::Up)))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_status",
            "The address' health status: 1 for the current one of UP, DOWN, UNKNOWN, 0 for the others.",
            None,
            MetricType::Gauge,
            rows.iter().flat_map(|r| {
                [Status::Up, Status::Down, Status::Unknown].map(|s| {
                    (
                        [
                            ("address", r.label.to_string()),
                            ("status", s.as_str().to_string()),
                        ],
                        ConstGauge::new(i64::from(r.status == s)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_uptime",
            "Seconds since the address last became UP; 0 while it is not UP.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            rows.iter().map(|r| {
                let secs = if r.status == Status::Up && r.up_since_ms > 0 {
                    now_ms.saturating_sub(r.up_since_ms) as f64 / 1000.0
                } else {
                    0.0
                };
                (addr(r), ConstGauge::new(secs))
            }),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_consecutive_failures",
            "Failed health checks in a row.",
            None,
            MetricType::Gauge,
            rows.iter()
                .map(|r| (addr(r), ConstGauge::new(i64::from(r.failures)))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_requests",
            "Requests forwarded to the address.",
            None,
            MetricType::Counter,
            rows.iter()
                .map(|r| (addr(r), ConstCounter::new(r.requests))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_connect_failures",
            "Connections to the address that were refused or timed out (each moved on to the next candidate).",
            None,
            MetricType::Counter,
            rows.iter()
                .map(|r| (addr(r), ConstCounter::new(r.connect_failures))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_in_flight",
            "Requests using the address right now.",
            None,
            MetricType::Gauge,
            rows.iter()
                .map(|r| (addr(r), ConstGauge::new(r.in_flight as i64))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_ejections",
            "Times outlier detection ejected the address.",
            None,
            MetricType::Counter,
            rows.iter()
                .map(|r| (addr(r), ConstCounter::new(r.ejections))),
        )?;
        family(
            &mut enc,
            "switchyard_upstream_ejected",
            "1 while outlier detection keeps the address out of its pools.",
            None,
            MetricType::Gauge,
            rows.iter()
                .map(|r| (addr(r), ConstGauge::new(i64::from(r.ejected)))),
        )?;
        pools(&mut enc, &table)?;
        process(&mut enc, shared)?;
        family(
            &mut enc,
            "switchyard_health_checks",
            "Active health checks run, by result (success or failure).",
            None,
            MetricType::Counter,
            rows.iter().flat_map(|r| {
                [("success", r.checks_ok), ("failure", r.checks_failed)].map(|(res, n)| {
                    (
                        [
                            ("address", r.label.to_string()),
                            ("result", res.to_string()),
                        ],
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;

        family(
            &mut enc,
            "switchyard_service_uptime",
            "Seconds since each registered service became UP (0 while it is not UP).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            table.services.iter().map(|s| {
                let since = s.upstream.health.up_since_ms();
                let secs = if since == 0 {
                    0.0
                } else {
                    now_ms.saturating_sub(since) as f64 / 1000.0
                };
                ([("service", s.name.clone())], ConstGauge::new(secs))
            }),
        )?;
        family(
            &mut enc,
            "switchyard_registrations",
            "Service registration attempts, by result.",
            None,
            MetricType::Counter,
            shared
                .registrations
                .snapshot()
                .into_iter()
                .map(|(r, n)| ([("result", r)], ConstCounter::new(n))),
        )?;
        family(
            &mut enc,
            "switchyard_fd_exhaustion",
            "EMFILE/ENFILE met (out of file descriptors), by where: a local error, never counted against a backend.",
            None,
            MetricType::Counter,
            crate::fdlimit::snapshot()
                .into_iter()
                .map(|(w, n)| ([("where", w)], ConstCounter::new(n))),
        )?;
        single(
            &mut enc,
            "switchyard_body_spliced_bytes",
            "HTTP/1.1 Content-Length body bytes (both directions) moved by splice(2) between plain sockets instead of through user space.",
            None,
            MetricType::Counter,
            ConstCounter::new(crate::proxy::splice::body_spliced_total()),
        )?;
        single(
            &mut enc,
            "switchyard_access_log_dropped",
            "Access log lines dropped because the writer was behind (requests are never held up).",
            None,
            MetricType::Counter,
            ConstCounter::new(crate::observe::access_log::dropped_total()),
        )?;
        single(
            &mut enc,
            "switchyard_config_reload_failures",
            "SIGHUP reloads refused because the new config was invalid.",
            None,
            MetricType::Counter,
            ConstCounter::new(
                shared
                    .metrics_reload_failures
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        )?;
        if let Some(reads) = shared.store.read_counts() {
            single(
                &mut enc,
                "switchyard_store_full_loads",
                "Whole-table reads from the shared store (etcd): start, reconnect, a periodic refresh that found a difference, each registration's conflict check.",
                None,
                MetricType::Counter,
                ConstCounter::new(reads.full_loads),
            )?;
            single(
                &mut enc,
                "switchyard_store_refresh_checks",
                "Periodic refreshes answered by the cheap revision check instead of a whole-table read.",
                None,
                MetricType::Counter,
                ConstCounter::new(reads.refresh_checks),
            )?;
        }
        let last_sync = shared.store.last_sync_ms();
        if last_sync > 0 {
            single(
                &mut enc,
                "switchyard_store_last_sync_age",
                "Seconds since the last successful sync with the shared store (etcd).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
                ConstGauge::new(now_ms.saturating_sub(last_sync) as f64 / 1000.0),
            )?;
        }
        single(
            &mut enc,
            "switchyard_ready",
            "1 when the routing table is loaded and the process is not draining.",
            None,
            MetricType::Gauge,
            ConstGauge::new(i64::from(table.ready && !shared.dp.draining())),
        )?;

        let started_unix = now_ms as f64 / 1000.0 - shared.started.elapsed().as_secs_f64();
        single(
            &mut enc,
            "switchyard_start_time",
            "Unix time at which this process started, in seconds.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            ConstGauge::new(started_unix.floor()),
        )?;
        family(
            &mut enc,
            "switchyard_build_info",
            "Always 1; the version is in the label.",
            None,
            MetricType::Gauge,
            [([("version", env!("CARGO_PKG_VERSION"))], ConstGauge::new(1))],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::to_text_004;

    #[test]
    fn counters_are_renamed_for_text_004() {
        let om = "# HELP a_requests Reqs.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
                  # HELP a_lat Lat.\n# TYPE a_lat_seconds histogram\n# UNIT a_lat_seconds seconds\n\
                  a_lat_seconds_count 1\n# HELP a_requests_inflight In.\n# TYPE a_requests_inflight gauge\n\
                  a_requests_inflight 2\n# EOF\n";
        let t = to_text_004(om);
        assert_eq!(
            t,
            "# HELP a_requests_total Reqs.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
             # HELP a_lat Lat.\n# TYPE a_lat_seconds histogram\na_lat_seconds_count 1\n\
             # HELP a_requests_inflight In.\n# TYPE a_requests_inflight gauge\na_requests_inflight 2\n"
        );
    }
}
