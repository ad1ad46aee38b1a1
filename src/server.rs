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

/// A started switchyard: its shared state and the addresses it actually listens on.
pub struct Running {
    pub shared: Arc<Shared>,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTPS listener, with `[tls]`.
    pub https_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the listeners and starts serving `cfg`.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
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
    let http = listener::bind(&cfg.server.listen).map_err(|e| {
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
    let http_addr = http.local_addr()?;
    let admin_addr = admin.local_addr()?;
    dp.tls.apply(cfg.tls.as_ref());
    let https = match &cfg.tls {
        None => None,
        Some(t) => Some(listener::bind(&t.listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} (tls): {e}", t.listen),
            )
        })?),
    };
    let https_addr = https.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(a) = https_addr {
        dp.tls.set_https_port(a.port());
    }
    let mut tasks = vec![
        tokio::spawn(listener::accept_loop(
            dp.clone(),
            http,
            cfg.server.max_connections,
            true,
            session::serve_tcp,
        )),
        tokio::spawn(crate::admin::listener::accept_loop(shared.clone(), admin)),
    ];
    if let Some(l) = https {
        tasks.push(tokio::spawn(listener::accept_loop(
            dp.clone(),
            l,
            cfg.server.max_connections,
            true,
            crate::tls::serve,
        )));
    }
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
        tasks,
    })
}

impl Running {
    /// Stops accepting, lets open connections finish up to `drain`, then returns. Idle
    /// keep-alive connections close at once, busy ones after their current response; L4
    /// connections and tunnels have no request boundary, so they get the whole `drain`.
    pub async fn drain(self, drain: Duration) {
        // The data and L4 listeners stop (their accept loops watch the drain signal); the
        // admin one keeps answering /ready (503).
        if let Some(t) = self.tasks.first() {
            t.abort();
        }
        let left = self.shared.drain(drain).await;
        if left > 0 {
            log::warn!("drain timeout: closing {left} connection(s) still open");
        }
    }
}

/// Runs until SIGTERM/SIGINT; SIGHUP reloads `path`.
pub async fn run(cfg: Config, path: Option<PathBuf>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = start(cfg).await?;
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
