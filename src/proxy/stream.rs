//! TLS byte streams for the proxy: the client side's TLS stream as a session transport, and a
//! backend connection that is plain TCP or TLS, with borrowed halves for the exchange (no lock
//! for plain TCP) and a liveness probe for the idle pool.
use super::splice::AsTcp;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS bytes are not the body's: a TLS client keeps the copy loop.
impl AsTcp for ServerTls {}

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
    /// One stream to an HTTP/2 backend, spoken to in HTTP/1.1 form (`upstream_h2`).
    H2(Box<super::upstream_h2::H2Upstream>),
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
            // One request per stream: never idle, never pooled.
            BackendStream::H2(_) => false,
        }
    }

    /// Whether the backend refused the request without processing it (an HTTP/2 stream
    /// refused or above a GOAWAY's last stream, RFC 9113 §8.7); never for HTTP/1.1.
    pub fn not_processed(&self) -> bool {
        matches!(self, BackendStream::H2(h) if h.not_processed())
    }
}

/// One half of a [`BackendStream`], without a lock for plain TCP (nor for HTTP/2, whose
/// halves are the stream's two directions).
pub enum Half<P, T, H> {
    Plain(P),
    Tls(T),
    H2(H),
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin, H: AsyncRead + Unpin> AsyncRead for Half<P, T, H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_read(cx, buf),
            Half::Tls(t) => Pin::new(t).poll_read(cx, buf),
            Half::H2(h) => Pin::new(h).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin, H: AsyncWrite + Unpin> AsyncWrite
    for Half<P, T, H>
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_write(cx, buf),
            Half::Tls(t) => Pin::new(t).poll_write(cx, buf),
            Half::H2(h) => Pin::new(h).poll_write(cx, buf),
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
            Half::H2(h) => Pin::new(h).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Half::Plain(p) => p.is_write_vectored(),
            Half::Tls(t) => t.is_write_vectored(),
            Half::H2(h) => h.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_flush(cx),
            Half::Tls(t) => Pin::new(t).poll_flush(cx),
            Half::H2(h) => Pin::new(h).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Half::Plain(p) => Pin::new(p).poll_shutdown(cx),
            Half::Tls(t) => Pin::new(t).poll_shutdown(cx),
            Half::H2(h) => Pin::new(h).poll_shutdown(cx),
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
            BackendStream::H2(h) => Pin::new(&mut **h).poll_read(cx, buf),
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
            BackendStream::H2(h) => Pin::new(&mut **h).poll_write(cx, buf),
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
            BackendStream::H2(h) => Pin::new(&mut **h).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(p) => p.is_write_vectored(),
            BackendStream::Tls(t) => t.is_write_vectored(),
            BackendStream::H2(_) => false,
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_flush(cx),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
            BackendStream::H2(h) => Pin::new(&mut **h).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(p) => Pin::new(p).poll_shutdown(cx),
            BackendStream::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
            BackendStream::H2(h) => Pin::new(&mut **h).poll_shutdown(cx),
        }
    }
}

/// A plain half gives its socket (for splicing a body); TLS and HTTP/2 halves none.
impl<P: AsTcp, T, H> AsTcp for Half<P, T, H> {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Half::Plain(p) => p.tcp(),
            _ => None,
        }
    }
}

impl BackendStream {
    /// Borrowed halves, for reading and writing at once within one exchange (no lock for
    /// plain TCP).
    pub fn halves(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + AsTcp + '_,
        impl AsyncWrite + Unpin + Send + AsTcp + '_,
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
            BackendStream::H2(h) => {
                let (r, w) = h.split();
                (Half::H2(r), Half::H2(w))
            }
        }
    }
}
