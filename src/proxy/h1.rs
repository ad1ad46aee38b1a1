//! HTTP/1.x towards the client: [`H1Out`] writes answers (interim, tunnel, final head, body,
//! errors) framed for the client's version, and [`H1Body`] streams a request body read from the
//! client socket. These are the only protocol-specific pieces the phases after `read` touch.
use super::body::{self, CopyError};
use super::counted::Counted;
use super::downstream::{Added, Downstream, RequestBody, Written};
use super::io::write_all;
use super::replay::Kept;
use super::splice::AsTcp;
use crate::http::chunked::Decoder;
use crate::http::error::{self, ErrorKind};
use crate::http::framing::Body;
use crate::http::reply::{self, Relay};
use crate::http::response::ResponseHead;
use crate::http::rewrite::{self, Reply};
use bytes::{Buf, BytesMut};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Body bytes sent in the same write as a head when they are already at hand.
const COALESCE: usize = 16 * 1024;
/// How long an error answer may take to write.
const ERROR_WRITE: Duration = Duration::from_secs(5);

/// Moves the body bytes already read (up to `left`) behind a head in `out`, so that a small
/// message leaves in one write; larger ones are streamed from `pending` as usual.
pub(crate) fn coalesce(out: &mut Vec<u8>, pending: &mut BytesMut, left: &mut u64) {
    let k = (pending.len() as u64).min(*left) as usize;
    if k > 0 && k <= COALESCE {
        out.extend_from_slice(&pending[..k]);
        pending.advance(k);
        *left -= k as u64;
    }
}

/// Answers to an HTTP/1.`minor` client over `w` (the socket, or its write half while the
/// upload runs).
pub(crate) struct H1Out<'a, W> {
    pub w: W,
    pub minor: u8,
    /// The request was a HEAD: answers carry no body.
    pub is_head: bool,
    pub idle: Duration,
    pub gateway: &'a str,
    /// Bytes written to the client so far (the access log's `bytes_out`).
    pub sent: u64,
}

impl<W: AsyncWrite + Unpin + AsTcp> H1Out<'_, W> {
    async fn write(&mut self, b: &[u8], timeout: Duration) -> io::Result<()> {
        write_all(&mut self.w, b, timeout).await?;
        self.sent += b.len() as u64;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + AsTcp> Downstream for H1Out<'_, W> {
    async fn interim(
        &mut self,
        out: &mut Vec<u8>,
        up: &[u8],
        resp: &ResponseHead,
    ) -> io::Result<()> {
        // HTTP/1.0 has no interim answers.
        if self.minor == 0 {
            return Ok(());
        }
        rewrite::interim_head(up, resp, out);
        self.write(out, self.idle).await
    }

    async fn continue_100(&mut self) -> io::Result<()> {
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n", self.idle)
            .await
    }

    async fn tunnel_head(
        &mut self,
        out: &mut Vec<u8>,
        up: &[u8],
        resp: &ResponseHead,
        added: Added<'_>,
    ) -> io::Result<()> {
        let reply = Reply {
            gateway: self.gateway,
            upstream_ms: added.upstream_ms,
            content_length: None,
            chunked: false,
            close: false,
            keep_alive_1_0: false,
            switching: resp.status == 101,
            edits: added.edits,
        };
        rewrite::response_head(up, resp, &reply, out);
        self.write(out, self.idle).await
    }

    async fn final_head(
        &mut self,
        out: &mut Vec<u8>,
        up: &mut BytesMut,
        resp: &ResponseHead,
        body: Body,
        close: bool,
        added: Added<'_>,
    ) -> io::Result<Written> {
        let f = reply::frame(
            up,
            &resp.headers,
            body,
            resp.status,
            self.is_head,
            self.minor,
            close,
        );
        let reply = Reply {
            gateway: self.gateway,
            upstream_ms: added.upstream_ms,
            content_length: f.content_length,
            chunked: f.chunked,
            close: f.close,
            keep_alive_1_0: self.minor == 0 && !f.close,
            switching: false,
            edits: added.edits,
        };
        rewrite::response_head(up, resp, &reply, out);
        up.advance(resp.len);
        let mut left = match f.relay {
            Relay::Length(n) => n,
            _ => 0,
        };
        coalesce(out, up, &mut left);
        self.write(out, self.idle).await?;
        Ok(Written {
            relay: f.relay,
            left,
            close: f.close,
            len: out.len(),
        })
    }

    async fn body<R: AsyncRead + Unpin + AsTcp>(
        &mut self,
        out: &mut Vec<u8>,
        src: &mut R,
        pending: &mut BytesMut,
        w: Written,
    ) -> Result<(), CopyError> {
        let idle = self.idle;
        let dst = &mut Counted {
            w: &mut self.w,
            n: &mut self.sent,
        };
        // The copies are boxed: a small answer went with its head (nothing left here), and
        // their futures would otherwise add to every connection's task state.
        match w.relay {
            Relay::Length(_) if w.left > 0 => {
                Box::pin(body::copy_length(src, pending, dst, w.left, idle)).await
            }
            Relay::Chunked => Box::pin(body::copy_chunked(src, pending, dst, idle)).await,
            Relay::Dechunk => Box::pin(body::copy_chunked_decoded(src, pending, dst, idle)).await,
            Relay::UntilClose { rechunk } => {
                Box::pin(body::copy_until_close(
                    src, pending, dst, idle, rechunk, out,
                ))
                .await
            }
            Relay::Length(_) | Relay::None => Ok(()),
        }
    }

    async fn error(
        &mut self,
        kind: ErrorKind,
        message: &str,
        rid: &[u8],
        close: bool,
    ) -> io::Result<()> {
        let rid = String::from_utf8_lossy(rid);
        let r = error::response(kind, message, &rid, self.gateway, close, self.is_head);
        self.write(&r, ERROR_WRITE).await
    }

    fn bytes_out(&self) -> u64 {
        self.sent
    }
}

