//! The session and its phases over `tokio::io::duplex` clients, with real loopback backends:
//! keep-alive sequencing, 100-continue, an early final answer, an upstream that closes
//! mid-response, and tunnels. Each test is bounded by a timeout.
use super::session::{self, ClientStream, ConnInfo};
use crate::state::DataPlane;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Duplex clients have nothing to wait on without a read (and no socket to splice with,
/// `splice::AsTcp`).
impl ClientStream for DuplexStream {
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

const LIMIT: Duration = Duration::from_secs(10);

/// A data plane routing `/api` (and, with `catch_all`, everything) to `backend`.
fn shared(backend: SocketAddr, server: &str) -> Arc<DataPlane> {
    let src = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[path_routes]]\npath = \"/api\"\naddress = \"{backend}\"\n"
    );
    let cfg = crate::config::parse(&src, "test", Box::new(|_| None)).expect("config");
    let upstreams = crate::upstream::set::UpstreamSet::default();
    let table = crate::routing::build::build(&cfg, &[], &upstreams);
    DataPlane::new(table).0
}

/// A backend on loopback running `handle` for each connection.
async fn backend<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// A client connection served by a session of its own.
fn client(dp: Arc<DataPlane>) -> DuplexStream {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    tokio::spawn(session::serve(dp, s, peer, ConnInfo::default()));
    c
}

/// Reads one request head (and nothing more) from a backend socket.
async fn request_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap_or(0) == 0 {
            break;
        }
        got.push(b[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One response (head + Content-Length body) from the client side: (status, head, body).
async fn response<R: AsyncReadExt + Unpin>(c: &mut R) -> (u16, String, Vec<u8>) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut b).await.unwrap(), 1, "closed inside a head");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await.unwrap();
    (status, head, body)
}

/// A backend answering every request on a connection with its path as the body.
async fn path_echo(mut s: TcpStream) {
    loop {
        let head = request_head(&mut s).await;
        let Some(path) = head.split(' ').nth(1) else {
            return;
        };
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
            path.len()
        );
        if s.write_all(r.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn keep_alive_requests_are_each_answered_once_in_order() {
    let b = backend(path_echo).await;
    let mut c = client(shared(b, ""));
    timeout(LIMIT, async {
        // Pipelined: a routed request, a 404, another routed one.
        c.write_all(
            b"GET /api/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /nothing HTTP/1.1\r\nHost: t\r\n\r\nGET /api/2 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .unwrap();
        let (st, _, body) = response(&mut c).await;
        assert_eq!((st, &body[..]), (200, &b"/api/1"[..]));
        let (st, head, body) = response(&mut c).await;
        assert_eq!(st, 404, "{head}");
        assert!(String::from_utf8_lossy(&body).contains("no_route"));
        let (st, _, body) = response(&mut c).await;
        assert_eq!((st, &body[..]), (200, &b"/api/2"[..]));
        // Nothing more: the 404 was answered once.
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn expect_100_continue_is_relayed_before_the_body() {
    let b = backend(|mut s| async move {
        let head = request_head(&mut s).await;
        assert!(
            head.to_ascii_lowercase().contains("expect: 100-continue"),
            "{head}"
        );
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.unwrap();
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
            String::from_utf8_lossy(&body)
        );
        s.write_all(r.as_bytes()).await.unwrap();
    })
    .await;
    let mut c = client(shared(b, ""));
    timeout(LIMIT, async {
        c.write_all(
            b"PUT /api/x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
        let (st, _, _) = response(&mut c).await;
        assert_eq!(st, 100);
        c.write_all(b"hello").await.unwrap();
        let (st, _, body) = response(&mut c).await;
        assert_eq!((st, &body[..]), (200, &b"hello"[..]));
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn early_final_answer_reaches_a_client_still_uploading() {
    // The backend refuses after the head and keeps its socket open, reading nothing more.
    let b = backend(|mut s| async move {
        let _ = request_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let c = client(shared(b, "idle_timeout = 30"));
    let (mut r, mut w) = tokio::io::split(c);
    let size = 64 << 20;
    w.write_all(
        format!("POST /api/up HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size && w.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let (st, _, body) = timeout(Duration::from_secs(3), response(&mut r))
        .await
        .expect("the 413 came while the upload was still going");
    assert_eq!((st, &body[..]), (413, &b"big"[..]));
    upload.abort();
}

#[tokio::test]
async fn upstream_closing_mid_response_closes_the_client_connection() {
    let b = backend(|mut s| async move {
        let _ = request_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            .await;
        // Closes 90 bytes short.
    })
    .await;
    let mut c = client(shared(b, ""));
    timeout(LIMIT, async {
        c.write_all(
            b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\nGET /api/y HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with("only ten b"),
            "nothing after the broken body: {text}"
        );
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn upgrade_becomes_a_tunnel_both_ways() {
    let b = backend(|mut s| async move {
        let _ = request_head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
            }
        }
    })
    .await;
    let mut c = client(shared(b, ""));
    timeout(LIMIT, async {
        c.write_all(
            b"GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly",
        )
        .await
        .unwrap();
        let (st, head, _) = response(&mut c).await;
        assert_eq!(st, 101, "{head}");
        assert!(head.contains("Upgrade: echo"), "{head}");
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"early", "bytes sent after the head went through");
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
    })
    .await
    .expect("in time");
}
