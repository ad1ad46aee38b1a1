//! TLS byte streams for the proxy: the client side's TLS stream as a session transport, and a
//! backend connection that is plain TCP or TLS, with borrowed halves for the exchange (no lock
//! for plain TCP) and a liveness probe for the idle pool.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

impl super::session::ClientStream for ServerTls {
    async fn wait_readable(&self) -> io::Result<()> {
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

impl BackendStream {
    /// Borrowed halves, for reading and writing at once within one exchange (no lock for
    /// plain TCP).
    pub fn halves(
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
}
