//! `switchyard demo`: echo backends on loopback plus the balancer in front of them, and the
//! curl commands (on stdout) that show every kind of routing: a path route, a pattern route,
//! round robin, a guild-sharded route over three gateway pods, and a self-registration on the
//! admin port. Its config and file store live in a private temporary directory that is removed
//! at exit, so the demo leaves nothing in the current directory.
//!
//! Every printed curl ends with a comment that `tests/demo.rs` checks against the answer:
//! `# -> a, b` means the echo backends a and b answer, in turn (one name: always that one);
//! `# -> registered` is the admin API's `status`. The pods named for guild ids are computed
//! with the shard function the data plane uses, not written down.
use crate::config;
use crate::http::framing::{self, Body};
use crate::http::head::{self, RequestHead};
use crate::proxy::io::read_head;
use crate::routing::shard::{self, HashKind};
use bytes::{Buf, BytesMut};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Serves HTTP/1.1 echo answers: who answered, and what it received.
pub async fn echo_backend(name: String, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(echo_conn(name.clone(), stream));
    }
}

async fn echo_conn(name: String, mut s: TcpStream) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let deadline = Instant::now() + Duration::from_secs(60);
        let Ok(len) = read_head(&mut s, &mut buf, 65536, deadline, Duration::from_secs(10)).await
        else {
            return;
        };
        let mut h = RequestHead::default();
        if head::parse(&buf, len, &mut h).is_err() {
            return;
        }
        let Ok(fr) = framing::request(&buf, &h) else {
            return;
        };
        let target = String::from_utf8_lossy(h.target(&buf)).into_owned();
        let path =
            String::from_utf8_lossy(head::route_path(h.target(&buf)).unwrap_or(b"/")).into_owned();
        let headers: serde_json::Map<String, serde_json::Value> = h
            .headers
            .iter()
            .map(|x| {
                (
                    String::from_utf8_lossy(&buf[x.name.clone()]).to_ascii_lowercase(),
                    serde_json::Value::from(
                        String::from_utf8_lossy(&buf[x.value.clone()]).into_owned(),
                    ),
                )
            })
            .collect();
        let method = String::from_utf8_lossy(h.method(&buf)).into_owned();
        buf.advance(len);
        let mut sink = tokio::io::sink();
        let body_ok = match fr.body {
            Body::Length(n) => crate::proxy::body::copy_length(
                &mut s,
                &mut buf,
                &mut sink,
                n,
                Duration::from_secs(10),
            )
            .await
            .is_ok(),
            Body::Chunked => crate::proxy::body::copy_chunked(
                &mut s,
                &mut buf,
                &mut sink,
                Duration::from_secs(10),
            )
            .await
            .is_ok(),
            _ => true,
        };
        if !body_ok {
            return;
        }
        let body = if path == "/healthz" || path == "/health" {
            serde_json::json!({"status": "ok", "backend": name})
        } else {
            serde_json::json!({"backend": name, "method": method, "target": target, "headers": headers})
        };
        let mut body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        body.push(b'\n');
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
            return;
        }
        if !fr.keep_alive {
            return;
        }
    }
}

/// The echo backends, by role. `orders` is in no config: it registers itself (the printed
/// curl does it).
pub const BACKENDS: [&str; 9] = [
    "api-1",
    "api-2",
    "files",
    "comments-1",
    "comments-2",
    "gateway-0",
    "gateway-1",
    "gateway-2",
    "orders",
];

/// The port of every echo backend, in the order of [`BACKENDS`].
#[derive(Debug, Clone)]
pub struct Ports(pub [u16; 9]);

impl Ports {
    fn of(&self, name: &str) -> u16 {
        let i = BACKENDS.iter().position(|b| *b == name).unwrap_or(0);
        self.0[i]
    }
}

/// The shard rule's path and the number of gateway pods.
pub const SHARD_PATH: &str = "/gw/*";
pub const PODS: u32 = 3;

