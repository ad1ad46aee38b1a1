//! A writer that counts the bytes it passed on: the access log's `bytes_in`/`bytes_out` and
//! the per-rule byte counters, without a second pass over any body. Bytes spliced to its
//! socket are counted there too (`AsTcp::tcp_sink`).
use super::splice::AsTcp;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Passes writes to `w` and adds what was accepted to `n`.
pub(crate) struct Counted<'n, W> {
    pub w: W,
    pub n: &'n mut u64,
}

impl<W: AsTcp> AsTcp for Counted<'_, W> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.w.tcp()
    }

    fn tcp_sink(&mut self) -> Option<(&tokio::net::TcpStream, Option<&mut u64>)> {
        let Counted { w, n } = self;
        W::tcp(w).map(|t| (t, Some(&mut **n)))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.w).poll_write(cx, buf);
        if let Poll::Ready(Ok(k)) = r {
            *this.n += k as u64;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.w).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(k)) = r {
            *this.n += k as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.w.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.w).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.w).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn counts_what_was_written() {
        let mut sink = Vec::new();
        let mut n = 0;
        let mut c = Counted {
            w: &mut sink,
            n: &mut n,
        };
        c.write_all(b"hello").await.unwrap();
        c.write_all(b" world").await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(sink, b"hello world");
    }
}
