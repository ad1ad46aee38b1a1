//! Wiring: from a validated config to running listeners, and the control-plane reactions to
//! signals (SIGHUP reload, SIGTERM/SIGINT drain). No request handling lives here.
use crate::config::{self, Config};
use crate::control::Control;
use crate::proxy::{listener, session};
use crate::registry::store::{etcd::EtcdStore, file::FileStore, Store};
use crate::routing::build::build;
use crate::state::Shared;
use crate::upstream::set::UpstreamSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// A started switchyard: its shared state and the addresses it actually listens on.
pub struct Running {
    pub shared: Arc<Shared>,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTPS listener, with `[tls]`.
    pub https_addr: Option<SocketAddr>,
    /// The data listeners' accept loops (one per worker and address).
    data: Vec<tokio::task::JoinHandle<()>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the listeners and starts serving `cfg`, everything on the current runtime.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
    start_on(cfg, &[]).await
}

/// [`start`] with per-core workers: the current runtime is worker 0 (and the control plane and
/// the admin listener); each of `extra` accepts on its own SO_REUSEPORT sockets for the HTTP
/// and HTTPS listeners (`[[tcp]]` ones, bound again on reloads, take theirs from
/// `workers::extra`).
pub async fn start_on(cfg: Config, extra: &[Handle]) -> std::io::Result<Running> {
    crate::fdlimit::raise(cfg.server.max_connections);
    let upstreams = UpstreamSet::default();
    // The file store is read before serving; etcd is loaded by the sync loop, and until then
    // the table is not ready (/ready 503, data plane 503 not_ready).
    let (store, etcd, services): (Arc<dyn Store>, _, _) = match &cfg.store {
        config::Store::File { path } => {
            let s = FileStore::new(path.clone());
            let services = s.load_sync();
            if !services.is_empty() {
                log::info!(
                    "loaded {} registered service(s) from the file store",
                    services.len()
                );
            }
            (Arc::new(s), None, services)
        }
        config::Store::Etcd {
            endpoints,
            prefix,
            full_refresh_interval,
        } => {
            let s = Arc::new(EtcdStore::new(endpoints.clone(), prefix.clone()));
            (s.clone(), Some((s, *full_refresh_interval)), vec![])
        }
    };
    let control = Control::new(services, Arc::new(cfg.clone()));
    let mut table = build(&cfg, &control.services, &upstreams);
    table.ready = etcd.is_none();
    let shared = Shared::new(table, control, store, etcd.is_none(), upstreams);
    let dp = shared.dp.clone();
    crate::observe::access_log::apply(&dp.access_log, &cfg.server)?;
    let acme_etcd = etcd.as_ref().map(|(s, _)| s.clone());
    if let Some((s, every)) = etcd {
        tokio::spawn(crate::fleet::run(shared.clone(), s, every));
    }
    // With per-core workers every worker gets its own SO_REUSEPORT socket on each data
    // address; the first bind picks the port when the config says 0.
    let reuse = !extra.is_empty();
    let http = listener::resolve(&cfg.server.listen)
        .and_then(|sa| bind_each(sa, reuse, extra.len()))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", cfg.server.listen),
            )
        })?;
    let admin = listener::bind(&cfg.admin_listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} (admin): {e}", cfg.admin_listen),
        )
    })?;
    let http_addr = http[0].local_addr()?;
    let admin_addr = admin.local_addr()?;
    dp.tls.apply(cfg.tls.as_ref());
    let https = match &cfg.tls {
        None => None,
        Some(t) => Some(
            listener::resolve(&t.listen)
                .and_then(|sa| bind_each(sa, reuse, extra.len()))
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on {} (tls): {e}", t.listen),
                    )
                })?,
        ),
    };
    let https_addr = https.as_ref().map(|l| l[0].local_addr()).transpose()?;
    if let Some(a) = https_addr {
        dp.tls.set_https_port(a.port());
    }
    // One budget of `max_connections` per listen address, whichever worker accepts.
    let mut data = Vec::new();
    let permits = Arc::new(Semaphore::new(cfg.server.max_connections));
    for (i, l) in http.into_iter().enumerate() {
        data.push(spawn_accept(
            i.checked_sub(1).map(|w| &extra[w]),
            dp.clone(),
            l,
            permits.clone(),
            session::serve_tcp,
        ));
    }
    if let Some(socks) = https {
        let permits = Arc::new(Semaphore::new(cfg.server.max_connections));
        for (i, l) in socks.into_iter().enumerate() {
            data.push(spawn_accept(
                i.checked_sub(1).map(|w| &extra[w]),
                dp.clone(),
                l,
                permits.clone(),
                crate::tls::serve,
            ));
        }
    }
    let tasks = vec![tokio::spawn(crate::admin::listener::accept_loop(
        shared.clone(),
        admin,
    ))];
    if let Some(acme) = cfg.tls.as_ref().and_then(|t| t.acme.clone()) {
        tokio::spawn(crate::tls::acme::start(
            shared.clone(),
            acme,
            cfg.store.clone(),
            acme_etcd,
        ));
    }
    crate::health::checker::spawn_fresh(&shared, &cfg.gateway);
    log::info!("http listener on {http_addr}");
    if let Some(a) = https_addr {
        log::info!("https listener on {a}");
    }
    log::info!("admin listener on {admin_addr}");
    shared.l4.start(&shared, &cfg)?;
    {
        use crate::registry::self_target::Listener;
        let mut bound = vec![
            Listener {
                role: "data",
                addr: http_addr,
            },
            Listener {
                role: "admin",
                addr: admin_addr,
            },
        ];
        bound.extend(https_addr.map(|addr| Listener {
            role: "https",
            addr,
        }));
        *shared.bound.lock().unwrap_or_else(|p| p.into_inner()) = bound;
    }
    crate::control::publish_own_listeners(&shared);
    Ok(Running {
        shared,
        http_addr,
        admin_addr,
        https_addr,
        data,
        _tasks: tasks,
    })
}

