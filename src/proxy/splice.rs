//! splice(2) between two plain TCP sockets through a pipe, for bulk transfers: the bytes stay
//! in the kernel instead of being read into a user-space buffer and written out again. A
//! caller copies first and switches here once a direction shows it is moving a lot (L4: a
//! read that filled the whole buffer; an HTTP Content-Length body: more than a buffer left
//! once what was read with the head is out), as HAProxy's `splice-auto` does; short exchanges
//! never pay for the pipe. Where no pipe can be had, or the kernel refuses the sockets, the
//! caller goes on with its copy loop.
use super::deadline::{Timer, Wait};
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes asked of one splice into the pipe: its default capacity (16 pages), so that one
/// splice in is drained by (usually) one splice out.
const CHUNK: usize = 64 * 1024;

/// Pipes open at once, process-wide. Each costs two descriptors that the fd limit
/// (2 per connection + 512, see `fdlimit`) does not count per connection, so a flood of bulk
/// connections must not turn them into accept failures; past this, transfers copy (HAProxy
/// bounds them too, `maxpipes`).
const MAX_PIPES: usize = 128;
static PIPES: AtomicUsize = AtomicUsize::new(0);

/// HTTP body bytes moved by splice(2), process-wide (`switchyard_body_spliced_bytes_total`).
static BODY_SPLICED: AtomicU64 = AtomicU64::new(0);

/// HTTP body bytes spliced so far, for `/metrics`.
pub fn body_spliced_total() -> u64 {
    BODY_SPLICED.load(Ordering::Relaxed)
}

/// Counts `n` HTTP body bytes spliced.
pub(crate) fn count_body(n: usize) {
    BODY_SPLICED.fetch_add(n as u64, Ordering::Relaxed);
    #[cfg(test)]
    SPLICED_HERE.with(|c| c.set(c.get() + n as u64));
}

#[cfg(test)]
thread_local! {
    /// [`count_body`] on this thread only: unit tests run in parallel, the global counter
    /// sees them all.
    pub static SPLICED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Takes one of `cap` slots counted in `used`, or none when all are taken.
fn take_slot(used: &AtomicUsize, cap: usize) -> bool {
    used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < cap).then_some(n + 1)
    })
    .is_ok()
}

/// A non-blocking pipe; bytes spliced into it are always drained before the next splice in.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
thread_local! {
    /// Tests make pipe creation fail, as it does when the process is out of descriptors.
    pub static FAIL_PIPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        #[cfg(test)]
        if FAIL_PIPE.with(|f| f.get()) {
            return Err(io::Error::from_raw_os_error(libc_emfile()));
        }
        if !take_slot(&PIPES, MAX_PIPES) {
            return Err(io::Error::from_raw_os_error(
                nix::errno::Errno::EMFILE as i32,
            ));
        }
        match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
            Ok((r, w)) => Ok(Pipe { r, w }),
            Err(e) => {
                PIPES.fetch_sub(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
fn libc_emfile() -> i32 {
    nix::errno::Errno::EMFILE as i32
}

/// The socket under a stream or a half, where there is a plain one to splice from or to: TLS
/// streams, HTTP/2 streams and in-memory ones have none and keep the copy loop.
pub trait AsTcp {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }

    /// The socket under a writer, with the byte counter its writes add to when it counts
    /// them ([`Counted`](super::counted::Counted)): bytes spliced to it are added there, so
    /// that the access log and the byte metrics see them as if they had been written.
    fn tcp_sink(&mut self) -> Option<(&TcpStream, Option<&mut u64>)> {
        Self::tcp(self).map(|t| (t, None))
    }

    /// Drops a plain write half without its shutdown(2): the close that follows sends the
    /// same FIN. Other halves come back (a TLS stream must send its close_notify).
    fn drop_quietly(self) -> Result<(), Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

impl<T: AsTcp + ?Sized> AsTcp for &mut T {
    fn tcp(&self) -> Option<&TcpStream> {
        (**self).tcp()
    }

    fn tcp_sink(&mut self) -> Option<(&TcpStream, Option<&mut u64>)> {
        (**self).tcp_sink()
    }
}

impl AsTcp for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl AsTcp for OwnedReadHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl AsTcp for OwnedWriteHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }

    fn drop_quietly(self) -> Result<(), Self> {
        self.forget();
        Ok(())
    }
}

impl AsTcp for tokio::net::tcp::ReadHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl AsTcp for tokio::net::tcp::WriteHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<T> AsTcp for tokio::io::ReadHalf<T> {}
impl<T> AsTcp for tokio::io::WriteHalf<T> {}
impl AsTcp for tokio::io::Empty {}
impl AsTcp for tokio::io::Sink {}
impl AsTcp for tokio::io::DuplexStream {}

/// How a [`pump`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// `len` bytes were moved.
    Done,
    /// `from` reached EOF (before `len` bytes) and everything before it was written to `to`.
    Eof,
    /// The kernel cannot splice these sockets; nothing was moved, copy instead.
    Unsupported,
}

