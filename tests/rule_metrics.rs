//! Per-rule series on `/metrics` across rebuilds (SPEC §12): every rule kind has requests by
//! code, latency and bytes; a rule that stays keeps counting across a registration and a
//! SIGHUP reload (even when it moves in the file); a removed rule's series disappear; and
//! promtool accepts the text at every step.
mod support;
use serde_json::{json, Value};
use std::time::Duration;
use support::metrics::{promtool, sample};
use support::*;

/// `second`: the config after the reload, with a new route in front of `/api/*` (so its
/// index changes) and without the `/files` path route.
fn config(a: &Backend, b: &Backend, dead: u16, second: bool) -> String {
    let mut c = listen_section("access_log = false");
    c.push_str("[gateway]\nhealth_check_interval = 0.1\nhealth_check_timeout = 0.5\n\n");
    c.push_str(&format!(
        "[[backends]]\nname = \"api\"\naddresses = [\"{}\"]\n\n",
        a.address()
    ));
    if second {
        c.push_str("[[routes]]\npath = \"/extra/*\"\nbackend = \"api\"\n\n");
    }
    c.push_str("[[routes]]\npath = \"/api/*\"\nbackend = \"api\"\n\n");
    c.push_str(&format!(
        "[[shards]]\nname = \"pods\"\npath = \"/guilds/*\"\nkey = \"path:1\"\naddresses = [\"127.0.0.1:{dead}\"]\n\n"
    ));
    if !second {
        c.push_str(&format!(
            "[[path_routes]]\npath = \"/files\"\naddress = \"{}\"\n\n",
            b.address()
        ));
    }
    c.push_str(&format!("[[targets]]\naddress = \"{}\"\n\n", a.address()));
    c
}

fn scrape(sy: &Switchyard) -> String {
    let text = client()
        .get(sy.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let (ok, msg) = promtool(&text);
    assert!(
        ok,
        "promtool check metrics refused the output: {msg}\n{text}"
    );
    text
}

/// The sum of `switchyard_requests_total` for a route (and code), over its backends.
fn requests(text: &str, route: &str, code: &str) -> f64 {
    let head = format!("switchyard_requests_total{{route=\"{route}\",");
    let tail = format!(",code=\"{code}\"}}");
    text.lines()
        .filter(|l| l.starts_with(&head))
        .filter_map(|l| l.split_once(' '))
        .filter(|(s, _)| s.ends_with(&tail))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

fn status(sy: &Switchyard, path: &str) -> u16 {
    client().get(sy.url(path)).send().unwrap().status().as_u16()
}

fn register(sy: &Switchyard, body: &Value) {
    let r = client()
        .post(sy.admin_url("/internal/register-service"))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

fn hits(sy: &Switchyard, path: &str, n: usize, want: u16) {
    for _ in 0..n {
        assert_eq!(status(sy, path), want, "{path}");
    }
}

#[test]
fn rule_counters_cover_every_kind_and_survive_rebuilds() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let dead = dead_port();
    let sy = Switchyard::start(&config(&a, &b, dead, false));
    register(
        &sy,
        &json!({"service": "svc", "url": format!("http://{}", b.address()), "routes": [{"path": "/svc/*"}]}),
    );
    let routed = wait_until(Duration::from_secs(10), || status(&sy, "/svc/x") == 200);
    assert!(
        routed,
        "registered route never answered 200:\n{}",
        sy.log_text()
    );

    hits(&sy, "/api/1", 3, 200);
    // A shard whose only pod refuses connections: 503 from switchyard itself.
    hits(&sy, "/guilds/123/x", 2, 503);
    hits(&sy, "/files/x", 1, 200);
    hits(&sy, "/elsewhere", 1, 200);
    let svc_before = requests(&scrape(&sy), "/svc/*", "200");
    assert!(svc_before >= 1.0);

    let t = scrape(&sy);
    assert_eq!(requests(&t, "/api/*", "200"), 3.0, "{t}");
    assert_eq!(
        requests(&t, "/guilds/*", "503"),
        2.0,
        "shard 503 missing:\n{t}"
    );
    assert_eq!(requests(&t, "/files", "200"), 1.0, "{t}");
    assert_eq!(requests(&t, "catch-all", "200"), 1.0, "{t}");
    let api_lat = "switchyard_route_request_duration_seconds_count{route=\"/api/*\"}";
    let api_in = "switchyard_route_request_bytes_total{route=\"/api/*\"}";
    let api_out = "switchyard_route_response_bytes_total{route=\"/api/*\"}";
    assert_eq!(sample(&t, api_lat), Some(3.0), "{t}");
    let (in1, out1) = (sample(&t, api_in).unwrap(), sample(&t, api_out).unwrap());
    assert!(
        in1 >= 3.0 * "GET /api/1 HTTP/1.1\r\n\r\n".len() as f64,
        "{in1}"
    );
    assert!(
        out1 >= 3.0 * "HTTP/1.1 200 OK\r\n\r\n".len() as f64,
        "{out1}"
    );
    assert_eq!(
        sample(
            &t,
            "switchyard_route_request_duration_seconds_count{route=\"/guilds/*\"}"
        ),
        Some(2.0)
    );

    // Another service registers: the table is rebuilt, /api/* goes on from 3.
    register(
        &sy,
        &json!({"service": "other", "url": format!("http://{}", a.address()), "routes": [{"path": "/other/*"}]}),
    );
    hits(&sy, "/api/1", 1, 200);
    let t = scrape(&sy);
    assert_eq!(requests(&t, "/api/*", "200"), 4.0, "{t}");
    assert_eq!(requests(&t, "/svc/*", "200"), svc_before, "{t}");

    // SIGHUP with /api/* moved to routes[1] and the path route gone.
    std::fs::write(&sy.config_path, config(&a, &b, dead, true)).unwrap();
    sy.signal("HUP");
    assert!(
        sy.wait_log("reloaded ", Duration::from_secs(5)),
        "{}",
        sy.log_text()
    );
    hits(&sy, "/api/1", 1, 200);
    hits(&sy, "/svc/x", 1, 200);
    hits(&sy, "/guilds/9/x", 1, 503);
    let t = scrape(&sy);
    assert_eq!(requests(&t, "/api/*", "200"), 5.0, "{t}");
    assert_eq!(requests(&t, "/svc/*", "200"), svc_before + 1.0, "{t}");
    assert_eq!(requests(&t, "/guilds/*", "503"), 3.0, "{t}");
    assert_eq!(requests(&t, "catch-all", "200"), 1.0, "{t}");
    assert_eq!(sample(&t, api_lat), Some(5.0), "{t}");
    assert!(sample(&t, api_in).unwrap() > in1);
    assert!(sample(&t, api_out).unwrap() > out1);
    assert!(
        !t.contains("route=\"/files\""),
        "the removed path route still has series:\n{t}"
    );
    // The new route has its histogram and byte counters from zero.
    assert_eq!(
        sample(
            &t,
            "switchyard_route_request_duration_seconds_count{route=\"/extra/*\"}"
        ),
        Some(0.0),
        "{t}"
    );
}
