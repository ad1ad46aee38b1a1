//! Rewrites over real sockets (SPEC §3 Rewrites): `strip_prefix` in front of a plain Python
//! `http.server` (which knows nothing of the prefix), request header sets and removals as a
//! hyper backend records them, response header sets and removals as the client sees them.
mod support;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// `python3 -m http.server` serving `dir` on a free loopback port; killed by PID on drop.
struct FileServer {
    child: Child,
    addr: String,
}

impl FileServer {
    fn start(dir: &std::path::Path) -> FileServer {
        // Port 0: the server binds a free port itself and prints it, so there is no race
        // between picking a port and binding it.
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server (python3 is a test counterpart)");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
                if let Some(p) = line.split(" port ").nth(1) {
                    let port: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("python3 http.server did not report its port");
            }
        };
        FileServer {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        // Only this child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(sy: &Switchyard, path: &str) -> (u16, String) {
    let r = client().get(sy.url(path)).send().expect("request");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn strip_prefix_in_front_of_a_plain_file_server() {
    let root = TempDir::new("files");
    std::fs::write(root.0.join("report.txt"), "quarterly numbers\n").unwrap();
    std::fs::create_dir(root.0.join("sub")).unwrap();
    std::fs::write(root.0.join("sub").join("a.txt"), "nested file\n").unwrap();
    let files = FileServer::start(&root.0);
    let sy = Switchyard::start(&format!(
        r#"{}
[[path_routes]]
path = "/files"
address = "{a}"
strip_prefix = "/files"

# The same server without strip_prefix: it gets /raw/report.txt and has no such file.
[[path_routes]]
path = "/raw"
address = "{a}"

[[backends]]
name = "files"
addresses = ["{a}"]
[[routes]]
path = "/docs/v1/*"
backend = "files"
strip_prefix = "/docs/v1"
"#,
        listen_section(""),
        a = files.addr
    ));
    assert_eq!(
        get(&sy, "/files/report.txt"),
        (200, "quarterly numbers\n".into())
    );
    assert_eq!(
        get(&sy, "/files/report.txt?x=1"),
        (200, "quarterly numbers\n".into())
    );
    assert_eq!(get(&sy, "/files/sub/a.txt"), (200, "nested file\n".into()));
    // `/files` alone is the server's `/`: its directory listing.
    let (status, body) = get(&sy, "/files");
    assert_eq!(status, 200);
    assert!(
        body.contains("report.txt") && body.contains("sub/"),
        "{body}"
    );
    let (status, body) = get(&sy, "/files/?y=2");
    assert!(status == 200 && body.contains("report.txt"), "{body}");
    // Without the strip the server sees the prefix and has no such file.
    assert_eq!(get(&sy, "/raw/report.txt").0, 404);
    // A pattern route strips its literal prefix too.
    assert_eq!(
        get(&sy, "/docs/v1/sub/a.txt"),
        (200, "nested file\n".into())
    );
    // A segment boundary is needed: /filesx is not under /files.
    assert_eq!(get(&sy, "/filesx/report.txt").0, 404);
}

fn seen_last(b: &Backend) -> (String, Vec<(String, String)>) {
    let seen = b.stats.seen.lock().unwrap();
    let (_, target, headers) = seen.last().expect("the backend saw a request").clone();
    (target, headers)
}

fn values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn request_headers_set_and_removed_as_the_backend_sees_them() {
    let api = Backend::start("api");
    let pods = Backend::start("pod0");
    let sy = Switchyard::start(&format!(
        r#"{}
[[backends]]
name = "api"
addresses = ["{api}"]

[[routes]]
path = "/api/*"
backend = "api"
strip_prefix = "/api"
set_request_headers = {{ Host = "internal.example", "X-Env" = "prod", "X-Empty" = "" }}
remove_request_headers = ["X-Debug", "Cookie"]

[[routes]]
path = "/plain/*"
backend = "api"

[[shards]]
name = "g"
path = "/g/*"
key = "path:1"
addresses = ["{pod}"]
strip_prefix = "/g"
set_request_headers = {{ "X-Tier" = "gold" }}
"#,
        listen_section(""),
        api = api.addr,
        pod = pods.addr,
    ));
    let r = raw(
        sy.http,
        b"GET /api/v1/items?q=1 HTTP/1.1\r\nHost: client.example:8080\r\nX-Debug: 1\r\nx-debug: 2\r\nX-ENV: dev\r\nCookie: s=1\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let (target, h) = seen_last(&api);
    assert_eq!(target, "/v1/items?q=1");
    assert_eq!(values(&h, "host"), ["internal.example"]);
    assert_eq!(values(&h, "x-env"), ["prod"]);
    assert_eq!(values(&h, "x-empty"), [""]);
    assert!(
        values(&h, "x-debug").is_empty() && values(&h, "cookie").is_empty(),
        "{h:?}"
    );
    assert_eq!(values(&h, "accept"), ["text/plain"]);
    // The client's own host, not the one the rule set.
    assert_eq!(values(&h, "x-forwarded-host"), ["client.example:8080"]);

    // A rule without edits forwards the same head unchanged.
    let r = raw(
        sy.http,
        b"GET /plain/x HTTP/1.1\r\nHost: client.example\r\nX-Debug: 1\r\nX-Env: dev\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let (target, h) = seen_last(&api);
    assert_eq!(target, "/plain/x");
    assert_eq!(values(&h, "host"), ["client.example"]);
    assert_eq!(values(&h, "x-debug"), ["1"]);
    assert_eq!(values(&h, "x-env"), ["dev"]);

    // Shards: the key is read from the path as the client sent it, the strip comes after.
    let r = raw(
        sy.http,
        b"GET /g/42/events HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let (target, h) = seen_last(&pods);
    assert_eq!(target, "/42/events");
    assert_eq!(values(&h, "x-tier"), ["gold"]);
    assert_eq!(values(&h, "x-shard"), ["0"]);
}

#[test]
fn response_headers_set_and_removed_as_the_client_sees_them() {
    let api = Backend::start("api");
    let sy = Switchyard::start(&format!(
        r#"{}
[[backends]]
name = "api"
addresses = ["{api}"]
[[routes]]
path = "/edited/*"
backend = "api"
set_response_headers = {{ "Content-Type" = "text/plain; charset=utf-8", "X-Frame-Options" = "DENY" }}
remove_response_headers = ["Date"]
[[routes]]
path = "/plain/*"
backend = "api"
"#,
        listen_section(""),
        api = api.addr,
    ));
    let mut c = RawConn::connect(sy.http);
    c.send(b"GET /edited/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    // hyper's echo sends Date and Content-Type: application/json.
    assert_eq!(r.header_count("date"), 0);
    assert_eq!(r.header_count("content-type"), 1);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-gateway"), Some("switchyard"));
    // The body and its framing are untouched: the connection carries the next request.
    assert_eq!(r.json()["backend"], "api");
    c.send(b"GET /plain/x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("second response");
    assert_eq!(r.header_count("date"), 1);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header_count("x-frame-options"), 0);
}

#[test]
fn check_refuses_bad_rewrites_with_key_and_line() {
    let dir = TempDir::new("rewrites-check");
    let path = dir.0.join("bad.toml");
    std::fs::write(
        &path,
        r#"[[path_routes]]
path = "/files"
address = "127.0.0.1:7001"
strip_prefix = "/file"
set_request_headers = { "Transfer-Encoding" = "chunked" }
remove_response_headers = ["Connection"]
set_response_headers = { "X-Ok" = "a\r\nX-Injected: 1" }
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for want in [
        "bad.toml:4: path_routes[0].strip_prefix",
        "bad.toml:5: path_routes[0].set_request_headers.Transfer-Encoding",
        "bad.toml:6: path_routes[0].remove_response_headers: Connection",
        "bad.toml:7: path_routes[0].set_response_headers.X-Ok",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
}

/// Every switchyard config on the nginx/Traefik page passes `check` (a block that uses the
/// `api` pool without defining it gets that one definition first).
#[test]
fn the_nginx_traefik_page_configs_check() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/coming-from-nginx-traefik.md"
    ))
    .unwrap();
    let blocks: Vec<&str> = page
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 9, "one per nginx and Traefik section");
    let dir = TempDir::new("nginx-page");
    for (i, b) in blocks.iter().enumerate() {
        let mut text = String::new();
        if b.contains("backend = \"api\"") && !b.contains("name = \"api\"") {
            text.push_str("[[backends]]\nname = \"api\"\naddresses = [\"127.0.0.1:9001\"]\n");
        }
        text.push_str(b);
        let path = dir.0.join(format!("block{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "block {i}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
