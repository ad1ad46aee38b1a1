//! `GET /` on the admin listener: one self-contained HTML page for people, every pool and
//! address with its health, rendered on the server and refreshing itself every 2 seconds.
use crate::clock::{rfc3339, unix_ms};
use crate::health::Status;
use crate::routing::select::Pool;
use crate::routing::Rule;
use crate::state::Shared;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Request rates come from the difference between two renders of the page, kept here and not
/// on the data plane: a sample per address, replaced once it is at least this old.
const RATE_WINDOW: Duration = Duration::from_secs(1);

struct Sample {
    at: Instant,
    count: u64,
    rate: Option<f64>,
}

static SAMPLES: Mutex<Option<HashMap<Box<str>, Sample>>> = Mutex::new(None);

/// Requests per second for `key` since the previous sample at least `RATE_WINDOW` old; None
/// on the first render (the caller then shows the average since start).
fn rate(
    samples: &mut HashMap<Box<str>, Sample>,
    key: &str,
    count: u64,
    now: Instant,
) -> Option<f64> {
    match samples.get_mut(key) {
        Some(s) => {
            let dt = now.duration_since(s.at);
            if dt >= RATE_WINDOW {
                // A smaller count means the counter was reset (a reload): start over.
                s.rate = Some(count.saturating_sub(s.count) as f64 / dt.as_secs_f64());
                s.at = now;
                s.count = count;
            }
            s.rate
        }
        None => {
            samples.insert(
                key.into(),
                Sample {
                    at: now,
                    count,
                    rate: None,
                },
            );
            None
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn ago(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 10.0 {
        format!("{s:.1} s ago")
    } else if s < 120.0 {
        format!("{s:.0} s ago")
    } else if s < 7200.0 {
        format!("{:.0} min ago", s / 60.0)
    } else {
        format!("{:.0} h ago", s / 3600.0)
    }
}

fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} s")
}

fn fmt_rate(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r < 10.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.0}")
    }
}

fn class(s: Status) -> &'static str {
    match s {
        Status::Up => "up",
        Status::Down => "down",
        Status::Unknown => "unknown",
    }
}

/// How a rule is named on the page.
fn rule_name(r: &Rule) -> String {
    let methods: Vec<_> = r
        .methods
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let mut s = String::new();
    if !methods.is_empty() {
        s.push_str(&methods.join(","));
        s.push(' ');
    }
    s.push_str(&r.label);
    if !r.hosts.is_empty() {
        s.push_str(" @ ");
        s.push_str(&r.hosts.join(", "));
    }
    s
}

