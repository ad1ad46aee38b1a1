//! HTTP/1.x towards the client: [`H1Out`] writes answers (interim, tunnel, final head, body,
//! errors) framed for the client's version, and [`H1Body`] streams a request body read from the
//! client socket. These are the only protocol-specific pieces the phases after `read` touch.
use super::body::{self, CopyError};
use super::counted::Counted;
use super::downstream::{Added, Downstream, RequestBody, Written};
use super::io::write_all;
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

impl<W: AsyncWrite + Unpin> H1Out<'_, W> {
    async fn write(&mut self, b: &[u8], timeout: Duration) -> io::Result<()> {
        write_all(&mut self.w, b, timeout).await?;
        self.sent += b.len() as u64;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> Downstream for H1Out<'_, W> {
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

    async fn body<R: AsyncRead + Unpin>(
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
/// `r` gives the rest.
pub(crate) struct H1Body<'a, R> {
    pub r: R,
    pub pending: &'a mut BytesMut,
    pub body: Body,
    /// Content-Length bytes not yet sent.
    pub left: u64,
    pub idle: Duration,
    /// Body bytes passed on so far (the access log's `bytes_in`, with the head).
    pub taken: u64,
}

impl<'a> H1Body<'a, tokio::io::Empty> {
    /// A request without a body; nothing is ever read for it.
    pub fn none(pending: &'a mut BytesMut, idle: Duration) -> Self {
        H1Body {
            r: tokio::io::empty(),
            pending,
            body: Body::None,
            left: 0,
            idle,
            taken: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> RequestBody for H1Body<'_, R> {
    fn has_more(&self) -> bool {
        self.left > 0 || self.body == Body::Chunked
    }

    fn coalesce(&mut self, out: &mut Vec<u8>) {
        let before = self.left;
        coalesce(out, self.pending, &mut self.left);
        self.taken += before - self.left;
    }

    fn bytes_in(&self) -> u64 {
        self.taken
    }

    async fn send_to<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> Result<(), CopyError> {
        match self.body {
            Body::Length(_) if self.left > 0 => {
                let n = std::mem::take(&mut self.left);
                let dst = &mut Counted {
                    w: dst,
                    n: &mut self.taken,
                };
                // Boxed like the answer's copies (see `H1Out::body`).
                Box::pin(body::copy_length(
                    &mut self.r,
                    self.pending,
                    dst,
                    n,
                    self.idle,
                ))
                .await
            }
            Body::Chunked => {
                let dst = &mut Counted {
                    w: dst,
                    n: &mut self.taken,
                };
                Box::pin(body::copy_chunked(
                    &mut self.r,
                    self.pending,
                    dst,
                    self.idle,
                ))
                .await
            }
            _ => Ok(()),
        }
    }
}
