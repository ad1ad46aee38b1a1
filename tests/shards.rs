//! Sharded routing end to end: guild ids through a running switchyard to three (or five) pods
//! on loopback addresses, checked against the vectors node's crypto generated.
mod support;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use support::backend::Stats;
use support::*;

fn vectors() -> Vec<(String, [u32; 3])> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("data/shard_vectors.json")).unwrap();
    v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let p = |n: &str| x["pods"][n].as_u64().unwrap() as u32;
            (
                x["id"].as_str().unwrap().to_string(),
                [p("3"), p("5"), p("10")],
            )
        })
        .collect()
}

/// Pods on 127.0.1N.1, all on one port, so an address template can name them.
struct Pods {
    pods: Vec<Backend>,
    port: u16,
}

impl Pods {
    fn start(n: usize) -> Pods {
        'retry: for _ in 0..20 {
            let port = dead_port();
            let mut pods = Vec::new();
            for i in 0..n {
                let addr: SocketAddr = format!("127.0.1{i}.1:{port}").parse().unwrap();
                if std::net::TcpListener::bind(addr).is_err() {
                    continue 'retry;
                }
                pods.push(Backend::start_on(
                    &format!("pod-{i}"),
                    addr,
                    Arc::new(Stats::default()),
                ));
            }
            return Pods { pods, port };
        }
        panic!("no common free port");
    }

    fn template(&self) -> String {
        format!("127.0.1{{n}}.1:{}", self.port)
    }

    fn list(&self) -> String {
        let a: Vec<String> = self
            .pods
            .iter()
            .map(|p| format!("\"{}\"", p.addr))
            .collect();
        format!("[{}]", a.join(", "))
    }
}

fn gateway_config(pods: &Pods, extra: &str) -> String {
    format!(
        r#"{}
[gateway]
health_check_interval = 0.1
health_check_timeout = 0.5
max_consecutive_failures = 2
down_check_interval = 0.1
# Pods come back after long outages: keep checking (the default stops after 10 failures).
stop_ping_after_failures = 100000

[[shards]]
name = "gateway"
path = "/guilds/*"
key = "path:1"
pods = "${{NUM_GATEWAY_PODS:-3}}"
address = "{}"
hash = "md5"
health_check_endpoint = "/health"

[[shards]]
name = "by-header"
path = "/gw/*"
key = "header:X-Guild-Id"
addresses = {}
health_check_endpoint = "/health"
{extra}
"#,
        listen_section("access_log = false"),
        pods.template(),
        pods.list()
    )
}

/// A keep-alive client on a raw socket: sends GETs and reads Content-Length answers.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    /// (status, headers lowercased, body)
    fn get(&mut self, path: &str, headers: &str) -> (u16, Vec<(String, String)>, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut hs = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            hs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = hs
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).unwrap();
        (status, hs, String::from_utf8_lossy(&body).into_owned())
    }

    /// The pod that answered, checking X-Shard against it.
    fn pod(&mut self, path: &str, headers: &str) -> Result<u32, u16> {
        let (status, _, body) = self.get(path, headers);
        if status != 200 {
            return Err(status);
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pod: u32 = v["backend"]
            .as_str()
            .unwrap()
            .trim_start_matches("pod-")
            .parse()
            .unwrap();
        assert_eq!(
            v["headers"]["x-shard"],
            pod.to_string(),
            "X-Shard names the pod that answered"
        );
        Ok(pod)
    }
}

fn wait_all_up(sy: &Switchyard, n: usize) {
    let ok = wait_until(Duration::from_secs(10), || {
        let h: serde_json::Value = client()
            .get(sy.admin_url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        h.to_string().matches("\"UP\"").count() >= n
    });
    assert!(ok, "pods did not come UP");
}

#[test]
fn every_guild_lands_where_node_says_by_path_and_by_header() {
    let pods = Pods::start(3);
    let sy = Switchyard::start(&gateway_config(&pods, ""));
    let mut c = Conn::new(sy.http);
    let vs = vectors();
    for (id, want) in &vs {
        assert_eq!(
            c.pod(&format!("/guilds/{id}/messages"), ""),
            Ok(want[0]),
            "path key {id}"
        );
        assert_eq!(
            c.pod("/gw/x", &format!("X-Guild-Id: {id}\r\n")),
            Ok(want[0]),
            "header key {id}"
        );
    }
    let total: usize = pods.pods.iter().map(Backend::hits).sum();
    assert_eq!(total, 2 * vs.len());
    // Missing or empty keys are 400, never routed.
    assert_eq!(c.get("/gw/x", "").0, 400);
    assert_eq!(Conn::new(sy.http).get("/gw/x", "X-Guild-Id: \r\n").0, 400);
}

#[test]
fn pods_come_from_the_environment() {
    let pods = Pods::start(5);
    let sy = Switchyard::start_with(&gateway_config(&pods, ""), &[("NUM_GATEWAY_PODS", "5")]);
    let mut c = Conn::new(sy.http);
    for (id, want) in vectors().iter().take(500) {
        assert_eq!(
            c.pod(&format!("/guilds/{id}"), ""),
            Ok(want[1]),
            "{id} on 5 pods"
        );
    }
}

#[test]
fn discord_formula_and_malformed_keys() {
    let pods = Pods::start(3);
    let extra = format!(
        "[[shards]]\nname = \"discord\"\npath = \"/d/*\"\nkey = \"query:guild_id\"\nhash = \"discord\"\naddresses = {}\n",
        pods.list()
    );
    let sy = Switchyard::start(&gateway_config(&pods, &extra));
    let mut c = Conn::new(sy.http);
    for (id, _) in vectors().iter().take(300) {
        let Ok(n) = id.parse::<u64>() else { continue };
        let want = ((n >> 22) % 3) as u32;
        assert_eq!(
            c.pod(&format!("/d/x?a=1&guild_id={id}"), ""),
            Ok(want),
            "{id}"
        );
    }
    for bad in [
        "/d/x?guild_id=abc",
        "/d/x?guild_id=-5",
        "/d/x?other=1",
        "/d/x",
    ] {
        let (status, _, body) = Conn::new(sy.http).get(bad, "");
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("bad_request"), "{body}");
    }
}