/// Which side of a [`pump`] failed, or stalled past its idle timeout (`TimedOut`).
#[derive(Debug)]
pub enum PumpError {
    From(io::Error),
    To(io::Error),
}

impl From<PumpError> for io::Error {
    fn from(e: PumpError) -> io::Error {
        match e {
            PumpError::From(e) | PumpError::To(e) => e,
        }
    }
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// Waits for `f`, for at most `idle` when there is one. The timer is the pump's own, made the
/// first time a wait blocks, and re-armed only when it fires (`deadline::Timer`).
async fn within<T>(
    timer: &mut Timer,
    idle: Option<Duration>,
    f: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match idle {
        None => f.await,
        Some(idle) => {
            let at = tokio::time::Instant::now() + idle;
            match timer.until(at, f).await {
                Some(r) => r,
                None => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

/// Moves bytes `from` → pipe → `to` until `len` bytes are moved or `from` reaches EOF,
/// calling `moved(n)` for every `n` bytes written to `to`. Never reads past `len`: what
/// follows (the next request on a keep-alive connection) stays in the socket. Each wait for
/// `from` to turn readable or `to` writable lasts at most `idle` (the copy loop's timeout per
/// read and per write). The caller shuts down `to`'s write half afterwards where the copy
/// loop would, so half-closes pass through unchanged.
pub async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: u64,
    idle: Option<Duration>,
    mut moved: impl FnMut(usize),
) -> Result<Pumped, PumpError> {
    let mut timer = Timer::default();
    let mut left_total = len;
    let mut first = true;
    while left_total > 0 {
        let ask = left_total.min(CHUNK as u64) as usize;
        let splice_in = from.async_io(Interest::READABLE, || {
            splice(from, None, &pipe.w, None, ask, FLAGS).map_err(io::Error::from)
        });
        let n = match within(&mut timer, idle, splice_in).await {
            Ok(0) => return Ok(Pumped::Eof),
            Ok(n) => n,
            Err(e) if first && e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
                return Ok(Pumped::Unsupported)
            }
            Err(e) => return Err(PumpError::From(e)),
        };
        first = false;
        let mut left = n;
        while left > 0 {
            let splice_out = to.async_io(Interest::WRITABLE, || {
                splice(&pipe.r, None, to, None, left, FLAGS).map_err(io::Error::from)
            });
            let k = within(&mut timer, idle, splice_out)
                .await
                .map_err(PumpError::To)?;
            if k == 0 {
                return Err(PumpError::To(io::ErrorKind::WriteZero.into()));
            }
            left -= k;
            moved(k);
        }
        left_total -= n as u64;
    }
    Ok(Pumped::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn pump_moves_every_byte_in_order_and_stops_at_eof() {
        // src_w -> src_r ==pump==> dst_w -> dst_r
        let (mut src_w, src_r) = pair().await;
        let (dst_w, mut dst_r) = pair().await;
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            src_w.write_all(&sent).await.unwrap();
            src_w.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            dst_r.read_to_end(&mut got).await.unwrap();
            got
        });
        let pipe = Pipe::new().unwrap();
        let mut total = 0;
        let r = pump(&src_r, &dst_w, &pipe, u64::MAX, None, |n| total += n)
            .await
            .unwrap();
        assert_eq!(r, Pumped::Eof);
        assert_eq!(total, data.len());
        drop(dst_w);
        writer.await.unwrap();
        assert!(reader.await.unwrap() == data, "bytes differ");
    }

    #[tokio::test]
    async fn a_bounded_pump_stops_at_len_and_leaves_what_follows_in_the_socket() {
        let (mut src_w, src_r) = pair().await;
        let (dst_w, mut dst_r) = pair().await;
        let len = 200_000u64;
        let mut sent: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        sent.extend_from_slice(b"NEXT REQUEST");
        src_w.write_all(&sent).await.unwrap();
        let pipe = Pipe::new().unwrap();
        let mut total = 0;
        let idle = Some(std::time::Duration::from_secs(5));
        let r = pump(&src_r, &dst_w, &pipe, len, idle, |n| total += n)
            .await
            .unwrap();
        assert_eq!((r, total as u64), (Pumped::Done, len));
        let mut got = vec![0u8; len as usize];
        dst_r.read_exact(&mut got).await.unwrap();
        assert!(got[..] == sent[..len as usize], "bytes differ");
        let mut rest = [0u8; 12];
        let mut src_r = src_r;
        src_r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"NEXT REQUEST");
    }

    #[tokio::test]
    async fn a_pump_whose_source_stalls_ends_on_its_side_after_idle() {
        let (mut src_w, src_r) = pair().await;
        let (dst_w, _dst_r) = pair().await;
        src_w.write_all(&[7u8; 1000]).await.unwrap();
        let pipe = Pipe::new().unwrap();
        let started = tokio::time::Instant::now();
        let idle = Some(std::time::Duration::from_millis(200));
        let mut total = 0;
        let r = pump(&src_r, &dst_w, &pipe, 1 << 20, idle, |n| total += n);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), r)
            .await
            .expect("no idle timeout");
        match r {
            Err(PumpError::From(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        assert_eq!(total, 1000);
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(200) && took.as_secs() < 5,
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_pump_into_a_closed_peer_fails_on_the_sink_side() {
        let (mut src_w, src_r) = pair().await;
        let (dst_w, dst_r) = pair().await;
        drop(dst_r);
        let writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            while src_w.write_all(&chunk).await.is_ok() {}
        });
        let pipe = Pipe::new().unwrap();
        let idle = Some(std::time::Duration::from_secs(5));
        let r = pump(&src_r, &dst_w, &pipe, 64 << 20, idle, |_| {}).await;
        assert!(matches!(r, Err(PumpError::To(_))), "{r:?}");
        drop(src_r);
        writer.await.unwrap();
    }

    #[test]
    fn pipes_are_bounded_and_slots_come_back() {
        let used = AtomicUsize::new(0);
        assert!((0..3).all(|_| take_slot(&used, 3)));
        assert!(!take_slot(&used, 3), "a fourth slot past the cap");
        assert_eq!(used.load(Ordering::Relaxed), 3);
        used.fetch_sub(1, Ordering::Relaxed);
        assert!(take_slot(&used, 3));
    }

    #[test]
    fn failing_pipe_is_an_error_not_a_panic() {
        FAIL_PIPE.with(|f| f.set(true));
        assert!(Pipe::new().is_err());
        FAIL_PIPE.with(|f| f.set(false));
        assert!(Pipe::new().is_ok());
    }
}
