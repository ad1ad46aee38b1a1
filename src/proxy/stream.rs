//! The byte streams the proxy moves requests over: a client connection (plain TCP or TLS) and
//! a backend connection (plain TCP or TLS). One small trait gives the connection loop what it
//! needs beyond read/write: borrowed halves for the upload watch, owned halves for tunnels,
//! and a readiness wait that holds no buffer (idle keep-alive connections cost no memory).
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type ReadHalf: AsyncRead + Unpin + Send + 'static;
    type WriteHalf: AsyncWrite + Unpin + Send + 'static;
    /// Owned halves, for a tunnel that pumps both ways at once.
    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf);
    /// Borrowed halves, for reading and writing at once within one exchange.
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + '_,
        impl AsyncWrite + Unpin + Send + '_,
    );
    /// Resolves once a read would make progress (data, EOF or an error).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl Io for TcpStream {
    type ReadHalf = tokio::net::tcp::OwnedReadHalf;
    type WriteHalf = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf) {
        self.into_split()
    }
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + '_,
        impl AsyncWrite + Unpin + Send + '_,
    ) {
        self.split()
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        TcpStream::readable(self)
    }
}

pub type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

impl Io for ServerTls {
    type ReadHalf = tokio::io::ReadHalf<Self>;
    type WriteHalf = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf) {
        tokio::io::split(self)
    }
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + '_,
        impl AsyncWrite + Unpin + Send + '_,
    ) {
        tokio::io::split(self)
    }
    async fn readable(&self) -> io::Result<()> {
        // Plaintext rustls already decrypted (or a close_notify) is there without the socket
        // turning readable again.
        if !self.get_ref().1.wants_read() {
            return Ok(());
        }
        self.get_ref().0.readable().await
    }
}

/// A connection to a backend.
#[derive(Debug)]
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<ClientTls>),
}

impl BackendStream {
    /// Whether an idle pooled connection is still usable: open, and nothing unexpected
    /// waiting on it. Never blocks.
    pub fn still_idle(&mut self) -> bool {
        match self {
            BackendStream::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            BackendStream::Tls(s) => {
                // A poll that must not wait: Pending means open and quiet. TLS 1.3 session
                // tickets that arrived meanwhile are consumed by rustls here, not mistaken for
                // a response.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut probe = [0u8; 1];
                let mut rb = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(&mut **s).poll_read(&mut cx, &mut rb),
                    Poll::Pending
                )
            }
        }
    }
}

/// One half of a [`BackendStream`], without a lock for plain TCP.
pub enum Half<P, T> {
    Plain(P),
    Tls(T),
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for Half<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_read(cx, buf),
            Half::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Half<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_write(cx, buf),
            Half::Tls(t) => Pin::new(t).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_write_vectored(cx, bufs),
            Half::Tls(t) => Pin::new(t).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Half::Plain(p) => p.is_write_vectored(),
            Half::Tls(t) => t.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_flush(cx),
            Half::Tls(t) => Pin::new(t).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_shutdown(cx),
            Half::Tls(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_read(cx, buf),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_write(cx, buf),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_write_vectored(cx, bufs),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(p) => p.is_write_vectored(),
            BackendStream::Tls(t) => t.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_flush(cx),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_shutdown(cx),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }
}

type TlsRead = tokio::io::ReadHalf<Box<ClientTls>>;
type TlsWrite = tokio::io::WriteHalf<Box<ClientTls>>;

impl Io for BackendStream {
    type ReadHalf = Half<tokio::net::tcp::OwnedReadHalf, TlsRead>;
    type WriteHalf = Half<tokio::net::tcp::OwnedWriteHalf, TlsWrite>;
    fn into_halves(self) -> (Self::ReadHalf, Self::WriteHalf) {
        match self {
            BackendStream::Plain(p) => {
                let (r, w) = p.into_split();
                (Half::Plain(r), Half::Plain(w))
            }
            BackendStream::Tls(t) => {
                let (r, w) = tokio::io::split(t);
                (Half::Tls(r), Half::Tls(w))
            }
        }
    }
    fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + '_,
        impl AsyncWrite + Unpin + Send + '_,
    ) {
        match self {
            BackendStream::Plain(p) => {
                let (r, w) = p.split();
                (Half::Plain(r), Half::Plain(w))
            }
            BackendStream::Tls(t) => {
                let (r, w) = tokio::io::split(&mut **t);
                (Half::Tls(r), Half::Tls(w))
            }
        }
    }
    async fn readable(&self) -> io::Result<()> {
        match self {
            BackendStream::Plain(p) => p.readable().await,
            BackendStream::Tls(t) => {
                if !t.get_ref().1.wants_read() {
                    return Ok(());
                }
                t.get_ref().0.readable().await
            }
        }
    }
}
