//! `switchyard demo`: a few echo backends on loopback plus the balancer in front of them, with
//! curl commands that show path routes, pattern routes and round robin. Nothing to install.
use crate::config;
use crate::http::framing::{self, Body};
use crate::http::head::{self, RequestHead};
use crate::proxy::io::read_head;
use bytes::{Buf, BytesMut};
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

/// Starts the echo backends and returns the demo's config text.
pub async fn start_backends(listen: &str, admin: &str) -> std::io::Result<String> {
    let mut ports = Vec::new();
    for name in ["api-1", "api-2", "files", "comments-1", "comments-2"] {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        ports.push(l.local_addr()?.port());
        tokio::spawn(echo_backend(name.to_string(), l));
    }
    Ok(format!(
        r#"# The demo's config: the same format as config.toml.
[server]
listen = "{listen}"
access_log = true

[admin]
listen = "{admin}"

[gateway]
health_check_interval = 2
health_check_timeout = 1
down_check_interval = 5

[[targets]]
address = "127.0.0.1:{}"
health_check_endpoint = "/healthz"

[[targets]]
address = "127.0.0.1:{}"
health_check_endpoint = "/healthz"

[[path_routes]]
path = "/files"
address = "127.0.0.1:{}"
health_check_endpoint = "/healthz"

[[backends]]
name = "comments"
addresses = ["127.0.0.1:{}", "127.0.0.1:{}"]
health_check_endpoint = "/health"

[[routes]]
path = "/api/comments/*"
backend = "comments"
"#,
        ports[0], ports[1], ports[2], ports[3], ports[4]
    ))
}

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(listen: &str, admin: &str) -> std::io::Result<()> {
    let text = start_backends(listen, admin).await?;
    let cfg = config::parse(&text, "demo", Box::new(|k| std::env::var(k).ok()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let base = format!("http://{}", cfg.server.listen);
    let admin_url = format!("http://{}", cfg.admin_listen);
    eprintln!(
        "\nswitchyard demo: five echo backends on loopback, the balancer on {base}\n\
         try, in another terminal:\n\
         \n  curl -s {base}/hello                 # round robin: run it twice, see api-1 then api-2\
         \n  curl -s {base}/files/report.pdf      # path route /files -> the files backend\
         \n  curl -s {base}/filesystem            # not /files: the catch-all pool\
         \n  curl -s {base}/api/comments/post-1   # pattern route /api/comments/* -> comments pool\
         \n  curl -si {base}/api/comments         # no segment after /api/comments: catch-all\
         \n  curl -s {admin_url}/health           # health of every address\
         \n  open {admin_url}/                    # the status page\
         \n\nCtrl-C stops it.\n"
    );
    crate::server::run(cfg, None).await
}
