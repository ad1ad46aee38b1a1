//! Body streaming between two sockets: Content-Length, chunked (validated and passed through,
//! or decoded for HTTP/1.0 clients) and close-delimited. Bodies are never buffered whole; a
//! request body that may be retried keeps the pieces it passed on (`replay`). A long
//! Content-Length body between two plain TCP sockets that is not being kept moves by
//! splice(2) once what was read with the head is out (`splice`).
use super::io::{read_some, write_all, READ_CHUNK};
use super::replay::Kept;
use super::splice::{self, AsTcp, Pipe, PumpError, Pumped};
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
    R: AsyncRead + Unpin + AsTcp,
    W: AsyncWrite + Unpin + AsTcp,
{
    let mut n = n;
    copy_length_kept(src, pending, dst, &mut n, idle, None).await
}

/// [`copy_length`] that counts `n` down as bytes are taken from `pending`, and with `kept`
/// keeps them for a replay (see [`pass`]). A body that is not kept and has more than one
/// buffer left once `pending` is out is spliced between plain sockets (the bytes a replay
/// would need never reach user space).
pub(crate) async fn copy_length_kept<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    n: &mut u64,
    idle: Duration,
    mut kept: Option<&mut Kept>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin + AsTcp,
    W: AsyncWrite + Unpin + AsTcp,
{
    let mut may_splice = kept.as_ref().is_none_or(|k| !k.on());
    while *n > 0 {
        if pending.is_empty() {
            if may_splice && *n > READ_CHUNK as u64 {
                may_splice = false;
                if let Some(r) = splice_rest(src, dst, n, idle).await {
                    return r;
                }
            }
            fill(src, pending, idle).await?;
        }
        let k = (pending.len() as u64).min(*n) as usize;
        pass(dst, pending, k, n, idle, kept.as_deref_mut()).await?;
    }
    Ok(())
}

