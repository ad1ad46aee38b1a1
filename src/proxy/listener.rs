//! Listening sockets (socket2: reuse-address, a deep backlog, SO_REUSEPORT for per-core
//! workers) and the accept loop, which holds a permit per connection so that beyond
//! `max_connections` new ones wait (one per worker accepted, the rest in the kernel queue).
use crate::config::address::Address;
use crate::state::{ConnGuard, DataPlane};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Binds a listening socket for `addr` (a name is resolved once, here).
pub fn bind(addr: &Address) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(resolve(addr)?, false)?)
}

/// `addr` resolved once: the per-core workers' sockets must all bind the one address the
/// first of them got (a port of 0 is chosen by the first bind).
pub fn resolve(addr: &Address) -> std::io::Result<SocketAddr> {
    (addr.host.as_str(), addr.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))
}

/// A listening socket not yet registered with a runtime (`TcpListener::from_std` must run on
/// the worker that will accept on it). `reuse_port`: one of the per-core workers' sockets on
/// the same address, among which the kernel spreads new connections.
pub fn bind_std(sa: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies it into every
    // child): one setsockopt here instead of one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&sa.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts connections, serving each with `serve`, each holding one of `permits` (shared by
/// the per-core workers' sockets on one address: `max_connections` between them, not each);
/// with `stop_on_drain` it stops when the drain begins (the data port), without it it keeps
/// going (the admin port must still answer `/ready` with 503 while draining).
pub async fn accept_loop<F, Fut>(
    shared: Arc<DataPlane>,
    listener: TcpListener,
    permits: Arc<Semaphore>,
    stop_on_drain: bool,
    serve: F,
) where
    F: Fn(Arc<DataPlane>, tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if crate::fdlimit::is_exhaustion(&e) {
                        crate::fdlimit::count(crate::fdlimit::Site::Accept);
                    }
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drained(&mut shutdown, stop_on_drain) => break,
        };
        // The permit is taken after the accept: a loop waiting for a permit before accepting
        // would hold one that another worker's socket could use, and a later connection there
        // would be served while an earlier one here waits. At the limit, each worker holds
        // one accepted connection unread until a permit frees; the rest wait in the kernel.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = drained(&mut shutdown, stop_on_drain) => break,
            },
        };
        // Only data-port connections count as open: drain waits for them and
        // `switchyard_open_connections` reports them; a scrape must not count itself.
        let guard = match stop_on_drain.then(|| ConnGuard::new(shared.clone())) {
            // The drain began between accept and here and does not wait for this one.
            Some(None) => continue,
            g => g,
        };
        let fut = serve(shared.clone(), stream, peer);
        tokio::spawn(async move {
            fut.await;
            drop(guard);
            drop(permit);
        });
    }
}

/// Resolves once the drain has begun; never, when `enabled` is false.
async fn drained(rx: &mut tokio::sync::watch::Receiver<bool>, enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let _ = rx.wait_for(|v| *v).await;
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let addr = crate::config::address::parse("127.0.0.1:0", true).unwrap();
        let l = super::bind(&addr).unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(
            s.nodelay().unwrap(),
            "the data path relies on this instead of a setsockopt"
        );
        drop(c);
    }
}