#[test]
fn a_stopped_pod_fails_over_to_the_next_ordinal_and_comes_back() {
    let mut pods = Pods::start(3);
    let sy = Switchyard::start(&gateway_config(&pods, ""));
    wait_all_up(&sy, 6);
    let vs: Vec<_> = vectors().into_iter().take(600).collect();
    pods.pods[1].stop();
    // Before and after the health check notices: connect failures and DOWN both fail over.
    for round in 0..2 {
        let mut c = Conn::new(sy.http);
        for (id, want) in &vs {
            let expect = if want[0] == 1 { 2 } else { want[0] };
            assert_eq!(
                c.pod(&format!("/guilds/{id}"), ""),
                Ok(expect),
                "round {round}: {id}"
            );
        }
        assert!(wait_until(Duration::from_secs(5), || sy
            .log_text()
            .contains("is DOWN")));
    }
    pods.pods[1].restart();
    assert!(wait_until(Duration::from_secs(10), || {
        let mut c = Conn::new(sy.http);
        vs.iter()
            .filter(|(_, w)| w[0] == 1)
            .all(|(id, _)| c.pod(&format!("/guilds/{id}"), "") == Ok(1))
    }));
    let mut c = Conn::new(sy.http);
    for (id, want) in &vs {
        assert_eq!(
            c.pod(&format!("/guilds/{id}"), ""),
            Ok(want[0]),
            "{id} back home"
        );
    }
}

#[test]
fn reject_answers_503_for_the_keys_of_a_stopped_pod() {
    let mut pods = Pods::start(3);
    let extra = format!(
        "[[shards]]\nname = \"strict\"\npath = \"/strict/*\"\nkey = \"path:1\"\non_unavailable = \"reject\"\naddresses = {}\n",
        pods.list()
    );
    let sy = Switchyard::start(&gateway_config(&pods, &extra));
    pods.pods[0].stop();
    for (id, want) in vectors().iter().take(200) {
        let got = Conn::new(sy.http).pod(&format!("/strict/{id}"), "");
        if want[0] == 0 {
            assert_eq!(got, Err(503), "{id}");
        } else {
            assert_eq!(got, Ok(want[0]), "{id}");
        }
    }
}

#[test]
fn two_replicas_route_every_key_identically() {
    let pods = Pods::start(3);
    let cfg = gateway_config(&pods, "");
    let a = Switchyard::start(&cfg);
    let b = Switchyard::start(&cfg);
    let (mut ca, mut cb) = (Conn::new(a.http), Conn::new(b.http));
    for (id, _) in vectors().iter().take(1000) {
        let p = format!("/guilds/{id}");
        assert_eq!(ca.pod(&p, ""), cb.pod(&p, ""), "{id}");
    }
}

#[test]
fn websocket_upgrades_are_sharded() {
    let pods = Pods::start(3);
    let sy = Switchyard::start(&gateway_config(&pods, ""));
    let (id, want) = vectors()[7].clone();
    let mut s = TcpStream::connect(sy.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET /guilds/{id}/gateway HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(
        pods.pods[want[0] as usize].hits(),
        1,
        "the tunnel went to the key's pod"
    );
}

#[test]
fn route_command_explains_the_shard_decision() {
    let pods = Pods::start(3);
    let dir = TempDir::new("route");
    let path = dir.0.join("c.toml");
    std::fs::write(&path, gateway_config(&pods, "")).unwrap();
    let (id, want) = vectors()[0].clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["route", "-c", path.to_str().unwrap(), "GET", "/gw/x", "-H"])
        .arg(format!("X-Guild-Id: {id}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("key: \"{id}\"")), "{text}");
    assert!(text.contains("hash md5"), "{text}");
    assert!(text.contains(&format!("ordinal: {}", want[0])), "{text}");
    let next = (want[0] + 1) % 3;
    assert!(
        text.contains(&format!("2. pod {next}")),
        "failover order in {text}"
    );
}

#[test]
fn pod_names_are_resolved_when_connecting() {
    // `localhost` comes from /etc/hosts: a name, resolved through the cache, with no DNS
    // traffic leaving the machine.
    let b = Backend::start("pod-0");
    let cfg = format!(
        "{}[[shards]]\nname = \"named\"\npath = \"/n/*\"\nkey = \"path:1\"\naddresses = [\"localhost:{}\"]\n",
        listen_section(""),
        b.addr.port()
    );
    let sy = Switchyard::start(&cfg);
    let mut c = Conn::new(sy.http);
    for i in 0..5 {
        assert_eq!(c.pod(&format!("/n/{i}"), ""), Ok(0));
    }
}