/// The demo's config: the same format as config.toml.
pub fn config_text(listen: &str, admin: &str, ports: &Ports, state: &Path) -> String {
    let a = |name: &str| format!("127.0.0.1:{}", ports.of(name));
    format!(
        r#"# switchyard demo: the same format as config.toml. Edit it and `kill -HUP` the demo to reload.
[server]
listen = "{listen}"
access_log = true
drain_timeout = 1

[admin]
listen = "{admin}"

[gateway]
health_check_interval = 2
health_check_timeout = 1
down_check_interval = 5

# Round robin over healthy targets: everything no rule below takes.
[[targets]]
address = "{api1}"
health_check_endpoint = "/healthz"

[[targets]]
address = "{api2}"
health_check_endpoint = "/healthz"

# A path route: /files and /files/..., never /filesystem.
[[path_routes]]
path = "/files"
address = "{files}"
health_check_endpoint = "/healthz"

# A pattern route onto a named pool.
[[backends]]
name = "comments"
addresses = ["{c1}", "{c2}"]
health_check_endpoint = "/health"

[[routes]]
path = "/api/comments/*"
backend = "comments"

# Guild sharding: md5(X-Guild-Id) % 3 picks the pod, as the TypeScript helper does.
[[shards]]
name = "gateway"
path = "{SHARD_PATH}"
key = "header:X-Guild-Id"
addresses = ["{g0}", "{g1}", "{g2}"]
hash = "md5"
health_check_endpoint = "/health"

[store]
kind = "file"
path = "{state}"
"#,
        api1 = a("api-1"),
        api2 = a("api-2"),
        files = a("files"),
        c1 = a("comments-1"),
        c2 = a("comments-2"),
        g0 = a("gateway-0"),
        g1 = a("gateway-1"),
        g2 = a("gateway-2"),
        state = state.join("state.json").display(),
    )
}

/// The guild ids the demo prints, with the pod each lands on: 42 (the README's example), then
/// for every other pod the first snowflake from Discord's documentation example onwards that
/// lands there, so the three lines show three pods.
pub fn guilds() -> Vec<(String, u32)> {
    let pod = |id: &str| {
        shard::pick(HashKind::Md5, id.as_bytes(), PODS)
            .map(|p| p.first)
            .unwrap_or(0)
    };
    let mut out = vec![("42".to_string(), pod("42"))];
    let mut id: u64 = 175_928_847_299_117_063;
    while out.len() < PODS as usize {
        let s = id.to_string();
        let p = pod(&s);
        if out.iter().all(|(_, q)| *q != p) {
            out.push((s, p));
        }
        id += 1;
    }
    out
}