/// `1 + extra` listening sockets on `sa` (one, without SO_REUSEPORT, when `reuse` is off).
fn bind_each(
    sa: SocketAddr,
    reuse: bool,
    extra: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = listener::bind_std(sa, reuse)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 0..extra {
        all.push(listener::bind_std(bound, true)?);
    }
    Ok(all)
}

/// Runs a data listener's accept loop on `worker` (the current runtime when None); the socket
/// is registered there, so its connections live on that worker's event loop.
fn spawn_accept<F, Fut>(
    worker: Option<&Handle>,
    dp: Arc<crate::state::DataPlane>,
    l: std::net::TcpListener,
    permits: Arc<Semaphore>,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<crate::state::DataPlane>, tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = async move {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => listener::accept_loop(dp, l, permits, true, serve).await,
            Err(e) => log::error!("cannot register a listening socket: {e}"),
        }
    };
    match worker {
        Some(h) => h.spawn(run),
        None => tokio::spawn(run),
    }
}

impl Running {
    /// Stops accepting, lets open connections finish up to `drain`, then returns. Idle
    /// keep-alive connections close at once, busy ones after their current response; L4
    /// connections and tunnels have no request boundary, so they get the whole `drain`.
    pub async fn drain(self, drain: Duration) {
        // The data and L4 listeners stop (their accept loops watch the drain signal); the
        // admin one keeps answering /ready (503).
        for t in &self.data {
            t.abort();
        }
        let left = self.shared.drain(drain).await;
        if left > 0 {
            log::warn!("drain timeout: closing {left} connection(s) still open");
        }
    }
}

/// Runs until SIGTERM/SIGINT; SIGHUP reloads `path`. `extra`: the per-core workers beyond
/// this runtime ([`start_on`]).
pub async fn run(cfg: Config, path: Option<PathBuf>, extra: &[Handle]) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = start_on(cfg, extra).await?;
    loop {
        tokio::select! {
            _ = hup.recv() => match &path {
                Some(p) => {
                    // Log rotation: the file was moved away; the next line opens it anew.
                    if let Some(l) = running.shared.dp.access_log.load().as_deref() {
                        l.reopen();
                    }
                    crate::control::reload(&running.shared, p).await;
                }
                None => {
                    if let Some(l) = running.shared.dp.access_log.load().as_deref() {
                        l.reopen();
                    }
                    log::info!("SIGHUP: access log reopened; no config file to reload");
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let drain = running.shared.dp.table.load().server.drain_timeout;
    log::info!("draining (up to {drain:?})");
    running.drain(drain).await;
    log::info!("stopped");
    Ok(())
}
