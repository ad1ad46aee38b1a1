//! One request's state ([`Exchange`]), built fresh for each request, and [`run`], the driver
//! over the phases after `read`: route → connect → send → relay. Whatever the outcome, the
//! finish phase gets it. Nothing here knows which protocol the client speaks.
use super::connect;
use super::downstream::{Downstream, RequestBody};
use super::error::ProxyError;
use super::{relay, route, send};
use crate::http::admit::Target;
use crate::http::error::ErrorKind;
use crate::http::framing::{Body, RequestFraming};
use crate::http::head::{self, RequestHead};
use crate::http::response::ResponseHead;
use crate::routing::{Rule, Table};
use crate::state::Shared;
use crate::upstream::Upstream;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::time::Instant;

/// A parsed request, as the `read` phase leaves it.
#[derive(Debug, Default)]
pub(crate) struct Request {
    /// The head's bytes, moved out of the connection's buffer where it was parsed: whatever
    /// happens next, the next request starts after it. (A copy into a vector kept across
    /// requests: cheaper than sharing the read buffer, which costs an allocation each time.)
    pub bytes: Vec<u8>,
    pub head: RequestHead,
    pub framing: RequestFraming,
    pub rid: Vec<u8>,
    /// `METHOD target protocol` for the access log, filled only when it is on.
    pub line: String,
    /// The request is an HTTP/2 stream (its head was translated to HTTP/1.1 form).
    pub h2: bool,
    /// The target's form once `read` admitted it (`http::admit`); None before.
    pub form: Option<Target>,
    /// The canonical path when it differs from the one sent (`form` says so).
    pub canon: Vec<u8>,
}

impl Request {
    pub fn method(&self) -> &[u8] {
        self.head.method(&self.bytes)
    }
    pub fn target(&self) -> &[u8] {
        self.head.target(&self.bytes)
    }
    pub fn header(&self, lower: &str) -> Option<&[u8]> {
        self.head.header(&self.bytes, lower)
    }
    /// The path routing sees: the canonical one (`http::canonical`), `/` for CONNECT (routed
    /// as a route `path = "/"` that lists the method), None for `*` or before admission.
    pub fn path(&self) -> Option<&[u8]> {
        match self.form? {
            Target::Path { rewritten: true } => Some(&self.canon),
            Target::Path { rewritten: false } => head::route_path(self.target()),
            Target::Authority => Some(b"/"),
            Target::Asterisk => None,
        }
    }
    /// The path the backend gets in place of the one sent, when canonicalizing changed it.
    pub fn rewritten_path(&self) -> Option<&[u8]> {
        matches!(self.form, Some(Target::Path { rewritten: true })).then_some(&self.canon[..])
    }
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }
    /// The client's protocol, as access log lines and metrics name it.
    pub fn protocol(&self) -> &'static str {
        match (self.h2, self.head.minor_version) {
            (true, _) => "HTTP/2",
            (false, 0) => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
    }
    pub fn is_connect(&self) -> bool {
        self.method() == b"CONNECT"
    }
    /// An error answered now must close: the body was not read (it would be taken for the
    /// next request), or the client did not want to keep the connection.
    pub fn must_close_on_error(&self) -> bool {
        self.framing.body != Body::None || !self.framing.keep_alive
    }
    /// Readies this for the next head; allocations are kept.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.head.len = 0;
        self.framing = RequestFraming::default();
        self.rid.clear();
        self.line.clear();
        self.form = None;
        self.canon.clear();
    }
}

/// What the client connection does after this exchange. Only ever raised: a close stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum After {
    KeepAlive,
    Close,
    /// Close, after reading and discarding what the client still sends (see `session`).
    Linger,
}

/// Where `Expect: 100-continue` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continue {
    /// The client did not ask; a backend's 100 is not relayed.
    NotAsked,
    /// The client waits for a 100.
    Waiting,
    /// It got one; another is not relayed.
    Sent,
}

