//! Body streaming between two sockets: Content-Length, chunked (validated and passed through,
//! or decoded for HTTP/1.0 clients) and close-delimited. Bodies are never buffered whole.
use super::io::{read_some, write_all};
use crate::http::chunked::Decoder;
use bytes::{Buf, BytesMut};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

#[derive(Debug)]
pub enum CopyError {
    /// The sending side closed before the body was complete.
    SourceEof,
    /// The sending side failed or stalled past the idle timeout.
    // The io::Error is carried for Debug and for callers that want to report it; the phases
    // today only need the side (the lint saw it once `proxy` stopped being public).
    Source(#[allow(dead_code)] std::io::Error),
    /// The receiving side failed or stalled.
    Sink(#[allow(dead_code)] std::io::Error),
    /// The chunked framing was invalid.
    Invalid(&'static str),
}

async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<(), CopyError> {
    match read_some(src, buf, Instant::now() + idle).await {
        Ok(0) => Err(CopyError::SourceEof),
        Ok(_) => Ok(()),
        Err(e) => Err(CopyError::Source(e)),
    }
}

/// Copies exactly `n` bytes: first those already in `pending`, then from `src`.
pub async fn copy_length<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    mut n: u64,
    idle: Duration,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while n > 0 {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let k = (pending.len() as u64).min(n) as usize;
        write_all(dst, &pending[..k], idle)
            .await
            .map_err(CopyError::Sink)?;
        pending.advance(k);
        n -= k as u64;
    }
    Ok(())
}

/// Copies a chunked body as it came, after checking every byte of its framing, and stops
/// exactly at its end (what follows stays in `pending`). The trailer section is held whole
/// (at most 16 KiB, the decoder's limit) and goes on without the fields RFC 9110 §6.5.1 keeps
/// out of trailers (`http::trailers`).
pub async fn copy_chunked<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut dec = Decoder::pause_at_trailers();
    loop {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let (k, done) = dec.validate(pending).map_err(|e| CopyError::Invalid(e.0))?;
        write_all(dst, &pending[..k], idle)
            .await
            .map_err(CopyError::Sink)?;
        pending.advance(k);
        if done {
            return Ok(());
        }
        if dec.in_trailers() {
            break;
        }
    }
    let mut seen = 0;
    loop {
        let (k, done) = dec
            .validate(&pending[seen..])
            .map_err(|e| CopyError::Invalid(e.0))?;
        seen += k;
        if done {
            break;
        }
        fill(src, pending, idle).await?;
    }
    let mut kept = Vec::with_capacity(seen);
    crate::http::trailers::filter(&pending[..seen], &mut kept);
    write_all(dst, &kept, idle).await.map_err(CopyError::Sink)?;
    pending.advance(seen);
    Ok(())
}

/// Decodes a chunked body and writes only its payload (to an HTTP/1.0 client, which then
/// sees a close-delimited body).
pub async fn copy_chunked_decoded<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut dec = Decoder::new();
    loop {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let f = dec.feed(pending).map_err(|e| CopyError::Invalid(e.0))?;
        if !f.data.is_empty() {
            write_all(dst, &pending[f.data.clone()], idle)
                .await
                .map_err(CopyError::Sink)?;
        }
        pending.advance(f.consumed);
        if f.done {
            return Ok(());
        }
    }
}

/// Copies until `src` closes. With `rechunk`, every piece goes out as a chunk and the body
/// ends with the last chunk, so an HTTP/1.1 client can keep its connection.
pub async fn copy_until_close<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    idle: Duration,
    rechunk: bool,
    scratch: &mut Vec<u8>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if pending.is_empty() {
            match fill(src, pending, idle).await {
                Err(CopyError::SourceEof) => break,
                other => other?,
            }
        }
        if rechunk {
            scratch.clear();
            let _ = write!(scratch, "{:x}\r\n", pending.len());
            scratch.extend_from_slice(pending);
            scratch.extend_from_slice(b"\r\n");
            write_all(dst, scratch, idle)
                .await
                .map_err(CopyError::Sink)?;
        } else {
            write_all(dst, pending, idle)
                .await
                .map_err(CopyError::Sink)?;
        }
        pending.clear();
    }
    if rechunk {
        write_all(dst, b"0\r\n\r\n", idle)
            .await
            .map_err(CopyError::Sink)?;
    }
    Ok(())
}