const CSS: &str = r#"
:root{--bg:#f4f6f9;--card:#fff;--ink:#1b2330;--muted:#677489;--line:#e4e8ee;
--up:#18794e;--up-bg:#dff5e9;--down:#c62f2f;--down-bg:#fde4e4;--unk:#8a6100;--unk-bg:#fbf0d0;--accent:#3553d4}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Ubuntu,sans-serif}
header{background:#141b2d;color:#fff;padding:14px 28px;display:flex;align-items:center;gap:18px}
.brand{font-size:20px;font-weight:650;letter-spacing:.2px}
.brand .logo{display:inline-block;width:28px;height:28px;border-radius:7px;background:var(--accent);text-align:center;line-height:28px;margin-right:8px;font-size:16px}
.ver{color:#9aa6c0;font-weight:400;font-size:13px;margin-left:6px}
.overall{margin-left:auto;padding:5px 12px;border-radius:999px;font-weight:650;font-size:12px;letter-spacing:.6px}
.overall.healthy{background:var(--up-bg);color:var(--up)}
.overall.degraded{background:var(--down-bg);color:var(--down)}
.stamp{color:#9aa6c0;font-size:12px}
main{max-width:1180px;margin:0 auto;padding:22px 28px 8px}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:14px;margin-bottom:22px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.tile .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.5px}
.tile .v{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.tile .note{color:var(--muted);font-size:12px;margin-top:2px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile .note .unk{color:var(--unk);font-weight:600}.tile .note .fails{font-weight:600}
.tile .v small{font-size:13px;color:var(--muted);font-weight:500}
.pool{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:18px;overflow:hidden;border-top:4px solid var(--up)}
.pool.some-down{border-top-color:#d98a00}.pool.all-down{border-top-color:var(--down)}.pool.waiting{border-top-color:#b9c0cc}
.pool h2{margin:0;padding:14px 18px 2px;font-size:16px}
.pool h2 .kind{font-size:12px;font-weight:500;color:var(--muted);margin-left:8px}
.rules{padding:0 18px 10px;color:var(--muted);font-size:12.5px}
.rules code{background:#eef1f6;color:var(--ink);padding:1px 6px;border-radius:5px;margin-right:4px}
table{width:100%;border-collapse:collapse;table-layout:fixed;font-variant-numeric:tabular-nums}
th{white-space:nowrap;text-align:left;font-size:11.5px;text-transform:uppercase;letter-spacing:.5px;color:var(--muted);font-weight:600;padding:8px 18px;background:#f8f9fb;border-top:1px solid var(--line);border-bottom:1px solid var(--line)}
td{padding:9px 18px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right}
.addr code{font:13px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.sub{color:var(--muted);font-size:12px}
.badge{display:inline-block;min-width:78px;text-align:center;padding:3px 10px;border-radius:999px;font-weight:700;font-size:11.5px;letter-spacing:.6px}
.badge::before{content:"";display:inline-block;width:7px;height:7px;border-radius:50%;margin-right:6px;vertical-align:1px;background:currentColor}
.badge.up{background:var(--up-bg);color:var(--up)}.badge.down{background:var(--down-bg);color:var(--down)}.badge.unknown{background:var(--unk-bg);color:var(--unk)}
tr.down td{background:#fff8f8}
.fails{color:var(--down);font-weight:650}.zero{color:var(--muted)}
.stopped{display:inline-block;white-space:nowrap;margin-left:6px;font-size:11px;color:var(--down);border:1px solid var(--down);border-radius:4px;padding:0 5px}
.empty{padding:30px;text-align:center;color:var(--muted);background:var(--card);border:1px dashed var(--line);border-radius:10px}
footer{max-width:1180px;margin:0 auto;padding:6px 28px 26px;color:var(--muted);font-size:12.5px}
footer a{color:var(--accent);text-decoration:none;margin-right:12px}
footer p{margin:6px 0}
"#;

/// The whole page.
pub fn render(shared: &Arc<Shared>) -> String {
    let table = shared.dp.table.load();
    let now_ms = unix_ms();
    let now = Instant::now();
    let uptime = shared.started.elapsed();
    let pools = table.pools();
    let rules: Vec<&Rule> = table.rules().collect();

    let mut samples = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
    let samples = samples.get_or_insert_with(HashMap::new);
    // Addresses that left the config (or registrations that went away) stop being sampled.
    samples.retain(|_, s| now.duration_since(s.at) < Duration::from_secs(600));

    // The pools below are the HTTP table's; L4 targets are in /health and /metrics.
    let all = shared.upstreams.all();
    let count = |s: Status| all.iter().filter(|u| u.status() == s).count();
    let (n_up, n_down, n_unknown) = (
        count(Status::Up),
        count(Status::Down),
        count(Status::Unknown),
    );
    let healthy = n_up == all.len();
    let total = shared.dp.metrics.requests();
    let total_rate = rate(samples, "\0total", total, now)
        .unwrap_or(total as f64 / uptime.as_secs_f64().max(0.001));

    let mut h = String::with_capacity(16 * 1024);
    let overall = if healthy { "healthy" } else { "degraded" };
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>switchyard · {overall}</title><style>{CSS}</style></head>\n<body>\n\
         <header><div class=\"brand\"><span class=\"logo\">&#8644;</span>switchyard<span class=\"ver\">v{ver}</span></div>\
         <div class=\"stamp\">updated {stamp}</div>\
         <div class=\"overall {overall}\" data-overall=\"{overall}\">{upper}</div></header>\n<main>\n",
        ver = esc(env!("CARGO_PKG_VERSION")),
        stamp = esc(&rfc3339(now_ms)),
        upper = overall.to_ascii_uppercase(),
    );
    let _ = write!(
        h,
        "<section class=\"tiles\">\
         <div class=\"tile\"><div class=\"k\">Addresses up</div><div class=\"v\">{n_up} <small>/ {n_all}</small></div><div class=\"note\">{split}</div></div>\
         <div class=\"tile\"><div class=\"k\">Requests / s</div><div class=\"v\">{rate}</div><div class=\"note\">since the last refresh</div></div>\
         <div class=\"tile\"><div class=\"k\">Requests</div><div class=\"v\">{total}</div><div class=\"note\">since start</div></div>\
         <div class=\"tile\"><div class=\"k\">Open connections</div><div class=\"v\">{open}</div><div class=\"note\">on the data port</div></div>\
         <div class=\"tile\"><div class=\"k\">Uptime</div><div class=\"v\">{up}</div><div class=\"note\">started {started}</div></div>\
         </section>",
        n_all = all.len(),
        split = if n_down + n_unknown == 0 {
            "all healthy".to_string()
        } else {
            let mut parts = Vec::new();
            if n_down > 0 {
                parts.push(format!("<span class=\"fails\">{n_down} down</span>"));
            }
            if n_unknown > 0 {
                parts.push(format!("<span class=\"unk\">{n_unknown} unknown</span>"));
            }
            parts.join(" · ")
        },
        started = esc(&rfc3339(now_ms.saturating_sub(uptime.as_millis() as u64))),
        rate = fmt_rate(total_rate),
        open = shared.dp.open(),
        up = span(uptime),
    );
    h.push('\n');

    if pools.is_empty() {
        h.push_str("<div class=\"empty\">No pools configured: add <code>[[targets]]</code>, <code>[[path_routes]]</code> or <code>[[backends]]</code> to the config.</div>\n");
    }
    for pool in &pools {
        pool_section(&mut h, pool, &rules, samples, now, now_ms, uptime);
    }

    let g = &table.gateway;
    let _ = write!(
        h,
        "</main>\n<footer><p>Health checks: every {inter} (<i>inter</i>), {downinter} while DOWN (<i>downinter</i>), \
         DOWN after {fall} failures in a row (<i>fall</i>), UP after one success (<i>rise 1</i>), timeout {timeout}, \
         checking stops after {stop} failures.</p>\
         <p>Requests/s: the change in each address' request counter since the previous render of this page \
         (at least 1 s earlier); on a first render, the average since start. The page reloads every 2 s.</p>\
         <p><a href=\"/health\">/health</a><a href=\"/ready\">/ready</a><a href=\"/metrics\">/metrics</a></p></footer>\n\
         </body></html>\n",
        inter = secs(g.health_check_interval),
        downinter = secs(g.down_check_interval),
        fall = g.max_consecutive_failures,
        timeout = secs(g.health_check_timeout),
        stop = g.stop_ping_after_failures,
    );
    h
}

fn pool_section(
    h: &mut String,
    pool: &Arc<Pool>,
    rules: &[&Rule],
    samples: &mut HashMap<Box<str>, Sample>,
    now: Instant,
    now_ms: u64,
    uptime: Duration,
) {
    let users: Vec<&&Rule> = rules
        .iter()
        .filter(|r| Arc::ptr_eq(&r.pool, pool))
        .collect();
    let kind = users.first().map_or("pool", |r| match r.kind {
        crate::routing::RuleKind::CatchAll => "catch-all · round robin over [[targets]]",
        crate::routing::RuleKind::PathRoute => "path route",
        crate::routing::RuleKind::Route => "backend pool · round robin",
        crate::routing::RuleKind::Shard => "shard · one pod per key, fixed failover order",
    });
    let n = pool.upstreams.len();
    let up = pool
        .upstreams
        .iter()
        .filter(|u| u.status() == Status::Up)
        .count();
    let down = pool
        .upstreams
        .iter()
        .filter(|u| u.status() == Status::Down)
        .count();
    let state = if up == n {
        "all-up"
    } else if down == n {
        "all-down"
    } else if down > 0 || up > 0 {
        "some-down"
    } else {
        "waiting"
    };
    let _ = write!(
        h,
        "<section class=\"pool {state}\" data-pool=\"{name}\"><h2>{name}<span class=\"kind\">{kind} · {up}/{n} up</span></h2><div class=\"rules\">",
        name = esc(&pool.name),
    );
    if users.is_empty() {
        h.push_str("no rule uses this pool");
    } else {
        h.push_str("rules: ");
        for r in &users {
            let _ = write!(h, "<code>{}</code>", esc(&rule_name(r)));
        }
    }
    h.push_str(
        "</div><table><colgroup><col style=\"width:20%\"><col style=\"width:18%\"><col style=\"width:12%\">\
         <col style=\"width:10%\"><col style=\"width:9%\"><col style=\"width:8%\"><col style=\"width:10%\"><col style=\"width:13%\"></colgroup>\
         <thead><tr><th>Address</th><th>Status</th><th>Last check</th>\
         <th class=\"num\">Response</th><th class=\"num\">Failures</th><th class=\"num\">Req/s</th>\
         <th class=\"num\">Requests</th><th class=\"num\" title=\"connections refused or timed out\">Conn. errors</th></tr></thead><tbody>\n",
    );
    for u in &pool.upstreams {
        row(h, u, samples, now, now_ms, uptime);
    }
    h.push_str("</tbody></table></section>\n");
}

fn row(
    h: &mut String,
    u: &Upstream,
    samples: &mut HashMap<Box<str>, Sample>,
    now: Instant,
    now_ms: u64,
    uptime: Duration,
) {
    let status = u.status();
    let label = esc(&u.label);
    let checked = u.health_endpoint.is_some();
    let last = u.health.last_check_ms();
    let requests = u.stats.requests.load(Relaxed);
    let key = format!(
        "{}\0{}",
        u.label,
        u.health_endpoint.as_deref().unwrap_or("")
    );
    let r = rate(samples, &key, requests, now)
        .unwrap_or(requests as f64 / uptime.as_secs_f64().max(0.001));
    let failures = u.health.failures();
    let _ = write!(
        h,
        "<tr class=\"{cls}\" data-address=\"{label}\" data-status=\"{st}\"><td class=\"addr\"><code>{label}</code><div class=\"sub\">{check}</div></td>\
         <td><span class=\"badge {cls}\">{st}</span>{stopped}</td>",
        cls = class(status),
        st = status.as_str(),
        check = match &u.health_endpoint {
            Some(ep) => format!("GET {}", esc(ep)),
            None => "not checked".into(),
        },
        stopped = if u.health.stopped() {
            "<span class=\"stopped\" title=\"checking stopped after too many failures; it starts again on reload or re-registration\">checks stopped</span>"
        } else {
            ""
        },
    );
    if last > 0 {
        let _ = write!(
            h,
            "<td title=\"{at}\">{ago}</td>",
            at = esc(&rfc3339(last)),
            ago = ago(now_ms.saturating_sub(last)),
        );
    } else {
        let _ = write!(
            h,
            "<td class=\"zero\">{}</td>",
            if checked { "pending" } else { "—" }
        );
    }
    if last > 0 && failures == 0 {
        let _ = write!(
            h,
            "<td class=\"num\">{:.1} ms</td>",
            u.health.response_us() as f64 / 1000.0
        );
    } else {
        h.push_str("<td class=\"num zero\">—</td>");
    }
    let _ = write!(
        h,
        "<td class=\"num {fc}\">{failures}</td><td class=\"num\">{rate}</td><td class=\"num\">{requests}</td><td class=\"num {cc}\">{cf}</td></tr>",
        fc = if failures > 0 { "fails" } else { "zero" },
        rate = fmt_rate(r),
        cf = u.stats.connect_failures.load(Relaxed),
        cc = if u.stats.connect_failures.load(Relaxed) > 0 { "fails" } else { "zero" },
    );
    h.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn rate_needs_a_window_and_survives_resets() {
        let mut m = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(rate(&mut m, "a", 10, t0), None);
        assert_eq!(rate(&mut m, "a", 20, t0 + Duration::from_millis(500)), None);
        assert_eq!(
            rate(&mut m, "a", 30, t0 + Duration::from_secs(2)),
            Some(10.0)
        );
        assert_eq!(rate(&mut m, "a", 5, t0 + Duration::from_secs(4)), Some(0.0));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(Duration::from_millis(100)), "0.1 s");
        assert_eq!(secs(Duration::from_secs(30)), "30 s");
        assert_eq!(span(Duration::from_secs(3725)), "1 h 2 min");
        assert_eq!(ago(400), "0.4 s ago");
    }
}
