//! Socket reads and writes with deadlines, into reusable buffers; the one place that turns
//! timeouts and early EOFs into the errors the connection loop maps to status codes.
use super::deadline::{Fresh, Wait};
use crate::http::head::{self, HeadError, Scan};
use bytes::BytesMut;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bytes requested from the kernel per read.
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub enum ReadHeadError {
    /// EOF before any byte of a head: the peer is done.
    Closed,
    /// EOF after part of a head.
    Truncated,
    Timeout,
    /// Carried for Debug; every reader of the head treats it as the peer being gone.
    Io(#[allow(dead_code)] std::io::Error),
    Head(HeadError),
}

/// Reads more bytes into `buf`; Ok(0) at EOF.
pub async fn read_some<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
) -> std::io::Result<usize> {
    read_some_with(s, buf, deadline, &mut Fresh).await
}

/// [`read_some`] bounded by `wait` (a connection's [`Timer`](super::deadline::Timer)).
pub(crate) async fn read_some_with<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
    wait: &mut impl Wait,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    match wait.until(deadline, s.read_buf(buf)).await {
        Some(r) => r,
        None => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads until `buf` holds a complete head and returns its length. The first byte must come
/// before `first_byte`; the whole head within `whole` after that first byte.
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
    first_byte: Instant,
    whole: Duration,
) -> Result<usize, ReadHeadError> {
    read_head_with(s, buf, max, first_byte, whole, &mut Fresh).await
}

/// `read_head`, asking `partial` about each incomplete head before waiting for more: its
/// error ends the read at once (the admin listener refuses what cannot become a request).
pub async fn read_head_checked<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
    first_byte: Instant,
    whole: Duration,
    partial: impl FnMut(&[u8]) -> Result<(), HeadError>,
) -> Result<usize, ReadHeadError> {
    read_head_inner(s, buf, max, first_byte, whole, &mut Fresh, partial).await
}

/// [`read_head`] bounded by `wait`. The data plane asks nothing of partial heads, so a head
/// that arrives whole costs nothing more.
pub(crate) async fn read_head_with<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
    first_byte: Instant,
    whole: Duration,
    wait: &mut impl Wait,
) -> Result<usize, ReadHeadError> {
    read_head_inner(s, buf, max, first_byte, whole, wait, |_| Ok(())).await
}

async fn read_head_inner<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
    first_byte: Instant,
    whole: Duration,
    wait: &mut impl Wait,
    mut partial: impl FnMut(&[u8]) -> Result<(), HeadError>,
) -> Result<usize, ReadHeadError> {
    let mut scanned = 0;
    // Until the first byte is here, `first_byte`; after it, `whole` from then. The clock is
    // read only when a head needs a second read (nearly every head comes in one).
    let mut deadline = (buf.is_empty()).then_some(first_byte);
    loop {
        if !buf.is_empty() {
            match head::scan(buf, scanned, max).map_err(ReadHeadError::Head)? {
                Scan::Complete(n) => return Ok(n),
                Scan::Partial => scanned = buf.len(),
            }
            partial(buf).map_err(ReadHeadError::Head)?;
        }
        let was_empty = buf.is_empty();
        let at = *deadline.get_or_insert_with(|| Instant::now() + whole);
        match read_some_with(s, buf, at, wait).await {
            Ok(0) if was_empty => return Err(ReadHeadError::Closed),
            Ok(0) => return Err(ReadHeadError::Truncated),
            Ok(_) => {
                if was_empty {
                    deadline = None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(ReadHeadError::Timeout)
            }
            Err(e) => return Err(ReadHeadError::Io(e)),
        }
    }
}

/// `write_all` with a deadline.
pub async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
    idle: Duration,
) -> std::io::Result<()> {
    // Nearly every write fits the socket buffer at once: try that first, so that the common
    // case reads no clock and builds no timer; only a write that would block gets a deadline.
    let mut done = 0;
    let blocked = std::future::poll_fn(|cx| {
        while done < data.len() {
            match Pin::new(&mut *s).poll_write(cx, &data[done..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Ready(Ok(true)),
            }
        }
        Poll::Ready(Ok(false))
    })
    .await?;
    if !blocked {
        return Ok(());
    }
    // Boxed: this future holds a timer, and would otherwise sit in the state of every write
    // (and so of every connection's task) for a path few writes take.
    match Box::pin(tokio::time::timeout(idle, s.write_all(&data[done..]))).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