/// Splices the `n` bytes left from `src` to `dst`, counting them off `n` and into `dst`'s
/// counter as they are written. None, with nothing moved: no plain socket on either side, no
/// pipe to be had (EMFILE, or the process-wide budget is spent), or a kernel that refuses
/// these sockets (EINVAL); the caller copies instead. The errors are the copy loop's: EOF
/// before the end, a failure or stall of either side.
async fn splice_rest<R: AsTcp, W: AsTcp>(
    src: &mut R,
    dst: &mut W,
    n: &mut u64,
    idle: Duration,
) -> Option<Result<(), CopyError>> {
    let from = src.tcp()?;
    let (to, mut counter) = dst.tcp_sink()?;
    let pipe = Pipe::new().ok()?;
    let len = *n;
    let pumped = splice::pump(from, to, &pipe, len, Some(idle), |k| {
        *n -= k as u64;
        if let Some(c) = counter.as_deref_mut() {
            *c += k as u64;
        }
        splice::count_body(k);
    })
    .await;
    match pumped {
        Ok(Pumped::Done) => Some(Ok(())),
        Ok(Pumped::Eof) => Some(Err(CopyError::SourceEof)),
        Ok(Pumped::Unsupported) => None,
        Err(PumpError::From(e)) => Some(Err(CopyError::Source(e))),
        Err(PumpError::To(e)) => Some(Err(CopyError::Sink(e))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::counted::Counted;
    use crate::proxy::splice::{FAIL_PIPE, SPLICED_HERE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const IDLE: Duration = Duration::from_secs(5);

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 % 251) as u8).collect()
    }

    fn spliced_here() -> u64 {
        SPLICED_HERE.with(|c| c.get())
    }

    /// Sends `head` bytes already read (as `pending`) and `body` after them on a socket, then
    /// `NEXT`; copies `n` = head + body bytes with `kept`. Returns what arrived, the counter,
    /// the bytes spliced, and what was left in the source socket.
    async fn through(
        pre: usize,
        body: usize,
        kept: Option<&mut Kept>,
    ) -> (Vec<u8>, u64, u64, Vec<u8>, Result<(), CopyError>) {
        let all = data(pre + body);
        let (mut src_w, mut src_r) = pair().await;
        let (mut dst_w, mut dst_r) = pair().await;
        let mut pending = BytesMut::from(&all[..pre]);
        let tail = all[pre..].to_vec();
        let writer = tokio::spawn(async move {
            src_w.write_all(&tail).await.unwrap();
            src_w.write_all(b"NEXT").await.unwrap();
            src_w
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; pre + body];
            dst_r.read_exact(&mut got).await.map(|_| got)
        });
        let before = spliced_here();
        let mut counted = 0;
        let mut n = (pre + body) as u64;
        let r = {
            let mut dst = Counted {
                w: &mut dst_w,
                n: &mut counted,
            };
            copy_length_kept(&mut src_r, &mut pending, &mut dst, &mut n, IDLE, kept).await
        };
        let spliced = spliced_here() - before;
        let _src_w = writer.await.unwrap();
        let got = reader.await.unwrap().unwrap_or_default();
        assert!(got == all, "bytes differ");
        // What follows the body: whatever the copy read past it (nothing, when it stopped at
        // the length), then the socket.
        let mut left = pending.to_vec();
        let mut next = [0u8; 4];
        let k = left.len().min(4);
        src_r.read_exact(&mut next[k..]).await.unwrap();
        left.extend_from_slice(&next[k..]);
        (got, counted, spliced, left, r)
    }

    #[tokio::test]
    async fn a_long_body_is_spliced_after_what_was_read_and_stops_at_its_length() {
        let (pre, body) = (3000, 1024 * 1024 + 11);
        let (_, counted, spliced, next, r) = through(pre, body, None).await;
        r.unwrap();
        assert_eq!(counted, (pre + body) as u64, "every byte counted once");
        assert!(
            spliced > body as u64 - READ_CHUNK as u64,
            "spliced {spliced} of {body}"
        );
        assert_eq!(next, b"NEXT", "the next request stays for the next read");
    }

    #[tokio::test]
    async fn a_body_of_one_buffer_or_a_kept_one_is_copied() {
        let (_, counted, spliced, next, r) = through(0, READ_CHUNK, None).await;
        r.unwrap();
        assert_eq!((counted, spliced), (READ_CHUNK as u64, 0));
        assert_eq!(next, b"NEXT");
        // Kept for a replay: every byte has to pass through user space.
        let mut kept = Kept::default();
        kept.start(8 << 20, Some(2 << 20));
        let (_, counted, spliced, next, r) = through(100, 2 << 20, Some(&mut kept)).await;
        r.unwrap();
        assert_eq!((counted, spliced), ((2 << 20) + 100, 0));
        assert_eq!(kept.len(), (2 << 20) + 100);
        assert_eq!(next, b"NEXT");
    }

    #[tokio::test]
    async fn without_a_pipe_a_long_body_is_copied() {
        FAIL_PIPE.with(|f| f.set(true));
        let (_, counted, spliced, next, r) = through(10, 1 << 20, None).await;
        FAIL_PIPE.with(|f| f.set(false));
        r.unwrap();
        assert_eq!((counted, spliced), ((1 << 20) + 10, 0));
        assert_eq!(next, b"NEXT");
    }

    #[tokio::test]
    async fn a_spliced_body_cut_short_is_a_source_eof_with_what_moved_counted() {
        let (mut src_w, mut src_r) = pair().await;
        let (mut dst_w, mut dst_r) = pair().await;
        let sent = data(300_000);
        let s2 = sent.clone();
        tokio::spawn(async move {
            src_w.write_all(&s2).await.unwrap();
            // Closed here, 1 MiB short.
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            dst_r.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut counted = 0;
        let mut n = 300_000 + (1 << 20);
        let mut pending = BytesMut::new();
        let r = {
            let mut dst = Counted {
                w: &mut dst_w,
                n: &mut counted,
            };
            copy_length_kept(&mut src_r, &mut pending, &mut dst, &mut n, IDLE, None).await
        };
        assert!(matches!(r, Err(CopyError::SourceEof)), "{r:?}");
        assert_eq!((counted, n), (300_000, 1 << 20));
        drop(dst_w);
        assert!(reader.await.unwrap() == sent);
    }

    #[tokio::test]
    async fn a_spliced_body_that_stalls_times_out_on_the_source_side() {
        let (mut src_w, mut src_r) = pair().await;
        let (mut dst_w, _dst_r) = pair().await;
        src_w.write_all(&data(50_000)).await.unwrap();
        let mut pending = BytesMut::new();
        let mut n = 1 << 20;
        let started = tokio::time::Instant::now();
        let idle = Duration::from_millis(300);
        let before = spliced_here();
        let copy = copy_length_kept(&mut src_r, &mut pending, &mut dst_w, &mut n, idle, None);
        let r = tokio::time::timeout(IDLE, copy)
            .await
            .expect("no idle timeout");
        match r {
            Err(CopyError::Source(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        assert_eq!(spliced_here() - before, 50_000, "it was the spliced path");
        assert!(started.elapsed() >= idle && started.elapsed() < IDLE);
        drop(src_w);
    }
}