/// What the demo prints on stdout once it listens: the curl commands to try.
pub fn instructions(
    http: SocketAddr,
    admin: SocketAddr,
    ports: &Ports,
    dir: &Path,
    exe: &Path,
) -> String {
    let base = format!("http://{}", reachable(http));
    let adm = format!("http://{}", reachable(admin));
    let mut s = format!(
        "switchyard demo: the balancer on {base}, admin on {adm}, {} echo backends on loopback.\n\
         Try, in another terminal:\n",
        BACKENDS.len()
    );
    let note = |s: &mut String, text: &str| {
        let _ = write!(s, "\n# {text}\n");
    };
    let cmd = |s: &mut String, cmd: &str, claim: &str| {
        let _ = writeln!(s, "{cmd:<56} # {claim}");
    };
    note(&mut s, "round robin over the [[targets]] (run it twice)");
    cmd(&mut s, &format!("curl -s {base}/hello"), "-> api-1, api-2");
    note(
        &mut s,
        "path route /files: /files and /files/..., never /filesystem",
    );
    cmd(
        &mut s,
        &format!("curl -s {base}/files/report.pdf"),
        "-> files",
    );
    cmd(
        &mut s,
        &format!("curl -s {base}/filesystem"),
        "-> api-1, api-2",
    );
    note(
        &mut s,
        "pattern route /api/comments/* onto the comments pool",
    );
    cmd(
        &mut s,
        &format!("curl -s {base}/api/comments/post-1"),
        "-> comments-1, comments-2",
    );
    note(
        &mut s,
        &format!("guild sharding on {SHARD_PATH}: md5(X-Guild-Id) % {PODS} picks the gateway pod"),
    );
    for (id, pod) in guilds() {
        cmd(
            &mut s,
            &format!("curl -s -H 'X-Guild-Id: {id}' {base}/gw/events"),
            &format!("-> gateway-{pod}"),
        );
    }
    let (_, pod42) = guilds()[0].clone();
    cmd(
        &mut s,
        &format!(
            "{} route -c {} -H 'X-Guild-Id: 42' GET /gw/events",
            shell_word(exe),
            shell_word(&dir.join("demo.toml"))
        ),
        &format!("-> ordinal {pod42}, without sending anything"),
    );
    note(
        &mut s,
        "a service registers itself on the admin port, then takes traffic",
    );
    let _ = writeln!(
        s,
        "curl -s -X POST {adm}/internal/register-service \\\n  \
         -H 'Content-Type: application/json' \\\n  \
         -d '{{\"service\": \"orders\", \"url\": \"http://127.0.0.1:{}\", \"routes\": [{{\"path\": \"/orders/*\"}}]}}'  # -> registered",
        ports.of("orders")
    );
    cmd(&mut s, &format!("curl -s {base}/orders/17"), "-> orders");
    note(&mut s, "the admin port");
    cmd(
        &mut s,
        &format!("curl -s {adm}/health"),
        "every address and its health",
    );
    cmd(
        &mut s,
        &format!("curl -s {adm}/internal/services"),
        "the registry",
    );
    let _ = writeln!(
        s,
        "\nstatus page: {adm}/\nconfig and state: {} (removed at exit). Ctrl-C stops the demo.",
        dir.display()
    );
    s
}

/// A path as one shell word: as it is when it has nothing the shell would split or expand.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A wildcard listen address is reached on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        let ip = match a.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, a.port())
    } else {
        a
    }
}

/// Fails with a message naming the flag that moves a port when either address cannot be bound
/// (both are held at once, so `--listen` and `--admin` on one address is caught too).
pub fn check_ports(listen: &str, admin: &str) -> Result<(), String> {
    let mut held = Vec::new();
    for (addr, flag, what) in [
        (listen, "--listen", "the data port"),
        (admin, "--admin", "the admin port"),
    ] {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => held.push(l),
            Err(e) => {
                let hint = free_near(addr, &held)
                    .map(|a| format!(", e.g. {flag} {a}"))
                    .unwrap_or_default();
                return Err(format!(
                    "cannot listen on {addr} ({what}): {e}; move it with {flag} ADDR{hint}"
                ));
            }
        }
    }
    Ok(())
}

/// A port near `addr`'s that binds now, to suggest.
fn free_near(addr: &str, held: &[std::net::TcpListener]) -> Option<SocketAddr> {
    let a: SocketAddr = addr.parse().ok()?;
    let taken: Vec<u16> = held
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|x| x.port()))
        .collect();
    (1..=50u16)
        .filter_map(|d| a.port().checked_add(d))
        .filter(|p| !taken.contains(p))
        .map(|p| SocketAddr::new(a.ip(), p))
        .find(|c| std::net::TcpListener::bind(c).is_ok())
}

/// The demo's private directory (mode 0700, a fresh name), removed when dropped: after the
/// drain on SIGINT/SIGTERM, and on every error path.
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn create() -> std::io::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "switchyard-demo-{}-{nanos:08x}",
            std::process::id()
        ));
        // create, not create_all: an existing path (or a planted symlink) is an error.
        std::fs::DirBuilder::new().mode(0o700).create(&p)?;
        Ok(StateDir(p))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Runs the demo until SIGTERM/SIGINT; SIGHUP reloads its config file.
