//! Body streaming between two sockets: Content-Length, chunked (validated and passed through,
//! or decoded for HTTP/1.0 clients) and close-delimited. Bodies are never buffered whole; a
//! request body that may be retried keeps the pieces it passed on (`replay`).
use super::io::{read_some, write_all};
use super::replay::Kept;
use crate::http::chunked::Decoder;
use bytes::{Buf, Bytes, BytesMut};
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
    n: u64,
    idle: Duration,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut n = n;
    copy_length_kept(src, pending, dst, &mut n, idle, None).await
}

/// [`copy_length`] that counts `n` down as bytes are taken from `pending`, and with `kept`
/// keeps them for a replay (see [`pass`]).
pub(crate) async fn copy_length_kept<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    n: &mut u64,
    idle: Duration,
    mut kept: Option<&mut Kept>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while *n > 0 {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let k = (pending.len() as u64).min(*n) as usize;
        pass(dst, pending, k, n, idle, kept.as_deref_mut()).await?;
    }
    Ok(())
}

/// Writes the first `k` bytes of `pending` to `dst`, drops them from `pending` and counts them
/// off `n`. With `kept` (and while it keeps), they are moved out of `pending` and kept before
/// the write starts: a try abandoned mid-write leaves them counted as sent, so a replay sends
/// them again and the client's stream goes on exactly after them.
async fn pass<W: AsyncWrite + Unpin>(
    dst: &mut W,
    pending: &mut BytesMut,
    k: usize,
    n: &mut u64,
    idle: Duration,
    kept: Option<&mut Kept>,
) -> Result<(), CopyError> {
    if k == 0 {
        return Ok(());
    }
    match kept {
        Some(kept) if kept.on() => {
            let b = kept.take(pending, k);
            *n -= k as u64;
            write_all(dst, &b, idle).await.map_err(CopyError::Sink)
        }
        _ => {
            write_all(dst, &pending[..k], idle)
                .await
                .map_err(CopyError::Sink)?;
            pending.advance(k);
            *n -= k as u64;
            Ok(())
        }
    }
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
    copy_chunked_kept(src, pending, dst, &mut dec, idle, None).await
}

/// [`copy_chunked`] from the decoder state `dec` (made by `Decoder::pause_at_trailers`), which
/// always matches the bytes taken from `pending`: with `kept`, a try abandoned at any await
/// can be resumed after a replay of what was kept.
pub(crate) async fn copy_chunked_kept<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    dec: &mut Decoder,
    idle: Duration,
    mut kept: Option<&mut Kept>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while !dec.in_trailers() && !dec.is_done() {
        if pending.is_empty() {
            fill(src, pending, idle).await?;
        }
        let (k, _) = dec.validate(pending).map_err(|e| CopyError::Invalid(e.0))?;
        let mut n = k as u64;
        pass(dst, pending, k, &mut n, idle, kept.as_deref_mut()).await?;
    }
    if dec.is_done() {
        return Ok(());
    }
    // The trailer section is validated on a copy of the decoder and taken only once whole,
    // so that `dec` still stands at its start if this is abandoned meanwhile.
    let mut t = dec.clone();
    let mut seen = 0;
    loop {
        let (k, done) = t
            .validate(&pending[seen..])
            .map_err(|e| CopyError::Invalid(e.0))?;
        seen += k;
        if done {
            break;
        }
        fill(src, pending, idle).await?;
    }
    let mut filtered = Vec::with_capacity(seen);
    crate::http::trailers::filter(&pending[..seen], &mut filtered);
    pending.advance(seen);
    *dec = t;
    let filtered = Bytes::from(filtered);
    if let Some(kept) = kept {
        kept.push(filtered.clone());
    }
    write_all(dst, &filtered, idle)
        .await
        .map_err(CopyError::Sink)
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