/// A request body read from an HTTP/1.x client: `pending` holds what was read past the head,
/// `r` gives the rest. When the request may be retried, the pieces passed on are kept
/// (`replay`), so a retry sends the same body.
pub(crate) struct H1Body<'a, R> {
    pub r: R,
    pub pending: &'a mut BytesMut,
    pub body: Body,
    /// Content-Length bytes not yet taken from the client.
    pub left: u64,
    pub idle: Duration,
    /// Body bytes passed on so far (the access log's `bytes_in`, with the head).
    pub taken: u64,
    /// What chunked bodies and kept ones carry from one try to the next; boxed, and only for
    /// them, so that the common request (no body, or a length not kept) carries none of it.
    more: Option<Box<Resume>>,
}

/// A body's state across tries.
struct Resume {
    /// Where a chunked body stands.
    dec: Decoder,
    kept: Kept,
}

impl Resume {
    fn new() -> Box<Self> {
        Box::new(Resume {
            dec: Decoder::pause_at_trailers(),
            kept: Kept::default(),
        })
    }
}

impl<'a, R> H1Body<'a, R> {
    pub fn new(r: R, pending: &'a mut BytesMut, body: Body, idle: Duration) -> Self {
        H1Body {
            r,
            pending,
            body,
            left: match body {
                Body::Length(n) => n,
                _ => 0,
            },
            idle,
            taken: 0,
            more: (body == Body::Chunked).then(Resume::new),
        }
    }
}

impl<'a> H1Body<'a, tokio::io::Empty> {
    /// A request without a body; nothing is ever read for it.
    pub fn none(pending: &'a mut BytesMut, idle: Duration) -> Self {
        H1Body::new(tokio::io::empty(), pending, Body::None, idle)
    }
}

impl<R: AsyncRead + Unpin + AsTcp> RequestBody for H1Body<'_, R> {
    fn has_more(&self) -> bool {
        self.left > 0
            || self.more.as_ref().is_some_and(|m| {
                (self.body == Body::Chunked && !m.dec.is_done()) || m.kept.pending_replay()
            })
    }

    fn coalesce(&mut self, out: &mut Vec<u8>) {
        if self.left == 0 {
            return;
        }
        if let Some(m) = self.more.as_deref_mut() {
            if m.kept.pending_replay() {
                // The kept pieces go first, from `send_to`.
                return;
            }
            let k = (self.pending.len() as u64).min(self.left) as usize;
            if m.kept.on() && k > 0 && k <= COALESCE {
                out.extend_from_slice(&m.kept.take(self.pending, k));
                self.left -= k as u64;
                self.taken += k as u64;
                return;
            }
        }
        let before = self.left;
        coalesce(out, self.pending, &mut self.left);
        self.taken += before - self.left;
    }

    fn bytes_in(&self) -> u64 {
        self.taken
    }

    async fn send_to<W: AsyncWrite + Unpin + AsTcp>(
        &mut self,
        dst: &mut W,
    ) -> Result<(), CopyError> {
        let mut more = self.more.as_deref_mut();
        if let Some(m) = more.as_deref_mut() {
            // A retry: what the last try passed on goes again first, piece by piece as it went.
            while let Some(b) = m.kept.next_replay() {
                write_all(dst, &b, self.idle)
                    .await
                    .map_err(CopyError::Sink)?;
                m.kept.sent();
            }
            m.kept.replayed();
        }
        let dst = &mut Counted {
            w: dst,
            n: &mut self.taken,
        };
        let (src, pending, idle) = (&mut self.r, &mut *self.pending, self.idle);
        match (self.body, more) {
            (Body::Length(_), more) if self.left > 0 => {
                let kept = more.map(|m| &mut m.kept).filter(|k| k.on());
                // Boxed like the answer's copies (see `H1Out::body`).
                Box::pin(body::copy_length_kept(
                    src,
                    pending,
                    dst,
                    &mut self.left,
                    idle,
                    kept,
                ))
                .await
            }
            (Body::Chunked, Some(m)) if !m.dec.is_done() => {
                let kept = m.kept.on().then_some(&mut m.kept);
                Box::pin(body::copy_chunked_kept(
                    src, pending, dst, &mut m.dec, idle, kept,
                ))
                .await
            }
            _ => Ok(()),
        }
    }

    fn keep(&mut self, limit: u64) {
        let known = match self.body {
            Body::None => return,
            Body::Length(n) => Some(n),
            _ => None,
        };
        self.more
            .get_or_insert_with(Resume::new)
            .kept
            .start(limit, known);
    }

    fn replayable(&self) -> bool {
        match &self.more {
            None => self.taken == 0,
            Some(m) => m.kept.whole(self.taken),
        }
    }

    fn rewind(&mut self) {
        if let Some(m) = self.more.as_deref_mut() {
            m.kept.rewind();
        }
    }
}