pub async fn run(listen: &str, admin: &str) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal from here on drains and removes the directory.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let dir = StateDir::create()?;
    let mut ports = [0u16; 9];
    for (i, name) in BACKENDS.iter().enumerate() {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        ports[i] = l.local_addr()?.port();
        tokio::spawn(echo_backend(name.to_string(), l));
    }
    let ports = Ports(ports);
    let path = dir.0.join("demo.toml");
    std::fs::write(&path, config_text(listen, admin, &ports, &dir.0))?;
    let cfg = config::load(&path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let running = crate::server::start(cfg).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // The path of this binary: `cargo run -- demo` puts no `switchyard` on the PATH.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("switchyard"));
        let text = instructions(running.http_addr, running.admin_addr, &ports, &dir.0, &exe);
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                crate::control::reload(&running.shared, &path).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let drain = running.shared.dp.table.load().server.drain_timeout;
    running.drain(drain).await;
    drop(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports([1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009])
    }

    #[test]
    fn the_demo_config_is_valid_and_has_every_kind_of_rule() {
        let text = config_text("127.0.0.1:0", "127.0.0.1:0", &ports(), Path::new("/tmp/x"));
        let cfg = config::parse(&text, "demo.toml", Box::new(|_| None)).expect("valid");
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.path_routes.len(), 1);
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.shards.len(), 1);
        assert_eq!(cfg.shards[0].addresses.len(), PODS as usize);
        assert_eq!(cfg.shards[0].addresses[2].port, 1008);
        assert!(text.contains("path = \"/tmp/x/state.json\""), "{text}");
    }

    #[test]
    fn guild_ids_cover_every_pod_with_the_md5_pick() {
        let g = guilds();
        assert_eq!(g[0].0, "42");
        let mut pods: Vec<u32> = g.iter().map(|(_, p)| *p).collect();
        pods.sort_unstable();
        assert_eq!(pods, vec![0, 1, 2]);
        // The TypeScript helper's formula, on its own: readUInt32BE(md5(id), 0) % 3.
        for (id, pod) in g {
            let d = <md5::Md5 as md5::Digest>::digest(id.as_bytes());
            let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            assert_eq!(n % 3, pod, "{id}");
        }
    }

    #[test]
    fn instructions_use_the_bound_addresses() {
        let http: SocketAddr = "0.0.0.0:18080".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:19901".parse().unwrap();
        let t = instructions(
            http,
            admin,
            &ports(),
            Path::new("/tmp/d"),
            Path::new("/bin/sy"),
        );
        assert!(t.contains("curl -s http://127.0.0.1:18080/hello"), "{t}");
        assert!(
            t.contains("http://127.0.0.1:19901/internal/register-service"),
            "{t}"
        );
        assert!(t.contains("\"url\": \"http://127.0.0.1:1009\""), "{t}");
        assert!(t.contains("/bin/sy route -c /tmp/d/demo.toml"), "{t}");
        assert!(t.contains("X-Guild-Id: 42"), "{t}");
        let t = instructions(
            http,
            admin,
            &ports(),
            Path::new("/tmp/a b"),
            Path::new("/it's/sy"),
        );
        assert!(
            t.contains("'/it'\\''s/sy' route -c '/tmp/a b/demo.toml'"),
            "{t}"
        );
    }

    #[test]
    fn a_busy_port_names_the_flag_that_moves_it() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = busy.local_addr().unwrap().to_string();
        let e = check_ports(&b, "127.0.0.1:0").unwrap_err();
        assert!(e.contains("--listen") && e.contains(&b), "{e}");
        let e = check_ports("127.0.0.1:0", &b).unwrap_err();
        assert!(e.contains("--admin") && e.contains(&b), "{e}");
        // One free address for both: the second bind is refused while the first is held.
        let free = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = check_ports(&free, &free).unwrap_err();
        assert!(e.contains("--admin"), "{e}");
        assert!(check_ports("127.0.0.1:0", "127.0.0.1:0").is_ok());
    }
}
