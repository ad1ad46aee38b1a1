//! The seam between a client's protocol and the phases after `read`. Route, connect, send,
//! relay and finish only see a request head, a [`RequestBody`] and a [`Downstream`] to answer
//! through; HTTP/1.1 implements both in `h1.rs`, and an HTTP/2 stream can implement them next
//! to it and reuse every phase as it is (Pingora's `Session` hides the version the same way).
use super::body::CopyError;
use super::splice::AsTcp;
use crate::http::edits::HeaderEdits;
use crate::http::error::ErrorKind;
use crate::http::framing::Body;
use crate::http::reply::Relay;
use crate::http::response::ResponseHead;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the final head's write decided about the body that follows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub relay: Relay,
    /// Body bytes still to come from the backend after those sent with the head.
    pub left: u64,
    /// The client connection closes after this answer.
    pub close: bool,
    /// Bytes of the head (and coalesced body) written.
    pub len: usize,
}

/// What the gateway puts into a relayed head besides the backend's: the time to the answer
/// (for `Server-Timing`) and the rule's response header sets and removals (SPEC §3 Rewrites).
#[derive(Clone, Copy)]
pub(crate) struct Added<'a> {
    pub upstream_ms: f64,
    pub edits: &'a HeaderEdits,
}

/// The client side of an exchange: where answers go. `out` is the exchange's scratch buffer
/// for heads; `up` holds the backend's bytes, `resp` its parsed head.
pub(crate) trait Downstream {
    /// Relays an interim answer (a 1xx other than 101); a no-op for clients that take none.
    async fn interim(
        &mut self,
        out: &mut Vec<u8>,
        up: &[u8],
        resp: &ResponseHead,
    ) -> io::Result<()>;

    /// Our own `100 Continue`, when the backend stays silent on `Expect: 100-continue`.
    async fn continue_100(&mut self) -> io::Result<()>;

    /// The head of an answer that turns the exchange into a tunnel (101, 2xx to CONNECT).
    async fn tunnel_head(
        &mut self,
        out: &mut Vec<u8>,
        up: &[u8],
        resp: &ResponseHead,
        added: Added<'_>,
    ) -> io::Result<()>;

    /// The final head, framed for this client from the backend's `body`; body bytes already
    /// in `up` may go with it. `close`: the connection closes after this answer anyway.
    async fn final_head(
        &mut self,
        out: &mut Vec<u8>,
        up: &mut BytesMut,
        resp: &ResponseHead,
        body: Body,
        close: bool,
        added: Added<'_>,
    ) -> io::Result<Written>;

    /// Relays the rest of the body from `src` (what is already read sits in `pending`);
    /// `AsTcp` lets a long body between plain sockets be spliced.
    async fn body<R: AsyncRead + Unpin + AsTcp>(
        &mut self,
        out: &mut Vec<u8>,
        src: &mut R,
        pending: &mut BytesMut,
        w: Written,
    ) -> Result<(), CopyError>;

    /// An error answer with its JSON body (the finish phase decides which).
    async fn error(
        &mut self,
        kind: ErrorKind,
        message: &str,
        rid: &[u8],
        close: bool,
    ) -> io::Result<()>;

    /// Bytes written to the client so far.
    fn bytes_out(&self) -> u64;
}

/// The request body, whatever the client's protocol: it knows how to go to an HTTP/1.1
/// backend with the framing the forwarded head announced.
pub(crate) trait RequestBody {
    /// Whether body bytes remain to be sent after the head.
    fn has_more(&self) -> bool;

    /// Moves body bytes already at hand behind the head in `out` when they are few, so that
    /// a small request leaves in one write.
    fn coalesce(&mut self, out: &mut Vec<u8>);

    /// Body bytes passed on so far.
    fn bytes_in(&self) -> u64;

    /// Sends the rest of the body to `dst` (after a [`rewind`](Self::rewind), first what was
    /// kept).
    async fn send_to<W: AsyncWrite + Unpin + AsTcp>(
        &mut self,
        dst: &mut W,
    ) -> Result<(), CopyError>;

    /// Keeps the body bytes passed on from now, up to `limit`, so that a retry can send them
    /// again (SPEC §11 `max_retry_body`); a body announced larger is never kept. Without an
    /// implementation, nothing is kept.
    fn keep(&mut self, _limit: u64) {}

    /// Whether a retry can send the body again: every byte passed on so far is kept, or none
    /// went yet (and the body is not known to be over the limit).
    fn replayable(&self) -> bool {
        self.bytes_in() == 0
    }

    /// Readies the body for the next try: [`send_to`](Self::send_to) resends what was kept,
    /// then goes on with what the client has not sent yet. Only after
    /// [`replayable`](Self::replayable) said yes.
    fn rewind(&mut self) {}
}
