//! splice(2) between two plain TCP sockets through a pipe, for bulk transfers: the bytes stay
//! in the kernel instead of being read into a user-space buffer and written out again. A
//! caller copies first and switches here once a direction shows it is moving a lot (a read
//! that filled the whole buffer), as HAProxy's `splice-auto` does; short exchanges never pay
//! for the pipe. Where no pipe can be had, or the kernel refuses the sockets, the caller goes
//! on with its copy loop.
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The socket under a half, where there is a plain one to splice from or to.
pub trait AsTcp {
    fn tcp(&self) -> Option<&TcpStream> {
        None
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

impl<T> AsTcp for tokio::io::ReadHalf<T> {}
impl<T> AsTcp for tokio::io::WriteHalf<T> {}

/// How a [`pump`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// `from` reached EOF and everything before it was written to `to`.
    Eof,
    /// The kernel cannot splice these sockets; nothing was moved, copy instead.
    Unsupported,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// Moves bytes `from` → pipe → `to` until `from` reaches EOF, calling `moved(n)` for every
/// `n` bytes written to `to`. The caller shuts down `to`'s write half afterwards, as the copy
/// loop does, so half-closes pass through unchanged.
pub async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    mut moved: impl FnMut(usize),
) -> io::Result<Pumped> {
    let mut first = true;
    loop {
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pipe.w, None, CHUNK, FLAGS).map_err(io::Error::from)
            })
            .await;
        let n = match n {
            Ok(0) => return Ok(Pumped::Eof),
            Ok(n) => n,
            Err(e) if first && e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
                return Ok(Pumped::Unsupported)
            }
            Err(e) => return Err(e),
        };
        first = false;
        let mut left = n;
        while left > 0 {
            let k = to
                .async_io(Interest::WRITABLE, || {
                    splice(&pipe.r, None, to, None, left, FLAGS).map_err(io::Error::from)
                })
                .await?;
            if k == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= k;
            moved(k);
        }
    }
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
        let r = pump(&src_r, &dst_w, &pipe, |n| total += n).await.unwrap();
        assert_eq!(r, Pumped::Eof);
        assert_eq!(total, data.len());
        drop(dst_w);
        writer.await.unwrap();
        assert!(reader.await.unwrap() == data, "bytes differ");
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