/// How an exchange that reached a backend ended.
pub(crate) enum Relayed {
    Done,
    /// The exchange became a tunnel to this upstream stream (101, 2xx to CONNECT).
    Tunnel(super::stream::BackendStream),
}

/// One request on its way through the phases.
pub(crate) struct Exchange<'t> {
    /// What the data plane shares: metrics, the drain signal.
    pub dp: &'t Shared,
    pub table: &'t Table,
    pub req: &'t Request,
    pub client_ip: &'t str,
    /// The client's address, for the per-address count of failed API keys.
    pub peer: std::net::IpAddr,
    /// The client's scheme, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// When the head had arrived.
    pub started: Instant,
    pub rule: Option<&'t Rule>,
    pub upstream: Option<Arc<Upstream>>,
    pub key_name: Option<&'t str>,
    /// Candidates tried to connect.
    pub attempts: u32,
    /// When the head went to the backend (for `Server-Timing` and the response deadline).
    pub sent_at: Instant,
    /// The status relayed to the client, once its head is out.
    pub status: Option<u16>,
    pub cont: Continue,
    pub after: After,
    /// A gRPC request (`content-type: application/grpc…`).
    pub grpc: bool,
}

impl<'t> Exchange<'t> {
    pub fn new(
        dp: &'t Shared,
        table: &'t Table,
        req: &'t Request,
        client_ip: &'t str,
        peer: std::net::IpAddr,
        proto: &'static str,
        started: Instant,
    ) -> Self {
        Exchange {
            dp,
            table,
            req,
            client_ip,
            peer,
            proto,
            started,
            rule: None,
            upstream: None,
            key_name: None,
            attempts: 0,
            sent_at: started,
            status: None,
            cont: if req.framing.expect_continue {
                Continue::Waiting
            } else {
                Continue::NotAsked
            },
            after: if req.framing.keep_alive {
                After::KeepAlive
            } else {
                After::Close
            },
            grpc: false,
        }
    }

    /// Raises what happens to the client connection after this exchange.
    pub fn after(&mut self, a: After) {
        self.after = self.after.max(a);
    }
}

/// Buffers an exchange borrows from its connection.
pub(crate) struct Bufs<'b> {
    /// Heads being written, both ways.
    pub out: &'b mut Vec<u8>,
    /// The backend's bytes.
    pub up: &'b mut BytesMut,
    pub resp: &'b mut ResponseHead,
}

/// Route, connect, send and relay one exchange; the caller hands the result to `finish`.
pub(crate) async fn run<D: Downstream, B: RequestBody>(
    ex: &mut Exchange<'_>,
    bufs: &mut Bufs<'_>,
    down: &mut D,
    body: &mut B,
) -> Result<Relayed, ProxyError> {
    let auth = route::AuthFailures {
        limiter: &ex.dp.auth_failures,
        peer: ex.peer,
    };
    let routed = match route::route(ex.table, ex.req, &auth) {
        Ok(r) => r,
        Err(r) => {
            ex.rule = r.rule;
            return Err(r.error);
        }
    };
    ex.rule = Some(routed.rule);
    ex.key_name = routed.key_name;
    if ex.grpc {
        // gRPC needs trailers, which an HTTP/1.1 backend cannot send (SPEC §10).
        let msg = "gRPC needs an HTTP/2 backend (protocol = \"h2c\" or \"h2\")";
        return Err(ProxyError::refuse(ErrorKind::BadGateway, msg));
    }
    let mut co = connect::connect(ex, routed.candidates).await?;
    if bufs.up.capacity() == 0 {
        *bufs.up = super::bufpool::take();
    }
    let reused = co.reused;
    let r = async {
        let expect = send::send_head(ex, &mut co, bufs, down, body).await?;
        relay::relay(ex, co, down, body, bufs, expect).await
    };
    r.await.map_err(|mut e| {
        e.reused = reused;
        e
    })
}
